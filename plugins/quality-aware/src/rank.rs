//! The ordering itself: pure, so it is tested natively.

use std::cmp::Ordering;

use switchyard_sdk::Candidate;

use crate::config::Config;

/// Indices of `candidates`, each exactly once, sorted by
/// 1. demotion: deployments at or above `min_quality` before those below it,
///    whatever their health;
/// 2. tier: healthy with headroom, healthy but exhausted (headroom <= 0),
///    unhealthy, unhealthy and exhausted;
/// 3. quality, highest first;
/// 4. success rate, highest first;
/// 5. the configured order.
///
/// Why the floor comes before health: within one tier, quality order alone
/// already puts the demoted last, so the floor only means something across
/// tiers. Below it, answers are unacceptable except as a last resort; a
/// deployment that is down or rate-limited fails (and the host moves on) or,
/// recovered, answers well, whereas a demoted one answers poorly.
///
/// Allocates the answer and one scratch vector of keys, nothing else.
pub fn order(candidates: &[Candidate], config: &Config) -> Vec<u32> {
    let keys: Vec<Key> = candidates.iter().map(|c| Key::new(c, config)).collect();
    let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
    // Unstable is fine: the index is the last key, so no two compare equal.
    order.sort_unstable_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]).then(a.cmp(&b)));
    order
}

/// Share of recent attempts that succeeded: the performance monitor's
/// figure when its window saw traffic, else 1 - the host's error rate (the
/// window's figures are all 0 without traffic, which is no evidence of
/// failure).
pub fn success_rate(c: &Candidate) -> f32 {
    unit(if c.recent.attempts > 0 {
        c.recent.success_rate
    } else {
        1.0 - c.error_rate
    })
}

/// `x` clamped to 0..=1, with NaN as 0 so that a broken figure never wins.
pub fn unit(x: f32) -> f32 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// 0: healthy with headroom, 1: healthy but exhausted, 2: unhealthy,
/// 3: unhealthy and exhausted. A NaN headroom counts as exhausted.
pub fn tier(c: &Candidate) -> u8 {
    let has_headroom = c.headroom > 0.0;
    (u8::from(!c.healthy) << 1) | u8::from(!has_headroom)
}

/// A candidate's sort key, compared field by field.
#[derive(Clone, Copy)]
struct Key {
    demoted: bool,
    tier: u8,
    quality: f32,
    success: f32,
}

impl Key {
    fn new(c: &Candidate, config: &Config) -> Self {
        let quality = unit(c.quality);
        Self {
            demoted: quality < config.min_quality,
            tier: tier(c),
            quality,
            success: success_rate(c),
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        (self.demoted, self.tier)
            .cmp(&(other.demoted, other.tier))
            .then(other.quality.total_cmp(&self.quality))
            .then(other.success.total_cmp(&self.success))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::*;

    fn scored(name: &str, quality: f32, success: f32) -> Candidate {
        let mut c = candidate(name);
        c.quality = quality;
        c.recent.attempts = 10;
        c.recent.success_rate = success;
        c
    }

    #[test]
    fn best_quality_first_then_success_rate_then_configured_order() {
        let c = [
            scored("a", 0.80, 1.0),
            scored("b", 0.95, 0.9),
            scored("c", 0.80, 0.99), // same quality as a, lower success
            scored("d", 0.95, 0.9),  // ties with b: configured order
            scored("e", 1.0, 0.5),   // unevaluated
        ];
        assert_eq!(order(&c, &Config::default()), vec![4, 1, 3, 0, 2]);
    }

    #[test]
    fn below_the_floor_goes_after_all_others_even_those_down() {
        let mut c = [
            scored("poor", 0.5, 1.0),
            scored("good-but-down", 0.9, 1.0),
            scored("ok-but-dry", 0.7, 1.0),
            scored("fine", 0.8, 0.5),
            scored("nan", f32::NAN, f32::NAN), // a broken figure scores 0
        ];
        c[1].healthy = false;
        c[2].headroom = 0.0;
        assert_eq!(order(&c, &Config::default()), vec![3, 2, 1, 0, 4]);
        // No floor: health tiers first, then quality.
        assert_eq!(order(&c, &Config { min_quality: 0.0 }), vec![3, 0, 4, 2, 1]);
        // The demoted keep the tier order among themselves.
        assert_eq!(
            order(&c, &Config { min_quality: 0.85 }),
            vec![1, 3, 0, 4, 2]
        );
        // Exactly at the floor is not below it.
        let c = [scored("below", 0.59, 1.0), scored("at", 0.6, 0.1)];
        assert_eq!(order(&c, &Config::default()), vec![1, 0]);
    }

    #[test]
    fn success_rate_falls_back_to_the_error_rate_without_traffic() {
        let mut idle = candidate("idle");
        idle.error_rate = 0.25;
        assert_eq!(success_rate(&idle), 0.75);
        assert_eq!(success_rate(&scored("busy", 1.0, 0.5)), 0.5);
        idle.error_rate = f32::NAN;
        assert_eq!(success_rate(&idle), 0.0);
        let c = [scored("flaky", 1.0, 0.5), idle, candidate("fresh")];
        assert_eq!(order(&c, &Config::default()), vec![2, 0, 1]);
    }

    #[test]
    fn every_index_exactly_once() {
        for_random_sets(|_, c| {
            for min_quality in [0.0, 0.6, 1.0] {
                assert_permutation(&order(c, &Config { min_quality }), c.len());
            }
        });
        assert!(order(&[], &Config::default()).is_empty());
    }
}
