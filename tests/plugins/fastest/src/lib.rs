//! Test strategy: routes by the performance monitor's live figures, so tests
//! can tell they reach strategies. Deployments without traffic in the window
//! first (in configured order, to measure them), then by recent p50 latency;
//! unhealthy ones last. Logs what it saw of every candidate.
//!
//! A request tagged `echo` is answered with an error holding every field of
//! every candidate (see [`echo`]), so a test can check that each one
//! crosses the boundary intact.

use std::fmt::Write;

use switchyard_sdk::{Candidate, Metadata, RequestSummary, Strategy, export_strategy, log};

struct Fastest;

impl Strategy for Fastest {
    fn metadata() -> Metadata {
        Metadata::new("fastest", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        if request.tags.iter().any(|t| t == "echo") {
            return Err(echo(request, candidates));
        }
        let mut seen = String::from("fastest saw");
        for c in candidates {
            let r = &c.recent;
            let _ = write!(
                seen,
                " {}: attempts={} p50={} p95={} p99={} ttft50={} success={} rpm={} tps={} overloaded={} failed={} price={}/{}/{};",
                c.deployment,
                r.attempts,
                r.latency_p50_ms,
                r.latency_p95_ms,
                r.latency_p99_ms,
                r.ttft_p50_ms,
                r.success_rate,
                r.requests_per_minute,
                r.output_tokens_per_second,
                r.errors.overloaded,
                r.errors.total(),
                c.input_cost_per_1m,
                c.output_cost_per_1m,
                c.cached_input_cost_per_1m,
            );
        }
        log::info(&seen);
        Ok(order(candidates))
    }
}

export_strategy!(Fastest);

/// The request's fields, then each candidate's, in WIT order: `name=value`
/// separated by spaces, a candidate per line. Floats print as Rust's
/// `Display` does (the shortest text that reads back the same value), so a
/// test can build the same text from what it sent.
fn echo(r: &RequestSummary, candidates: &[Candidate]) -> String {
    let mut out = format!(
        "model={} input={} max={:?} stream={} needs={} priority={:?} tags={}",
        r.model,
        r.input_tokens,
        r.max_output_tokens,
        r.stream,
        r.needs.bits(),
        r.priority,
        r.tags.join(","),
    );
    for c in candidates {
        let (s, e) = (&c.recent, &c.recent.errors);
        let _ = write!(
            out,
            "\ndeployment={} adapter={} healthy={} headroom={} in_flight={} error_rate={} \
             latency={} input={} output={} cached={} priority={} weight={} quality={} \
             supports={} attempts={} rpm={} success={} p50={} p95={} p99={} ttft50={} \
             ttft95={} tps={} errors={},{},{},{},{},{},{},{},{},{},{}",
            c.deployment,
            c.adapter,
            c.healthy,
            c.headroom,
            c.in_flight,
            c.error_rate,
            c.latency_ms,
            c.input_cost_per_1m,
            c.output_cost_per_1m,
            c.cached_input_cost_per_1m,
            c.priority,
            c.weight,
            c.quality,
            c.supports.bits(),
            s.attempts,
            s.requests_per_minute,
            s.success_rate,
            s.latency_p50_ms,
            s.latency_p95_ms,
            s.latency_p99_ms,
            s.ttft_p50_ms,
            s.ttft_p95_ms,
            s.output_tokens_per_second,
            e.rate_limited,
            e.overloaded,
            e.timeout,
            e.connect,
            e.transport,
            e.auth,
            e.context_length_exceeded,
            e.content_filtered,
            e.permanent,
            e.plugin,
            e.other,
        );
    }
    out
}

fn order(candidates: &[Candidate]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
    // Stable: ties keep the configured order.
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a as usize], &candidates[b as usize]);
        let key = |c: &Candidate| (!c.healthy, c.recent.attempts > 0);
        key(a)
            .cmp(&key(b))
            .then(a.recent.latency_p50_ms.total_cmp(&b.recent.latency_p50_ms))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::Capabilities;

    fn candidate(name: &str, attempts: u32, p50: f32) -> Candidate {
        let mut c = Candidate {
            supports: Capabilities::empty(),
            ..switchyard_sdk::testing::candidate(name)
        };
        c.recent.attempts = attempts;
        c.recent.success_rate = 1.0;
        c.recent.latency_p50_ms = p50;
        c.recent.latency_p95_ms = p50;
        c.recent.latency_p99_ms = p50;
        c
    }

    #[test]
    fn unmeasured_first_then_by_p50() {
        let c = [
            candidate("slow", 30, 400.0),
            candidate("new", 0, 0.0),
            candidate("fast", 30, 20.0),
        ];
        assert_eq!(order(&c), [1, 2, 0]);
    }
}
