//! What a strategy's choices would have cost and how fast they would have
//! been, from the deployments' real figures: shared by `GET /admin/shadow`
//! (shadow decisions on live traffic) and `switchyard replay` (a strategy
//! over recorded traffic).
//!
//! The what-if cost of a decision is the request's real usage at the chosen
//! deployment's prices (the same tokens, billed elsewhere); its what-if
//! latency is the chosen deployment's real median over the window. The
//! live side is measured the same way from the deployment that served, so
//! the two columns compare like with like; the live side's billed cost is
//! reported beside it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// One request: which deployment each side chose, and what it used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// The live side: the deployment that served (or, for a failed
    /// request, the live order's first).
    pub live: Option<String>,
    /// The strategy under test's first choice (none: it failed, or there
    /// was no candidate).
    pub choice: Option<String>,
    /// The strategy's call failed.
    pub failed: bool,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// What the live request was billed (none: not known).
    pub billed: Option<f64>,
}

/// A deployment's prices, US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prices {
    pub input: f64,
    pub output: f64,
}

/// One side's totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Side {
    /// The requests' usage at the chosen deployments' prices.
    pub cost_usd: f64,
    /// The mean over requests of the chosen deployment's median latency
    /// (none when no chosen deployment has figures).
    pub latency_p50_ms: Option<f64>,
}

/// How often each side chose a deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Count {
    pub live: u64,
    pub candidate: u64,
}

/// A strategy's decisions, summarised.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub decisions: u64,
    /// Decisions where the strategy failed (no choice).
    pub failed: u64,
    /// The share of decisions with a choice that chose the live side's
    /// deployment (none without any).
    pub agreement: Option<f64>,
    #[serde(rename = "live_stats")]
    pub live: Side,
    /// What the live requests were billed (estimated usage included).
    pub live_billed_usd: f64,
    pub what_if: Side,
    pub by_deployment: BTreeMap<String, Count>,
}

/// Summarises `decisions` with the deployments' prices and median latencies.
/// A deployment without prices costs 0 (as the records do).
pub fn summarize(
    decisions: &[Decision],
    prices: &HashMap<String, Prices>,
    p50_ms: &HashMap<String, f64>,
) -> Summary {
    let mut s = Summary::default();
    let (mut agree, mut chose) = (0u64, 0u64);
    let mut live_latency = Mean::default();
    let mut what_if_latency = Mean::default();
    for d in decisions {
        s.decisions += 1;
        s.live_billed_usd += d.billed.unwrap_or(0.0);
        let cost = |name: &str| {
            prices.get(name).map_or(0.0, |p| {
                (f64::from(d.prompt_tokens) * p.input + f64::from(d.completion_tokens) * p.output)
                    / 1e6
            })
        };
        if let Some(live) = &d.live {
            s.live.cost_usd += cost(live);
            live_latency.add(p50_ms.get(live));
            s.by_deployment.entry(live.clone()).or_default().live += 1;
        }
        let Some(choice) = &d.choice else {
            s.failed += u64::from(d.failed);
            continue;
        };
        chose += 1;
        agree += u64::from(d.live.as_deref() == Some(choice.as_str()));
        s.what_if.cost_usd += cost(choice);
        what_if_latency.add(p50_ms.get(choice));
        s.by_deployment.entry(choice.clone()).or_default().candidate += 1;
    }
    s.agreement = (chose > 0).then(|| agree as f64 / chose as f64);
    s.live.latency_p50_ms = live_latency.get();
    s.what_if.latency_p50_ms = what_if_latency.get();
    s
}

#[derive(Default)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, v: Option<&f64>) {
        if let Some(v) = v {
            self.sum += v;
            self.n += 1;
        }
    }

    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// Every deployment's prices in `config` (one whose prices do not resolve
/// was refused at load, so it is left out here).
pub fn prices_of(config: &crate::config::Config) -> HashMap<String, Prices> {
    config
        .deployments
        .iter()
        .filter_map(|(name, d)| {
            let p = d.prices().ok()?;
            Some((
                name.clone(),
                Prices {
                    input: p.input,
                    output: p.output,
                },
            ))
        })
        .collect()
}

/// The median of each deployment's latencies.
pub fn medians(latencies: HashMap<String, Vec<f64>>) -> HashMap<String, f64> {
    latencies
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(name, mut v)| {
            v.sort_by(f64::total_cmp);
            let mid = v.len() / 2;
            let m = if v.len() % 2 == 1 {
                v[mid]
            } else {
                (v[mid - 1] + v[mid]) / 2.0
            };
            (name, m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(live: &str, choice: Option<&str>, p: u32, c: u32) -> Decision {
        Decision {
            live: Some(live.into()),
            failed: choice.is_none(),
            choice: choice.map(Into::into),
            prompt_tokens: p,
            completion_tokens: c,
            billed: Some(0.5),
        }
    }

    #[test]
    fn agreement_cost_and_latency_from_real_figures() {
        let prices = HashMap::from([
            (
                "big".to_string(),
                Prices {
                    input: 10.0,
                    output: 30.0,
                },
            ),
            (
                "small".to_string(),
                Prices {
                    input: 1.0,
                    output: 2.0,
                },
            ),
        ]);
        let p50 = HashMap::from([("big".to_string(), 400.0), ("small".to_string(), 100.0)]);
        let s = summarize(
            &[
                d("big", Some("big"), 1000, 1000),
                d("big", Some("small"), 1000, 1000),
                d("big", Some("small"), 1000, 1000),
                d("big", None, 1000, 1000),
            ],
            &prices,
            &p50,
        );
        assert_eq!(s.decisions, 4);
        assert_eq!(s.failed, 1);
        assert_eq!(s.agreement, Some(1.0 / 3.0));
        // 4 × (10 × 1000 + 30 × 1000) / 1e6 on the live side.
        assert!((s.live.cost_usd - 0.16).abs() < 1e-12, "{s:?}");
        // One big, two small; the failed decision costs nothing.
        assert!(
            (s.what_if.cost_usd - (0.04 + 2.0 * 0.003)).abs() < 1e-12,
            "{s:?}"
        );
        assert_eq!(s.live.latency_p50_ms, Some(400.0));
        assert_eq!(s.what_if.latency_p50_ms, Some(200.0));
        assert!((s.live_billed_usd - 2.0).abs() < 1e-12);
        assert_eq!(
            s.by_deployment["small"],
            Count {
                live: 0,
                candidate: 2
            }
        );
        assert_eq!(
            s.by_deployment["big"],
            Count {
                live: 4,
                candidate: 1
            }
        );
    }

    #[test]
    fn nothing_to_compare_says_so() {
        let s = summarize(&[], &HashMap::new(), &HashMap::new());
        assert_eq!(s.agreement, None);
        assert_eq!(s.what_if.latency_p50_ms, None);
        let s = summarize(&[d("x", None, 1, 1)], &HashMap::new(), &HashMap::new());
        assert_eq!((s.agreement, s.failed), (None, 1));
        // No candidate to choose from is not a failure.
        let none = Decision {
            failed: false,
            ..d("x", None, 1, 1)
        };
        assert_eq!(
            summarize(&[none], &HashMap::new(), &HashMap::new()).failed,
            0
        );
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        let m = medians(HashMap::from([
            ("a".to_string(), vec![3.0, 1.0, 2.0]),
            ("b".to_string(), vec![4.0, 1.0, 2.0, 3.0]),
            ("c".to_string(), vec![]),
        ]));
        assert_eq!(m["a"], 2.0);
        assert_eq!(m["b"], 2.5);
        assert!(!m.contains_key("c"));
    }
}
