//! The plugin's config block.

use serde::Deserialize;

/// `{"metric": "p50" | "p95", "explore_unknown": bool}`, every part optional.
///
/// Unknown fields are an error rather than ignored, so that a typo such as
/// `"explore"` is reported (once, in the log) instead of silently doing nothing.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which percentile of the recent window to rank by.
    pub metric: Metric,
    /// Whether a deployment with no latency figure at all (new, or idle
    /// through the whole window) counts as fastest, so that it gets measured
    /// (`true`, the default), or as slowest, so that only measured
    /// deployments are tried first (`false`).
    ///
    /// Exploring is bounded: an unknown deployment wins the two-choice draw
    /// only when it is drawn, about 2 requests in n, and its first answer
    /// (or first streamed chunk) gives it a figure: the host's running
    /// average `latency_ms` moves at once, the window within a second.
    pub explore_unknown: bool,
}

/// A percentile of the monitor's window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// The median: the typical wait.
    #[default]
    P50,
    /// The 95th percentile: favours deployments that are rarely slow, at
    /// the price of reacting to fewer, noisier samples.
    P95,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            metric: Metric::P50,
            explore_unknown: true,
        }
    }
}

impl Config {
    /// Parses the block; `null` (no block) is the default config.
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<Option<Self>>(json).map(Option::unwrap_or_default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        for empty in ["{}", "null"] {
            let c = Config::parse(empty).unwrap();
            assert_eq!(
                c,
                Config {
                    metric: Metric::P50,
                    explore_unknown: true
                }
            );
        }
    }

    #[test]
    fn fields() {
        let c = Config::parse(r#"{"metric": "p95", "explore_unknown": false}"#).unwrap();
        assert_eq!(
            c,
            Config {
                metric: Metric::P95,
                explore_unknown: false
            }
        );
        let c = Config::parse(r#"{"explore_unknown": false}"#).unwrap();
        assert_eq!(c.metric, Metric::P50);
    }

    #[test]
    fn bad_blocks_are_errors() {
        for bad in [
            r#"{"metric": "p99"}"#,
            r#"{"metric": "P50"}"#,
            r#"{"explore": true}"#,
            r#"{"explore_unknown": "yes"}"#,
            "",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }
}
