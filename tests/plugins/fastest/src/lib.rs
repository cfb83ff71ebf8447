//! Test strategy: routes by the performance monitor's live figures, so tests
//! can tell they reach strategies. Deployments without traffic in the window
//! first (in configured order, to measure them), then by recent p50 latency;
//! unhealthy ones last. Logs what it saw of every candidate.

use std::fmt::Write;

use switchyard_sdk::{Candidate, Metadata, RequestSummary, Strategy, export_strategy, log};

struct Fastest;

impl Strategy for Fastest {
    fn metadata() -> Metadata {
        Metadata::new("fastest", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(_request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
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
    use switchyard_sdk::{Capabilities, WindowStats};

    fn candidate(name: &str, attempts: u32, p50: f32) -> Candidate {
        Candidate {
            deployment: name.into(),
            adapter: "openai".into(),
            healthy: true,
            headroom: 1.0,
            in_flight: 0,
            error_rate: 0.0,
            latency_ms: 0.0,
            input_cost_per_1m: 0.0,
            output_cost_per_1m: 0.0,
            cached_input_cost_per_1m: 0.0,
            priority: 0,
            weight: 1,
            quality: 1.0,
            supports: Capabilities::empty(),
            recent: WindowStats {
                attempts,
                requests_per_minute: 0.0,
                success_rate: 1.0,
                latency_p50_ms: p50,
                latency_p95_ms: p50,
                latency_p99_ms: p50,
                ttft_p50_ms: 0.0,
                ttft_p95_ms: 0.0,
                output_tokens_per_second: 0.0,
                errors: switchyard_sdk::ErrorShares::NONE,
            },
        }
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
