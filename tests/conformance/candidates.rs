//! Every field of a strategy's arguments crosses into the guest intact.
//!
//! The host lowers candidate lists with its own code
//! (`host/src/plugins/abi/v0_2/candidates.rs`), so this check is not
//! wasmtime's but ours: the test strategy `fastest` answers a request tagged
//! `echo` with every field it received, and each must read back as sent.
//! Every value differs from every other, so a field written at another's
//! place shows.

use std::fmt::Write;
use std::sync::Arc;

use switchyard::domain::{
    Candidate, Capabilities, Kind, RequestSummary, TaskPriority, WindowStats,
};
use switchyard::plugins::PluginError;

fn candidate(i: u32) -> Candidate {
    let x = i as f32;
    let k = f64::from(i);
    Candidate {
        deployment: format!("deployment-{i}-ü"),
        adapter: format!("adapter-{i}"),
        healthy: i.is_multiple_of(2),
        headroom: 0.11 + x,
        in_flight: 1000 + i,
        error_rate: 0.12 + x,
        latency_ms: 0.13 + x,
        input_cost_per_1m: 0.14 + k,
        output_cost_per_1m: 0.15 + k,
        cached_input_cost_per_1m: 0.16 + k,
        priority: 2000 + i,
        weight: 3000 + i,
        quality: 0.17 + x,
        supports: [
            Capabilities::TOOLS,
            Capabilities::JSON_MODE | Capabilities::STREAMING,
            Capabilities::VISION,
        ][i as usize % 3],
        recent: Arc::new(WindowStats {
            attempts: 4000 + i,
            requests_per_minute: 0.21 + x,
            success_rate: 0.22 + x,
            latency_p50_ms: 0.23 + x,
            latency_p95_ms: 0.24 + x,
            latency_p99_ms: 0.25 + x,
            ttft_p50_ms: 0.26 + x,
            ttft_p95_ms: 0.27 + x,
            output_tokens_per_second: 0.28 + x,
            // Every named class once across the candidates, plus two the
            // record does not name (they add up in `other`).
            errors: match i {
                0 => vec![
                    ("rate_limited", 0.31),
                    ("overloaded", 0.32),
                    ("timeout", 0.33),
                ],
                1 => vec![
                    ("connect", 0.34),
                    ("transport", 0.35),
                    ("auth", 0.36),
                    ("diverged", 0.1),
                ],
                2 => vec![
                    ("context_length_exceeded", 0.37),
                    ("content_filtered", 0.38),
                    ("permanent", 0.39),
                    ("plugin", 0.4),
                    ("at_capacity", 0.25),
                ],
                _ => vec![],
            },
        }),
    }
}

/// What `fastest` prints for a candidate (see its `echo`).
fn expected(c: &Candidate) -> String {
    let s = &c.recent;
    let share = |class: &str| -> f32 {
        s.errors
            .iter()
            .filter(|(n, _)| *n == class)
            .fold(0.0, |a, (_, v)| a + v)
    };
    let named = [
        "rate_limited",
        "overloaded",
        "timeout",
        "connect",
        "transport",
        "auth",
        "context_length_exceeded",
        "content_filtered",
        "permanent",
        "plugin",
    ];
    let other: f32 = s
        .errors
        .iter()
        .filter(|(n, _)| !named.contains(n))
        .fold(0.0, |a, (_, v)| a + v);
    let shares: Vec<String> = named
        .iter()
        .map(|n| share(n).to_string())
        .chain([other.to_string()])
        .collect();
    // WIT flag order: tools, json-mode, vision, streaming.
    let bits = [
        Capabilities::TOOLS,
        Capabilities::JSON_MODE,
        Capabilities::VISION,
        Capabilities::STREAMING,
    ]
    .iter()
    .enumerate()
    .filter(|(_, f)| c.supports.contains(**f))
    .fold(0u8, |b, (i, _)| b | 1 << i);
    let mut out = String::new();
    let _ = write!(
        out,
        "\ndeployment={} adapter={} healthy={} headroom={} in_flight={} error_rate={} \
         latency={} input={} output={} cached={} priority={} weight={} quality={} \
         supports={} attempts={} rpm={} success={} p50={} p95={} p99={} ttft50={} \
         ttft95={} tps={} errors={}",
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
        bits,
        s.attempts,
        s.requests_per_minute,
        s.success_rate,
        s.latency_p50_ms,
        s.latency_p95_ms,
        s.latency_p99_ms,
        s.ttft_p50_ms,
        s.ttft_p95_ms,
        s.output_tokens_per_second,
        shares.join(","),
    );
    out
}

#[test]
fn every_candidate_field_reaches_the_strategy() {
    let cache = tempfile::tempdir().expect("temp dir for the compile cache");
    let registry = super::registry(&super::repo().join("tests/plugins"), cache.path(), 2);
    let plugin = registry
        .get("fastest", Kind::Strategy)
        .expect("tests/plugins/fastest.wasm (build it with scripts/build-plugins)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let request = RequestSummary {
        model: "route-ä".into(),
        input_tokens: 123,
        max_output_tokens: Some(456),
        stream: true,
        needs: Capabilities::JSON_MODE,
        priority: TaskPriority::High,
        tags: vec!["echo".into(), "caller:x".into()],
    };
    // 0, 1 and 9 candidates: an empty list, one, and more than a guest
    // allocation's usual first size.
    for n in [0, 1, 9] {
        let candidates: Vec<Candidate> = (0..n).map(candidate).collect();
        let answer =
            rt.block_on(plugin.order(&Arc::from("echo"), request.clone(), candidates.clone()));
        let Err(PluginError::Guest { message, .. }) = answer else {
            panic!("expected the echo as the strategy's error, got {answer:?}");
        };
        let mut want = String::from(
            "model=route-ä input=123 max=Some(456) stream=true needs=2 priority=TaskPriority::High tags=echo,caller:x",
        );
        for c in &candidates {
            want.push_str(&expected(c));
        }
        for (got, want) in message.lines().zip(want.lines()) {
            assert_eq!(got, want);
        }
        assert_eq!(message.lines().count(), want.lines().count(), "{message}");
    }
}
