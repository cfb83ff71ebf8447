//! Test helpers for strategies (feature `testing`): candidates, requests
//! and random candidate sets whose figures include the awkward values a
//! strategy must survive.

use crate::{Candidate, Capabilities, ErrorShares, RequestSummary, TaskPriority, WindowStats};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// A healthy, untouched, unpriced deployment that supports everything.
pub fn candidate(name: &str) -> Candidate {
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
        supports: Capabilities::all(),
        recent: WindowStats {
            attempts: 0,
            requests_per_minute: 0.0,
            success_rate: 0.0,
            latency_p50_ms: 0.0,
            latency_p95_ms: 0.0,
            latency_p99_ms: 0.0,
            ttft_p50_ms: 0.0,
            ttft_p95_ms: 0.0,
            output_tokens_per_second: 0.0,
            errors: ErrorShares::NONE,
        },
    }
}

/// A normal-priority request that needs nothing in particular.
pub fn request(input_tokens: u32, max_output_tokens: Option<u32>) -> RequestSummary {
    RequestSummary {
        model: "m".into(),
        input_tokens,
        max_output_tokens,
        stream: false,
        needs: Capabilities::empty(),
        priority: TaskPriority::Normal,
        tags: Vec::new(),
    }
}

/// Asserts that `order` holds every index below `n` exactly once.
pub fn assert_permutation(order: &[u32], n: usize) {
    let mut seen = vec![false; n];
    for &i in order {
        let i = i as usize;
        assert!(
            i < n && !seen[i],
            "{order:?} is not a permutation of 0..{n}"
        );
        seen[i] = true;
    }
    assert_eq!(order.len(), n, "{order:?}");
}

/// Calls `check` on many generated requests and candidate sets (0 to 9
/// candidates) whose figures include zeros, NaNs, infinities and negatives.
pub fn for_random_sets(mut check: impl FnMut(&RequestSummary, &[Candidate])) {
    let mut rng = Rng(0x5eed);
    for _ in 0..2000 {
        let mut r = request(rng.below(200_000) as u32, None);
        if rng.below(2) == 0 {
            r.max_output_tokens = Some(rng.below(10_000) as u32);
        }
        r.stream = rng.below(2) == 0;
        r.needs = Capabilities::from_bits_truncate(rng.below(16) as u8);
        r.priority = [
            TaskPriority::Low,
            TaskPriority::Normal,
            TaskPriority::High,
            TaskPriority::Critical,
        ][rng.below(4) as usize];
        let candidates: Vec<Candidate> = (0..rng.below(10))
            .map(|i| {
                let mut c = candidate(&format!("d{i}"));
                c.healthy = rng.below(4) != 0;
                c.headroom = rng.figure() as f32;
                c.error_rate = rng.figure() as f32;
                c.input_cost_per_1m = rng.figure() * 10.0;
                c.output_cost_per_1m = rng.figure() * 10.0;
                c.quality = rng.figure() as f32;
                c.supports = r.needs | Capabilities::from_bits_truncate(rng.below(16) as u8);
                let w = &mut c.recent;
                w.attempts = rng.below(3) as u32;
                w.success_rate = rng.figure() as f32;
                w.latency_p50_ms = rng.figure() as f32 * 1000.0;
                w.ttft_p50_ms = rng.figure() as f32 * 300.0;
                w.output_tokens_per_second = rng.figure() as f32 * 100.0;
                c
            })
            .collect();
        check(&r, &candidates);
    }
}

/// SplitMix64: deterministic, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A figure that is often awkward: 0, 1, NaN, ±infinity, negative, or
    /// an ordinary value (repeated ones make ties).
    fn figure(&mut self) -> f64 {
        match self.below(8) {
            0 => 0.0,
            1 => 1.0,
            2 => f64::NAN,
            3 => f64::INFINITY,
            4 => -1.0,
            5 => 0.5,
            _ => self.below(1000) as f64 / 100.0,
        }
    }
}
