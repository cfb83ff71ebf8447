//! Round-robin routing: spread a route's requests over its healthy
//! deployments, in proportion to their weights. The rotation position is a
//! host-held counter per route, so it is shared by every instance of the
//! plugin and stays fair under concurrency; unhealthy deployments are kept
//! at the end as a last resort.

use switchyard_sdk::{
    Candidate, Metadata, RequestSummary, Strategy, counter_next, export_strategy, log, now_ns,
};

struct RoundRobin;

impl Strategy for RoundRobin {
    fn metadata() -> Metadata {
        Metadata::new("round-robin", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        Ok(order(
            turn(&request.model),
            candidates.iter().map(|c| (c.healthy, c.weight)),
        ))
    }
}

export_strategy!(RoundRobin);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// This request's turn in `route`'s rotation.
///
/// The host's counters are bounded (64 per plugin); past that, `counter_next`
/// fails for every new name, and will keep failing. Failing the call would
/// make the host use the configured order, sending the route's whole load to
/// its first deployment; a turn taken from the clock still spreads the load
/// evenly, only without strict alternation.
fn turn(route: &str) -> u64 {
    match counter_next(&counter_name(route)) {
        Ok(turn) => turn,
        Err(e) => {
            log::warn(&format!(
                "no rotation counter for route {route:?} ({e}); rotating by the clock"
            ));
            mix(now_ns())
        }
    }
}

/// The host accepts counter names of at most this many bytes.
const MAX_COUNTER_NAME: usize = 64;

/// The counter of `route`: its name when that fits, else a prefix of it and a
/// hash of the whole name, so long route names still get a counter each.
fn counter_name(route: &str) -> String {
    if route.len() <= MAX_COUNTER_NAME {
        return route.to_owned();
    }
    // 16 hex digits of hash and a `#` leave 47 bytes of prefix.
    let mut cut = MAX_COUNTER_NAME - 17;
    while !route.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = route.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}#{hash:016x}", &route[..cut])
}

/// Spreads clock readings over all residues: a clock that ticks in steps of
/// a microsecond or more would otherwise always give the same `turn % n`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

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
    fn counter_names_fit_the_host_limit() {
        assert_eq!(counter_name("gpt"), "gpt");
        let exact = "r".repeat(64);
        assert_eq!(counter_name(&exact), exact);
        let long = "é".repeat(40);
        let name = counter_name(&long);
        assert!(name.len() <= MAX_COUNTER_NAME, "{name}");
        assert!(name.starts_with("éé") && name.contains('#'));
        assert_ne!(name, counter_name(&format!("{long}x")));
        assert_eq!(name, counter_name(&long));
    }

    #[test]
    fn clock_turns_spread_even_on_a_coarse_clock() {
        let c = [(true, 1), (true, 1)];
        let firsts: Vec<u32> = (0..64u64)
            .map(|ms| order(mix(ms * 1_000_000), c.into_iter())[0])
            .collect();
        let zeros = firsts.iter().filter(|&&i| i == 0).count();
        assert!((16..=48).contains(&zeros), "{zeros} of 64");
    }

    #[test]
    fn all_unhealthy_keeps_config_order() {
        assert_eq!(order(7, [(false, 1), (false, 2)].into_iter()), vec![0, 1]);
        assert!(order(0, [].into_iter()).is_empty());
    }
}
