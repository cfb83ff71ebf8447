//! The ordering itself, free of host calls so that it is unit-tested natively.

use switchyard_sdk::Candidate;

use crate::config::Config;
use switchyard_sdk::rng::Rng;

/// How much of a last resort a candidate is, as in `priority`: 0 usable,
/// 1 healthy but out of rate-limit headroom (likely back once the limit's
/// window rolls over), 2 unhealthy, 3 unhealthy and exhausted.
fn tier(c: &Candidate) -> u8 {
    2 * u8::from(!c.healthy) + u8::from(c.headroom <= 0.0)
}

/// Every index of `candidates` once: by [`tier`]; within a tier, those of
/// positive weight in a random order by weight (see [`shuffle`]), then those
/// of weight 0 in configured order. Weight 0 thus means "standby": never
/// first while a deployment of the same tier has a weight, yet still tried
/// before a less healthy one.
///
/// `random` is asked for one seed, and only if some tier has two
/// deployments of positive weight to draw between.
pub fn order(
    candidates: &[Candidate],
    config: &Config,
    mut random: impl FnMut() -> u64,
) -> Vec<u32> {
    let weights: Vec<u32> = candidates
        .iter()
        .map(|c| config.weight(&c.deployment, c.weight))
        .collect();
    let group = |i: u32| (tier(&candidates[i as usize]), weights[i as usize] == 0);

    let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
    // The index ends the key, so no two keys are equal and an unstable sort
    // (which never allocates) keeps the configured order within a group.
    order.sort_unstable_by_key(|&i| (group(i), i));

    let mut rng = None;
    let mut start = 0;
    while start < order.len() {
        let key = group(order[start]);
        let len = order[start..]
            .iter()
            .take_while(|&&i| group(i) == key)
            .count();
        let (standby, end) = (key.1, start + len);
        if !standby && len > 1 {
            let rng = rng.get_or_insert_with(|| Rng::new(random()));
            shuffle(&mut order[start..end], &weights, rng);
        }
        start = end;
    }
    order
}

/// Puts `slots` in a random order where each next one is picked among those
/// left with probability proportional to its weight (all positive): weighted
/// sampling without replacement. Quadratic, which for a route's handful of
/// deployments beats anything that needs logarithms or a second allocation.
fn shuffle(slots: &mut [u32], weights: &[u32], rng: &mut Rng) {
    let weight = |i: u32| u64::from(weights[i as usize]);
    let mut total: u64 = slots.iter().map(|&i| weight(i)).sum();
    for pos in 0..slots.len() - 1 {
        let mut r = rng.below(total);
        let mut pick = pos;
        while r >= weight(slots[pick]) {
            r -= weight(slots[pick]);
            pick += 1;
        }
        slots.swap(pos, pick);
        total -= weight(slots[pos]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::Capabilities;

    fn candidate(name: &str, healthy: bool, headroom: f32, weight: u32) -> Candidate {
        Candidate {
            healthy,
            headroom,
            weight,
            supports: Capabilities::empty(),
            ..switchyard_sdk::testing::candidate(name)
        }
    }

    fn healthy(weights: &[u32]) -> Vec<Candidate> {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        weights
            .iter()
            .zip(names)
            .map(|(&w, n)| candidate(n, true, 1.0, w))
            .collect()
    }

    /// How often each index lands at `position` over `draws` seeded orders.
    fn shares(c: &[Candidate], config: &Config, position: usize, draws: u64) -> Vec<f64> {
        let mut counts = vec![0u64; c.len()];
        for seed in 0..draws {
            counts[order(c, config, || seed)[position] as usize] += 1;
        }
        counts.iter().map(|&n| n as f64 / draws as f64).collect()
    }

    fn assert_near(got: &[f64], want: &[f64], tolerance: f64) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= tolerance,
                "got {got:?}, want {want:?} ± {tolerance}"
            );
        }
    }

    #[test]
    fn first_picks_follow_weights() {
        // 10 000 draws: one standard deviation is under 0.5 %, so ± 3 % only
        // fails if the draw is wrong, not by bad luck.
        let got = shares(&healthy(&[1, 3]), &Config::default(), 0, 10_000);
        assert_near(&got, &[0.25, 0.75], 0.03);
        let got = shares(&healthy(&[1, 1, 2]), &Config::default(), 0, 10_000);
        assert_near(&got, &[0.25, 0.25, 0.5], 0.03);
    }

    #[test]
    fn later_picks_are_weighted_among_those_left() {
        // Weights 1:2:3, second place: P(i) = sum over first j != i of
        // w_j/6 * w_i/(6 - w_j), i.e. 1/4, 2/5 and 7/20.
        let got = shares(&healthy(&[1, 2, 3]), &Config::default(), 1, 10_000);
        assert_near(&got, &[0.25, 0.40, 0.35], 0.03);
    }

    #[test]
    fn weight_zero_is_standby_in_configured_order() {
        let c = healthy(&[0, 5, 0, 1]);
        for seed in 0..200 {
            let o = order(&c, &Config::default(), || seed);
            assert!(o[..2].contains(&1) && o[..2].contains(&3), "{o:?}");
            assert_eq!(o[2..], [0, 2]);
        }
        let all_zero = healthy(&[0, 0, 0]);
        let no_draw = || -> u64 { panic!("nothing to draw") };
        assert_eq!(order(&all_zero, &Config::default(), no_draw), [0, 1, 2]);
    }

    #[test]
    fn last_resorts_by_tier_then_weight() {
        let c = [
            candidate("sick-dry", false, 0.0, 1),   // 0: tier 3
            candidate("sick", false, 0.5, 1),       // 1: tier 2
            candidate("dry", true, 0.0, 1),         // 2: tier 1
            candidate("ok", true, 0.2, 1),          // 3: tier 0
            candidate("dry-standby", true, 0.0, 0), // 4: tier 1, weight 0
            candidate("dry-2", true, -1.0, 2),      // 5: tier 1
        ];
        for seed in 0..100 {
            let o = order(&c, &Config::default(), || seed);
            assert_eq!(o[0], 3);
            assert!(matches!(o[1..3], [2, 5] | [5, 2]), "{o:?}");
            assert_eq!(o[3..], [4, 1, 0]);
        }
    }

    #[test]
    fn config_weights_override() {
        let config = Config::parse(r#"{"weights": {"a": 0, "b": 1}}"#).unwrap();
        let c = healthy(&[100, 1, 1]);
        assert_near(&shares(&c, &config, 0, 10_000), &[0.0, 0.5, 0.5], 0.03);
        assert_eq!(order(&c, &config, || 1)[2], 0);
    }

    #[test]
    fn one_seed_at_most_and_none_when_nothing_to_draw() {
        let mut calls = 0;
        order(&healthy(&[1, 2, 3, 4]), &Config::default(), || {
            calls += 1;
            7
        });
        assert_eq!(calls, 1);
        let single = healthy(&[3]);
        let no_draw = || -> u64 { panic!("nothing to draw") };
        assert_eq!(order(&single, &Config::default(), no_draw), [0]);
        assert!(order(&[], &Config::default(), no_draw).is_empty());
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let c = healthy(&[u32::MAX, u32::MAX, 1]);
        let got = shares(&c, &Config::default(), 0, 2_000);
        assert_near(&got, &[0.5, 0.5, 0.0], 0.05);
    }

    #[test]
    fn every_index_exactly_once_in_tier_order() {
        let mut rng = Rng::new(42);
        for round in 0..2_000u64 {
            let n = rng.below(13) as usize;
            let c: Vec<Candidate> = (0..n)
                .map(|i| {
                    let weight = [0, 1, 2, 10, u32::MAX][rng.below(5) as usize];
                    let headroom = [0.0, 0.3, 1.0, -0.5][rng.below(4) as usize];
                    candidate(&format!("d{i}"), rng.below(3) > 0, headroom, weight)
                })
                .collect();
            let o = order(&c, &Config::default(), || round);
            let mut seen = o.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n as u32).collect::<Vec<_>>(), "{o:?}");
            let key = |&i: &u32| (tier(&c[i as usize]), c[i as usize].weight == 0);
            assert!(o.windows(2).all(|w| key(&w[0]) <= key(&w[1])), "{o:?}");
        }
    }
}
