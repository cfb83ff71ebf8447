//! The scoring and the ordering: pure, so they are tested natively.

use switchyard_sdk::{Candidate, RequestSummary, TaskPriority};

use crate::config::{Config, Weights};
use crate::figures::{cost, expected_output, extra_share, positive, success_rate, tier, unit};

#[cfg(test)]
mod tests;

/// The performance component of a deployment with neither a latency nor a
/// throughput figure yet: middling, so that an idle deployment is neither
/// preferred to a proven fast one nor buried under a proven slow one.
pub const UNKNOWN_PERFORMANCE: f64 = 0.5;

/// A candidate's four components, each 0 to 1 relative to the best of the
/// candidates (see [`rank`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Parts {
    pub capability: f64,
    pub cost: f64,
    pub performance: f64,
    pub availability: f64,
}

/// One candidate's figures, its parts and its weighted score.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub tier: u8,
    raw: Raw,
    pub parts: Parts,
    pub score: f64,
}

/// The result of [`rank`]: the order for the host, and the entries (by
/// candidate index) for the explanation.
pub struct Ranking {
    pub order: Vec<u32>,
    pub entries: Vec<Entry>,
    /// Whether the high-priority weights were used.
    pub high: bool,
}

/// Scores every candidate and orders them by
/// 1. tier: healthy with headroom, healthy but exhausted (headroom <= 0),
///    unhealthy, unhealthy and exhausted, as in every bundled strategy:
///    a deployment that is down is a last resort, however well it scores;
/// 2. score, highest first: the weighted sum of the parts, with
///    `high_weights` for high and critical requests, `weights` otherwise;
/// 3. the configured order.
///
/// Each part is normalised against the best candidate, proportionally (the
/// best gets 1, one twice as dear or slow 0.5), so a 1 % difference moves a
/// score by about 1 % of the weight, not by all of it as min-max scaling
/// would:
/// - capability: the mean of (a) the share of the capability flags the
///   request does not need that the deployment supports (its needs are met
///   by every candidate; more features hint at a stronger model) and (b) the
///   evaluators' average quality; divided by the best such mean;
/// - cost: the cheapest estimate (as `cost-aware`'s) divided by this one;
///   0 without any price, which may well be a high one;
/// - performance: the mean of the known of (a) best recent p50 latency
///   divided by this one (time to first token for streamed requests) and
///   (b) recent output tokens per second divided by the best;
///   [`UNKNOWN_PERFORMANCE`] with neither;
/// - availability: success rate × headroom, 0 when unhealthy, divided by the
///   best; the success rate is the recent window's, or 1 - the host's error
///   rate without traffic in the window.
///
/// NaN, infinite or negative figures count as unknown or 0, never as best.
/// Allocates the order and one scratch vector of entries, nothing else.
pub fn rank(request: &RequestSummary, candidates: &[Candidate], config: &Config) -> Ranking {
    let high = matches!(
        request.priority,
        TaskPriority::High | TaskPriority::Critical
    );
    let weights = if high {
        &config.high_weights
    } else {
        &config.weights
    };
    let output_tokens = expected_output(request.max_output_tokens, config.expected_output_tokens);
    let mut best = Raw::WORST;
    let mut entries: Vec<Entry> = candidates
        .iter()
        .map(|c| {
            let raw = Raw::new(c, request, output_tokens);
            best = best.best(&raw);
            Entry {
                tier: tier(c),
                raw,
                parts: Parts::default(),
                score: 0.0,
            }
        })
        .collect();
    let scale = Scale::new(&best);
    for e in &mut entries {
        e.parts = e.raw.normalised(&scale);
        e.score = e.parts.weighted(weights);
    }
    let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
    // Unstable is fine: the index is the last key, so no two compare equal.
    order.sort_unstable_by(|&a, &b| {
        let (x, y) = (&entries[a as usize], &entries[b as usize]);
        x.tier
            .cmp(&y.tier)
            .then(y.score.total_cmp(&x.score))
            .then(a.cmp(&b))
    });
    Ranking {
        order,
        entries,
        high,
    }
}

impl Parts {
    fn weighted(&self, w: &Weights) -> f64 {
        self.capability * w.capability
            + self.cost * w.cost
            + self.performance * w.performance
            + self.availability * w.availability
    }
}

/// A candidate's figures before normalisation. For the running best, the
/// `Option`s hold the best known value.
#[derive(Debug, Clone, Copy)]
struct Raw {
    capability: f64,
    /// Estimated dollars; `None` without prices.
    cost: Option<f64>,
    /// Milliseconds, `None` when unknown.
    latency: Option<f64>,
    /// Output tokens per second, `None` when unknown.
    throughput: Option<f64>,
    availability: f64,
}

impl Raw {
    /// The best of no candidates: anything beats it.
    const WORST: Self = Self {
        capability: 0.0,
        cost: None,
        latency: None,
        throughput: None,
        availability: 0.0,
    };

    fn new(c: &Candidate, request: &RequestSummary, output_tokens: u32) -> Self {
        let recent = &c.recent;
        let latency = if request.stream {
            recent.ttft_p50_ms
        } else {
            recent.latency_p50_ms
        };
        let availability = if c.healthy {
            success_rate(c) * unit(c.headroom)
        } else {
            0.0
        };
        Self {
            capability: (extra_share(c.supports, request.needs) + unit(c.quality)) / 2.0,
            cost: cost(c, request.input_tokens, output_tokens),
            latency: positive(latency),
            throughput: positive(recent.output_tokens_per_second),
            availability,
        }
    }

    fn best(&self, other: &Self) -> Self {
        Self {
            capability: self.capability.max(other.capability),
            cost: either(self.cost, other.cost, f64::min),
            latency: either(self.latency, other.latency, f64::min),
            throughput: either(self.throughput, other.throughput, f64::max),
            availability: self.availability.max(other.availability),
        }
    }

    fn normalised(&self, scale: &Scale) -> Parts {
        let latency = self
            .latency
            .zip(scale.latency)
            .map(|(x, b)| lower_better(x, b));
        let throughput = self.throughput.map(|x| x * scale.throughput);
        Parts {
            capability: self.capability * scale.capability,
            cost: self
                .cost
                .zip(scale.cost)
                .map_or(0.0, |(x, b)| lower_better(x, b)),
            performance: match (latency, throughput) {
                (Some(l), Some(t)) => (l + t) * 0.5,
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => UNKNOWN_PERFORMANCE,
            },
            availability: self.availability * scale.availability,
        }
    }
}

/// What turns raw figures into parts: the lowest cost and latency, which
/// divide by a candidate's own, and the reciprocals of the highest of the
/// rest, so that those cost a candidate a multiplication, not a division.
struct Scale {
    capability: f64,
    cost: Option<f64>,
    latency: Option<f64>,
    throughput: f64,
    availability: f64,
}

impl Scale {
    fn new(best: &Raw) -> Self {
        Self {
            capability: reciprocal(best.capability),
            cost: best.cost,
            latency: best.latency,
            throughput: best.throughput.map_or(0.0, reciprocal),
            availability: reciprocal(best.availability),
        }
    }
}

/// `1 / best`, or 0 when no candidate has any of the figure (so all get 0).
fn reciprocal(best: f64) -> f64 {
    if best > 0.0 { 1.0 / best } else { 0.0 }
}

/// The lowest figure `best` relative to `x`: 1 for the best.
fn lower_better(x: f64, best: f64) -> f64 {
    if x <= best { 1.0 } else { best / x }
}

/// `pick` of two known figures, or the known one.
fn either(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}
