//! The ordering itself, free of host calls so that it is unit-tested natively.

use switchyard_sdk::Candidate;

use crate::config::{Config, Metric};
use switchyard_sdk::rng::Rng;

/// How much of a last resort a candidate is, as in `priority`: 0 usable,
/// 1 healthy but out of rate-limit headroom (likely back once the limit's
/// window rolls over), 2 unhealthy, 3 unhealthy and exhausted.
fn tier(c: &Candidate) -> u8 {
    2 * u8::from(!c.healthy) + u8::from(c.headroom <= 0.0)
}

/// The latency of `c` in milliseconds that a request (`stream` or not)
/// should expect, or 0 when nothing is known.
///
/// First the window's percentile of what the request waits on: time to the
/// first token when streamed, the whole answer otherwise. Missing (0: no
/// such traffic in the window), the host's running average, which covers
/// both kinds of call and outlives the window. Missing too, the window's
/// other figure: a rough stand-in (first tokens come sooner than whole
/// answers), but better than none.
pub fn latency_ms(c: &Candidate, stream: bool, metric: Metric) -> f32 {
    let r = &c.recent;
    let (answer, first_token) = match metric {
        Metric::P50 => (r.latency_p50_ms, r.ttft_p50_ms),
        Metric::P95 => (r.latency_p95_ms, r.ttft_p95_ms),
    };
    let (own, other) = if stream {
        (first_token, answer)
    } else {
        (answer, first_token)
    };
    // `> 0` also skips a NaN, which would otherwise sort as slowest or fastest.
    [own, c.latency_ms, other]
        .into_iter()
        .find(|&ms| ms > 0.0)
        .unwrap_or(0.0)
}

/// Every index of `candidates` once. All are sorted by ([`tier`], latency,
/// index), a deployment without a figure counting as fastest when
/// `explore_unknown` and as slowest otherwise. Then the first place goes to
/// the faster of two distinct deployments of the best tier drawn at random
/// (the first drawn on a tie, so unmeasured ones share evenly), and the
/// others keep their places behind it.
///
/// With k deployments in the best tier, the i-th fastest (from 0) comes
/// first with probability 2(k-1-i) / (k(k-1)): the fastest most, the slowest
/// never, so the first attempt never goes to the worst of several, while
/// no single deployment takes all the load unless there are only two.
///
/// `random` is asked for one seed, and only if there is a draw to make.
pub fn order(
    candidates: &[Candidate],
    stream: bool,
    config: &Config,
    mut random: impl FnMut() -> u64,
) -> Vec<u32> {
    let unknown = if config.explore_unknown {
        0.0
    } else {
        f32::INFINITY
    };
    let keys: Vec<(u8, f32)> = candidates
        .iter()
        .map(|c| {
            let ms = latency_ms(c, stream, config.metric);
            (tier(c), if ms > 0.0 { ms } else { unknown })
        })
        .collect();
    let key = |i: u32| keys[i as usize];

    let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
    // The index ends the comparison, so no two are equal and an unstable
    // sort (which never allocates) is as good as a stable one.
    order.sort_unstable_by(|&a, &b| {
        let ((tier_a, ms_a), (tier_b, ms_b)) = (key(a), key(b));
        (tier_a.cmp(&tier_b))
            .then(ms_a.total_cmp(&ms_b))
            .then(a.cmp(&b))
    });

    let best = order.first().map(|&i| key(i).0);
    let contenders = order
        .iter()
        .take_while(|&&i| Some(key(i).0) == best)
        .count();
    if contenders >= 2 {
        let mut rng = Rng::new(random());
        let k = contenders as u64;
        let a = rng.below(k) as usize;
        let mut b = rng.below(k - 1) as usize;
        if b >= a {
            b += 1;
        }
        let winner = if key(order[b]).1 < key(order[a]).1 {
            b
        } else {
            a
        };
        order[..=winner].rotate_right(1);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::Capabilities;

    fn candidate(healthy: bool, p50: f32) -> Candidate {
        let mut c = Candidate {
            healthy,
            supports: Capabilities::empty(),
            ..switchyard_sdk::testing::candidate("d")
        };
        c.recent.attempts = u32::from(p50 > 0.0) * 20;
        c.recent.success_rate = 1.0;
        c.recent.latency_p50_ms = p50;
        c.recent.latency_p95_ms = p50 * 2.0;
        c.recent.latency_p99_ms = p50 * 3.0;
        c
    }

    fn measured(p50s: &[f32]) -> Vec<Candidate> {
        p50s.iter().map(|&ms| candidate(true, ms)).collect()
    }

    /// How often each index comes first over `draws` seeded orders.
    fn first_shares(c: &[Candidate], config: &Config, draws: u64) -> Vec<f64> {
        let mut counts = vec![0u64; c.len()];
        for seed in 0..draws {
            counts[order(c, false, config, || seed)[0] as usize] += 1;
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

    const NO_DRAW: fn() -> u64 = || panic!("nothing to draw");

    #[test]
    fn figure_by_request_kind_with_fallbacks() {
        let mut c = candidate(true, 400.0);
        c.recent.ttft_p50_ms = 90.0;
        c.recent.ttft_p95_ms = 150.0;
        c.latency_ms = 300.0;
        assert_eq!(latency_ms(&c, false, Metric::P50), 400.0);
        assert_eq!(latency_ms(&c, true, Metric::P50), 90.0);
        assert_eq!(latency_ms(&c, false, Metric::P95), 800.0);
        assert_eq!(latency_ms(&c, true, Metric::P95), 150.0);
        // No streamed traffic in the window: the running average.
        c.recent.ttft_p50_ms = 0.0;
        assert_eq!(latency_ms(&c, true, Metric::P50), 300.0);
        // No running average either: whole answers stand in.
        c.latency_ms = 0.0;
        assert_eq!(latency_ms(&c, true, Metric::P50), 400.0);
        c.recent.latency_p50_ms = f32::NAN;
        assert_eq!(latency_ms(&c, true, Metric::P50), 0.0);
        assert_eq!(latency_ms(&candidate(true, 0.0), false, Metric::P50), 0.0);
    }

    #[test]
    fn two_choices_spread_first_picks_but_favour_the_faster() {
        // Best of two distinct of four: 3/6, 2/6, 1/6, 0 by rank.
        let c = measured(&[300.0, 100.0, 400.0, 200.0]);
        let got = first_shares(&c, &Config::default(), 10_000);
        assert_near(&got, &[1.0 / 6.0, 0.5, 0.0, 2.0 / 6.0], 0.03);
        assert_eq!(got[2], 0.0);
        // Behind the first, by latency.
        for seed in 0..100 {
            let o = order(&c, false, &Config::default(), || seed);
            let rest: Vec<u32> = [1, 3, 0, 2].into_iter().filter(|&i| i != o[0]).collect();
            assert_eq!(o[1..], rest);
        }
    }

    #[test]
    fn two_deployments_go_to_the_faster_one_alone_none_is_drawn() {
        let c = measured(&[250.0, 80.0]);
        assert_eq!(first_shares(&c, &Config::default(), 500), [0.0, 1.0]);
        assert_eq!(
            order(&measured(&[5.0]), false, &Config::default(), NO_DRAW),
            [0]
        );
        assert!(order(&[], true, &Config::default(), NO_DRAW).is_empty());
    }

    #[test]
    fn streamed_requests_rank_by_first_token() {
        let mut c = measured(&[100.0, 900.0]);
        c[0].recent.ttft_p50_ms = 80.0;
        c[1].recent.ttft_p50_ms = 20.0;
        assert_eq!(order(&c, false, &Config::default(), || 1), [0, 1]);
        assert_eq!(order(&c, true, &Config::default(), || 1), [1, 0]);
    }

    #[test]
    fn unknown_explored_by_draw_or_kept_back() {
        // One unknown among five: first whenever drawn, 2 times in 5.
        let c = measured(&[100.0, 0.0, 200.0, 300.0, 400.0]);
        let got = first_shares(&c, &Config::default(), 10_000);
        assert!((got[1] - 0.4).abs() <= 0.03, "{got:?}");
        assert!(order(&c, false, &Config::default(), || 3)[..2].contains(&1));
        let cautious = Config {
            explore_unknown: false,
            ..Config::default()
        };
        assert_eq!(first_shares(&c, &cautious, 1_000)[1], 0.0);
        assert_eq!(order(&c, false, &cautious, || 3)[4], 1);
        // All unknown: first picks spread evenly.
        let got = first_shares(&measured(&[0.0; 4]), &Config::default(), 10_000);
        assert_near(&got, &[0.25; 4], 0.03);
    }

    #[test]
    fn last_resorts_last_and_out_of_the_draw() {
        let mut c = vec![
            candidate(false, 1.0),  // 0: unhealthy, fastest
            candidate(true, 500.0), // 1
            candidate(true, 2.0),   // 2: exhausted
            candidate(true, 300.0), // 3
        ];
        c[2].headroom = 0.0;
        for seed in 0..200 {
            assert_eq!(order(&c, false, &Config::default(), || seed), [3, 1, 2, 0]);
        }
        // Nothing usable: the draw is among the best tier left.
        c[1].healthy = false;
        c[3].headroom = -0.1;
        let got = first_shares(&c, &Config::default(), 2_000);
        assert_eq!((got[2] + got[3], got[0] + got[1]), (1.0, 0.0));
    }

    #[test]
    fn every_index_exactly_once_in_tier_order() {
        let mut rng = Rng::new(7);
        for round in 0..2_000u64 {
            let n = rng.below(13) as usize;
            let c: Vec<Candidate> = (0..n)
                .map(|_| {
                    let p50 = [0.0, 50.0, 120.0, 120.0, 2_000.0][rng.below(5) as usize];
                    let mut c = candidate(rng.below(3) > 0, p50);
                    c.headroom = [0.0, 0.5, 1.0][rng.below(3) as usize];
                    c.latency_ms = [0.0, 75.0][rng.below(2) as usize];
                    c
                })
                .collect();
            let explore = round % 2 == 0;
            let config = Config {
                explore_unknown: explore,
                ..Config::default()
            };
            let o = order(&c, round % 3 == 0, &config, || round);
            let mut seen = o.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n as u32).collect::<Vec<_>>(), "{o:?}");
            assert!(
                o.windows(2)
                    .all(|w| tier(&c[w[0] as usize]) <= tier(&c[w[1] as usize]))
            );
        }
    }
}
