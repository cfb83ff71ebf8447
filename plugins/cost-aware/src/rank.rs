//! The ordering itself: pure, so it is tested natively.

use std::cmp::Ordering;

use switchyard_sdk::{Candidate, RequestSummary};

use crate::config::{Config, Unpriced};

/// Indices of `candidates`, each exactly once, sorted by
/// 1. tier: healthy with headroom, healthy but exhausted (headroom <= 0),
///    unhealthy, unhealthy and exhausted;
/// 2. within a tier, priced deployments by estimated cost, cheapest first,
///    and unpriced ones after them (or before them with `"unpriced": "first"`);
/// 3. the configured order.
///
/// Allocates the answer and one scratch vector of keys, nothing else.
pub fn order(request: &RequestSummary, candidates: &[Candidate], config: &Config) -> Vec<u32> {
    let output_tokens = expected_output(request.max_output_tokens, config.expected_output_tokens);
    let keys: Vec<Key> = candidates
        .iter()
        .map(|c| Key::new(c, request.input_tokens, output_tokens, config.unpriced))
        .collect();
    let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
    // Unstable is fine: the index is the last key, so no two compare equal.
    order.sort_unstable_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]).then(a.cmp(&b)));
    order
}

/// The answer tokens to price: the configured expectation, or the request's
/// own limit when that is lower (an answer cannot exceed it).
pub fn expected_output(max_output_tokens: Option<u32>, expected: u32) -> u32 {
    max_output_tokens.map_or(expected, |max| max.min(expected))
}

/// Estimated US dollars for the request, `None` when the deployment has no
/// price at all. One missing half of a price counts as free. Cached-input
/// prices are ignored: how much of a prompt a provider will serve from its
/// cache is unknown before the call.
pub fn cost(c: &Candidate, input_tokens: u32, output_tokens: u32) -> Option<f64> {
    let (input, output) = (price(c.input_cost_per_1m), price(c.output_cost_per_1m));
    if input == 0.0 && output == 0.0 {
        return None;
    }
    Some((f64::from(input_tokens) * input + f64::from(output_tokens) * output) / 1e6)
}

/// A price per million tokens; 0 (not configured) for anything that is not
/// a positive finite number, so a NaN or negative figure never looks cheap.
fn price(per_1m: f64) -> f64 {
    if per_1m.is_finite() && per_1m > 0.0 {
        per_1m
    } else {
        0.0
    }
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
    tier: u8,
    /// 0 for the group that goes first within the tier (priced, by default).
    group: u8,
    /// Estimated dollars; 0 for unpriced deployments, which keeps them in
    /// configured order.
    cost: f64,
}

impl Key {
    fn new(c: &Candidate, input_tokens: u32, output_tokens: u32, unpriced: Unpriced) -> Self {
        let cost = cost(c, input_tokens, output_tokens);
        let group = match (cost, unpriced) {
            (Some(_), Unpriced::Last) | (None, Unpriced::First) => 0,
            _ => 1,
        };
        Self {
            tier: tier(c),
            group,
            cost: cost.unwrap_or(0.0),
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        (self.tier, self.group)
            .cmp(&(other.tier, other.group))
            .then(self.cost.total_cmp(&other.cost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::*;

    fn priced(name: &str, input: f64, output: f64) -> Candidate {
        let mut c = candidate(name);
        c.input_cost_per_1m = input;
        c.output_cost_per_1m = output;
        c
    }

    #[test]
    fn cheapest_estimate_first() {
        // 1000 prompt tokens, 256 expected answer tokens (the default).
        let c = [
            priced("a", 3.0, 15.0), // 0.003 + 0.00384 = 0.00684
            priced("b", 0.15, 0.6), // 0.00015 + 0.0001536
            priced("c", 10.0, 0.0), // 0.01: output price missing, counts as free
            priced("d", 0.5, 1.5),  // 0.0005 + 0.000384
            priced("e", 0.15, 0.6), // ties with b: configured order
        ];
        let r = request(1000, None);
        assert_eq!(order(&r, &c, &Config::default()), vec![1, 4, 3, 0, 2]);
    }

    #[test]
    fn the_answer_size_decides_between_cheap_input_and_cheap_output() {
        // Cheap prompts but dear answers, against the reverse.
        let c = [priced("in", 1.0, 20.0), priced("out", 5.0, 2.0)];
        let config = Config::default();
        // A long prompt with a short answer: "in" is cheaper.
        assert_eq!(order(&request(10_000, Some(10)), &c, &config), vec![0, 1]);
        // A short prompt with the default 256-token answer: "out" is cheaper.
        assert_eq!(order(&request(100, None), &c, &config), vec![1, 0]);
        // A larger max_tokens is capped by the expectation: still "out".
        assert_eq!(order(&request(100, Some(100_000)), &c, &config), vec![1, 0]);
    }

    #[test]
    fn expected_output_is_the_lower_of_limit_and_expectation() {
        assert_eq!(expected_output(None, 256), 256);
        assert_eq!(expected_output(Some(64), 256), 64);
        assert_eq!(expected_output(Some(4096), 256), 256);
        assert_eq!(expected_output(Some(0), 256), 0);
    }

    #[test]
    fn unpriced_last_by_default_or_first_when_configured() {
        let c = [
            candidate("free1"),
            priced("dear", 10.0, 30.0),
            priced("nan", f64::NAN, -1.0), // broken prices: unpriced
            priced("cheap", 0.1, 0.2),
        ];
        let r = request(500, None);
        assert_eq!(order(&r, &c, &Config::default()), vec![3, 1, 0, 2]);
        let first = Config {
            unpriced: Unpriced::First,
            ..Config::default()
        };
        assert_eq!(order(&r, &c, &first), vec![0, 2, 3, 1]);
    }

    #[test]
    fn health_and_headroom_come_before_cost() {
        let mut c = [
            priced("sick-cheap", 0.1, 0.1),
            priced("dear", 9.0, 9.0),
            priced("dry-cheap", 0.1, 0.1),
            priced("mid", 1.0, 1.0),
            priced("sick-dry", 0.01, 0.01),
            priced("nan-headroom", 0.01, 0.01),
        ];
        c[0].healthy = false;
        c[2].headroom = 0.0;
        c[4].healthy = false;
        c[4].headroom = -0.5;
        c[5].headroom = f32::NAN;
        let r = request(100, None);
        assert_eq!(order(&r, &c, &Config::default()), vec![3, 1, 5, 2, 0, 4]);
        // Unpriced placement applies within each tier, not across them.
        let mut u = [candidate("sick-free"), priced("ok", 1.0, 1.0)];
        u[0].healthy = false;
        let first = Config {
            unpriced: Unpriced::First,
            ..Config::default()
        };
        assert_eq!(order(&r, &u, &first), vec![1, 0]);
    }

    #[test]
    fn every_index_exactly_once() {
        for_random_sets(|r, c| {
            for unpriced in [Unpriced::First, Unpriced::Last] {
                let config = Config {
                    expected_output_tokens: r.input_tokens % 1000,
                    unpriced,
                };
                assert_permutation(&order(r, c, &config), c.len());
            }
        });
        assert!(order(&request(1, None), &[], &Config::default()).is_empty());
    }
}
