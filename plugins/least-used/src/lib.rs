//! Least-used routing: send each request to the deployment doing the least
//! work right now, so load evens out across deployments of unequal speed
//! without any tuning.
//!
//! "Work" is first the requests in flight, which the host counts live and
//! which is what a slow deployment accumulates; ties (common at low load,
//! when everything is at 0 or 1) go to the one with fewer requests per
//! minute over the performance monitor's recent window, which spreads idle
//! periods' traffic rather than always picking the first deployment. Further
//! ties keep the configured order, so the result is deterministic.
//!
//! Healthy deployments with rate-limit headroom come first; the others are
//! never dropped but kept last, as a last resort, in the tiers of `priority`
//! and by the same usage rule within each. No config.

use std::cmp::Ordering;

use switchyard_sdk::{Candidate, Metadata, RequestSummary, Strategy, export_strategy};

struct LeastUsed;

impl Strategy for LeastUsed {
    fn metadata() -> Metadata {
        Metadata::new("least-used", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(_request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        Ok(order(candidates))
    }
}

export_strategy!(LeastUsed);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// How much of a last resort a candidate is, as in `priority`: 0 usable,
/// 1 healthy but out of rate-limit headroom (likely back once the limit's
/// window rolls over), 2 unhealthy, 3 unhealthy and exhausted.
fn tier(c: &Candidate) -> u8 {
    2 * u8::from(!c.healthy) + u8::from(c.headroom <= 0.0)
}

/// Every index of `candidates` once, by ([`tier`], in flight, recent
/// requests per minute, index).
fn order(candidates: &[Candidate]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
    // The index ends the comparison, so no two are equal and an unstable
    // sort (which never allocates) is as good as a stable one.
    order.sort_unstable_by(|&a, &b| {
        compare(&candidates[a as usize], &candidates[b as usize]).then(a.cmp(&b))
    });
    order
}

fn compare(a: &Candidate, b: &Candidate) -> Ordering {
    tier(a)
        .cmp(&tier(b))
        .then(a.in_flight.cmp(&b.in_flight))
        .then(
            a.recent
                .requests_per_minute
                .total_cmp(&b.recent.requests_per_minute),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::Capabilities;

    fn candidate(healthy: bool, headroom: f32, in_flight: u32, rpm: f32) -> Candidate {
        let mut c = Candidate {
            healthy,
            headroom,
            in_flight,
            supports: Capabilities::empty(),
            ..switchyard_sdk::testing::candidate("d")
        };
        c.recent.requests_per_minute = rpm;
        c
    }

    #[test]
    fn in_flight_then_rate_then_configured_order() {
        let c = [
            candidate(true, 1.0, 3, 0.0),  // 0
            candidate(true, 1.0, 1, 50.0), // 1
            candidate(true, 1.0, 1, 10.0), // 2
            candidate(true, 1.0, 0, 90.0), // 3
            candidate(true, 1.0, 1, 10.0), // 4: ties with 2
        ];
        assert_eq!(order(&c), [3, 2, 4, 1, 0]);
    }

    #[test]
    fn ties_keep_configured_order() {
        let c = [
            candidate(true, 0.5, 2, 4.0),
            candidate(true, 1.0, 2, 4.0),
            candidate(true, 0.1, 2, 4.0),
        ];
        assert_eq!(order(&c), [0, 1, 2]);
        assert!(order(&[]).is_empty());
    }

    #[test]
    fn unhealthy_and_exhausted_last_by_usage() {
        let c = [
            candidate(false, 1.0, 0, 0.0), // 0: tier 2
            candidate(true, 0.0, 0, 0.0),  // 1: tier 1
            candidate(true, 0.4, 9, 99.0), // 2: tier 0, busy but usable
            candidate(false, 0.0, 0, 0.0), // 3: tier 3
            candidate(true, -1.0, 5, 0.0), // 4: tier 1, busier than 1
            candidate(false, 1.0, 1, 0.0), // 5: tier 2, busier than 0
        ];
        assert_eq!(order(&c), [2, 1, 4, 0, 5, 3]);
    }

    #[test]
    fn every_index_exactly_once_in_key_order() {
        // A fixed linear congruential sequence: reproducible, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        for _ in 0..2_000 {
            let n = next(13) as usize;
            let c: Vec<Candidate> = (0..n)
                .map(|_| {
                    let headroom = [0.0, 0.5, 1.0][next(3) as usize];
                    candidate(next(3) > 0, headroom, next(4) as u32, next(3) as f32 * 7.5)
                })
                .collect();
            let o = order(&c);
            let mut seen = o.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n as u32).collect::<Vec<_>>(), "{o:?}");
            assert!(
                o.windows(2)
                    .all(|w| compare(&c[w[0] as usize], &c[w[1] as usize])
                        .then(w[0].cmp(&w[1]))
                        .is_lt()),
                "{o:?}"
            );
        }
    }
}
