//! A candidate's figures as the score uses them: sanitised, so that NaN,
//! infinite or negative inputs count as unknown or 0 and never as best.

use switchyard_sdk::{Candidate, Capabilities};

/// Among the capability flags `needs` leaves out, the share `supports` has:
/// 0 when the request needs them all (no one can offer more).
pub fn extra_share(supports: Capabilities, needs: Capabilities) -> f64 {
    let optional = Capabilities::all().difference(needs);
    let offered = supports.intersection(optional);
    match optional.bits().count_ones() {
        0 => 0.0,
        n => f64::from(offered.bits().count_ones()) / f64::from(n),
    }
}

/// A figure that is known only when positive and finite (the monitor
/// reports 0 for "no data").
pub fn positive(x: f32) -> Option<f64> {
    (x.is_finite() && x > 0.0).then_some(f64::from(x))
}

/// The answer tokens to price: the configured expectation, or the request's
/// own limit when that is lower.
pub fn expected_output(max_output_tokens: Option<u32>, expected: u32) -> u32 {
    max_output_tokens.map_or(expected, |max| max.min(expected))
}

/// Estimated US dollars for the request, `None` without any price; a
/// missing half of a price counts as free, cached-input prices are ignored.
pub fn cost(c: &Candidate, input_tokens: u32, output_tokens: u32) -> Option<f64> {
    let price = |p: f64| if p.is_finite() && p > 0.0 { p } else { 0.0 };
    let (input, output) = (price(c.input_cost_per_1m), price(c.output_cost_per_1m));
    if input == 0.0 && output == 0.0 {
        return None;
    }
    Some((f64::from(input_tokens) * input + f64::from(output_tokens) * output) * 1e-6)
}

/// Recent success rate: the window's figure with traffic in it, else
/// 1 - the host's error rate (without traffic the window reports 0).
pub fn success_rate(c: &Candidate) -> f64 {
    unit(if c.recent.attempts > 0 {
        c.recent.success_rate
    } else {
        1.0 - c.error_rate
    })
}

/// `x` clamped to 0..=1, NaN as 0.
pub fn unit(x: f32) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        f64::from(x.clamp(0.0, 1.0))
    }
}

/// 0: healthy with headroom, 1: healthy but exhausted, 2: unhealthy,
/// 3: unhealthy and exhausted. A NaN headroom counts as exhausted.
pub fn tier(c: &Candidate) -> u8 {
    let has_headroom = c.headroom > 0.0;
    (u8::from(!c.healthy) << 1) | u8::from(!has_headroom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::candidate;

    #[test]
    fn extra_share_counts_only_what_the_request_does_not_need() {
        let all = Capabilities::all();
        assert_eq!(extra_share(all, Capabilities::empty()), 1.0);
        assert_eq!(extra_share(Capabilities::TOOLS, Capabilities::TOOLS), 0.0);
        let tools_vision = Capabilities::TOOLS | Capabilities::VISION;
        assert_eq!(extra_share(tools_vision, Capabilities::TOOLS), 1.0 / 3.0);
        assert_eq!(extra_share(all, all), 0.0);
    }

    #[test]
    fn broken_figures_are_unknown_or_zero() {
        assert_eq!(positive(f32::NAN), None);
        assert_eq!(positive(f32::INFINITY), None);
        assert_eq!(positive(0.0), None);
        assert_eq!(positive(-3.0), None);
        assert_eq!(positive(2.5), Some(2.5));
        assert_eq!((unit(f32::NAN), unit(-1.0), unit(7.0)), (0.0, 0.0, 1.0));
        let mut c = candidate("c");
        (c.input_cost_per_1m, c.output_cost_per_1m) = (f64::NAN, -2.0);
        assert_eq!(cost(&c, 1000, 100), None);
        c.output_cost_per_1m = 2.0;
        assert!(cost(&c, 1000, 100).is_some_and(|d| (d - 0.0002).abs() < 1e-12));
        c.error_rate = 0.3;
        assert!((success_rate(&c) - 0.7).abs() < 1e-6);
        c.recent.attempts = 4;
        c.recent.success_rate = 0.25;
        assert_eq!(success_rate(&c), 0.25);
    }
}
