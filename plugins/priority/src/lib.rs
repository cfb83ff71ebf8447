//! Priority routing: try deployments by their configured `priority` (lower
//! first), keeping the configured order among equals. Health and rate-limit
//! headroom come first, but nothing is dropped: an unhealthy or exhausted
//! deployment is still a last resort, better than failing outright.

use switchyard_sdk::{Candidate, Metadata, RequestSummary, Strategy, export_strategy};

struct Priority;

impl Strategy for Priority {
    fn metadata() -> Metadata {
        Metadata::new("priority", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(_request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        Ok(order(
            candidates
                .iter()
                .map(|c| (c.healthy, c.headroom, c.priority)),
        ))
    }
}

export_strategy!(Priority);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// Indices sorted by (unhealthy, no headroom, priority); the sort is stable,
/// so equal keys keep the configured order.
fn order(candidates: impl Iterator<Item = (bool, f32, u32)>) -> Vec<u32> {
    let mut keyed: Vec<_> = candidates
        .enumerate()
        .map(|(i, (healthy, headroom, priority))| ((!healthy, headroom <= 0.0, priority), i as u32))
        .collect();
    keyed.sort_by_key(|&(key, _)| key);
    keyed.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn healthy_then_headroom_then_priority_stable() {
        let c = [
            (true, 1.0, 2),  // 0
            (false, 1.0, 0), // 1: unhealthy, last
            (true, 0.0, 0),  // 2: exhausted, after the others
            (true, 0.5, 1),  // 3
            (true, 0.9, 2),  // 4: ties with 0, keeps order
            (true, 1.0, 1),  // 5
        ];
        assert_eq!(order(c.into_iter()), vec![3, 5, 0, 4, 2, 1]);
        assert!(order([].into_iter()).is_empty());
    }
}
