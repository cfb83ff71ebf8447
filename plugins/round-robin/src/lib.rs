//! Round-robin routing: spread a route's requests over its healthy
//! deployments, in proportion to their weights. The rotation position is a
//! host-held counter per route, so it is shared by every instance of the
//! plugin and stays fair under concurrency; unhealthy deployments are kept
//! at the end as a last resort.

use switchyard_sdk::{
    Candidate, Metadata, PluginKind, RequestSummary, Strategy, counter_next, export_strategy,
};

struct RoundRobin;

impl Strategy for RoundRobin {
    fn metadata() -> Metadata {
        Metadata::new(
            "round-robin",
            env!("CARGO_PKG_VERSION"),
            PluginKind::Strategy,
            &[],
        )
    }

    fn order(request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        let turn = counter_next(&request.model);
        Ok(order(
            turn,
            candidates.iter().map(|c| (c.healthy, c.weight)),
        ))
    }
}

export_strategy!(RoundRobin);

/// Weights beyond this total are scaled down, bounding the work per call.
const MAX_TOTAL_WEIGHT: u64 = 4096;

/// The order for request number `turn`: healthy candidates rotated so that
/// the one whose slot `turn` is comes first, then the unhealthy ones in
/// configured order. A weight of 0 counts as 1 (a configured deployment is
/// meant to be used).
fn order(turn: u64, candidates: impl Iterator<Item = (bool, u32)>) -> Vec<u32> {
    let (mut healthy, mut unhealthy) = (Vec::new(), Vec::new());
    for (i, (ok, weight)) in candidates.enumerate() {
        if ok {
            healthy.push((i as u32, u64::from(weight.max(1))));
        } else {
            unhealthy.push(i as u32);
        }
    }
    if !healthy.is_empty() {
        let weights = normalise(healthy.iter().map(|&(_, w)| w).collect());
        let first = smooth_pick(&weights, turn);
        healthy.rotate_left(first);
    }
    healthy
        .into_iter()
        .map(|(i, _)| i)
        .chain(unhealthy)
        .collect()
}

/// Divides weights by their common divisor and caps their total.
fn normalise(mut weights: Vec<u64>) -> Vec<u64> {
    let gcd = weights.iter().fold(0, |a, &b| gcd(a, b)).max(1);
    weights.iter_mut().for_each(|w| *w /= gcd);
    let total: u64 = weights.iter().sum();
    if total > MAX_TOTAL_WEIGHT {
        weights
            .iter_mut()
            .for_each(|w| *w = (*w * MAX_TOTAL_WEIGHT / total).max(1));
    }
    weights
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round-robin (as in nginx): in every run of `sum(w)` turns
/// candidate `i` is picked `w[i]` times, interleaved rather than in bursts.
/// The sequence is periodic, so turn `t` is replayed from `t mod sum(w)`.
fn smooth_pick(weights: &[u64], turn: u64) -> usize {
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut pick = 0;
    for _ in 0..=(turn % total) {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += w as i64;
        }
        pick = (0..current.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        current[pick] -= total as i64;
    }
    pick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_rotate() {
        let c = [(true, 1), (true, 1), (false, 1), (true, 1)];
        assert_eq!(order(0, c.into_iter()), vec![0, 1, 3, 2]);
        assert_eq!(order(1, c.into_iter()), vec![1, 3, 0, 2]);
        assert_eq!(order(2, c.into_iter()), vec![3, 0, 1, 2]);
        assert_eq!(order(3, c.into_iter()), vec![0, 1, 3, 2]);
    }

    #[test]
    fn weights_give_proportional_smooth_share() {
        let c = [(true, 5), (true, 1), (true, 1)];
        let firsts: Vec<u32> = (0..7).map(|t| order(t, c.into_iter())[0]).collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(firsts, vec![0, 0, 1, 0, 2, 0, 0]);
        // Large weights are reduced, not looped over.
        let big = [(true, 3_000_000), (true, 1_000_000)];
        let firsts: Vec<u32> = (0..4).map(|t| order(t, big.into_iter())[0]).collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 3);
        let huge = [(true, u32::MAX), (true, 1)];
        assert_eq!(order(u64::MAX, huge.into_iter()).len(), 2);
    }

    #[test]
    fn all_unhealthy_keeps_config_order() {
        assert_eq!(order(7, [(false, 1), (false, 2)].into_iter()), vec![0, 1]);
        assert!(order(0, [].into_iter()).is_empty());
    }
}
