//! The plugin's config block.

use serde::Deserialize;

/// From `plugins.config.suitability`; every key is optional.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Weights for low- and normal-priority requests.
    pub weights: Weights,
    /// Weights for high- and critical-priority requests: more on quality and
    /// speed, less on price, since these are the requests worth paying for.
    pub high_weights: Weights,
    /// Answer tokens to expect when pricing a request, as in `cost-aware`:
    /// the estimate without `max_tokens`, a cap on it with.
    pub expected_output_tokens: u32,
    /// Log each ranking at debug level. Off by default: a plugin cannot see
    /// the host's log level, and formatting the line costs more than the
    /// ranking itself (the host allows a strategy call about 3 µs).
    pub explain: bool,
}

/// How much each component counts. Normalised to sum 1 when parsed, so
/// scores stay between 0 and 1 whatever scale the config uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub capability: f64,
    pub cost: f64,
    pub performance: f64,
    pub availability: f64,
}

impl Weights {
    pub const NORMAL: Self = Self {
        capability: 0.30,
        cost: 0.25,
        performance: 0.25,
        availability: 0.20,
    };
    pub const HIGH: Self = Self {
        capability: 0.35,
        cost: 0.10,
        performance: 0.35,
        availability: 0.20,
    };

    /// `given` over `self`, scaled to sum 1; `None` for a negative or
    /// non-finite weight, or when they are all 0.
    fn merged(self, given: Option<GivenWeights>) -> Option<Self> {
        let g = given.unwrap_or_default();
        let w = [
            g.capability.unwrap_or(self.capability),
            g.cost.unwrap_or(self.cost),
            g.performance.unwrap_or(self.performance),
            g.availability.unwrap_or(self.availability),
        ];
        let sum: f64 = w.iter().sum();
        let valid = w.iter().all(|&x| x >= 0.0) && sum.is_finite() && sum > 0.0;
        valid.then(|| Self {
            capability: w[0] / sum,
            cost: w[1] / sum,
            performance: w[2] / sum,
            availability: w[3] / sum,
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            weights: Weights::NORMAL,
            high_weights: Weights::HIGH,
            expected_output_tokens: 256,
            explain: false,
        }
    }
}

/// The block as written. A weight left out keeps its default for that set
/// (so `{"high_weights": {"cost": 0}}` changes one figure, not four).
/// Unknown keys are refused so that a misspelt one is reported instead of
/// silently doing nothing.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Given {
    weights: Option<GivenWeights>,
    high_weights: Option<GivenWeights>,
    expected_output_tokens: Option<u32>,
    explain: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GivenWeights {
    capability: Option<f64>,
    cost: Option<f64>,
    performance: Option<f64>,
    availability: Option<f64>,
}

impl Config {
    /// Parses the block, or returns the defaults with a warning to log when
    /// it is not valid: a typo in the config must not fail every request.
    pub fn parse(json: &str) -> (Self, Option<String>) {
        let error = match from_object::<Given>(json) {
            Ok(given) => match Self::from_given(given) {
                Some(config) => return (config, None),
                None => "weights must be non-negative numbers, not all 0".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        (
            Self::default(),
            Some(format!("invalid config ({error}); using the defaults")),
        )
    }

    fn from_given(given: Given) -> Option<Self> {
        let defaults = Self::default();
        Some(Self {
            weights: Weights::NORMAL.merged(given.weights)?,
            high_weights: Weights::HIGH.merged(given.high_weights)?,
            expected_output_tokens: given
                .expected_output_tokens
                .unwrap_or(defaults.expected_output_tokens),
            explain: given.explain.unwrap_or(defaults.explain),
        })
    }
}

/// `T` from a JSON object. Only an object: serde would also read a struct
/// from an array of its fields in order, which no one means in a config.
fn from_object<T: serde::de::DeserializeOwned>(json: &str) -> serde_json::Result<T> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)?;
    serde_json::from_value(serde_json::Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn defaults_sum_to_one() {
        let (config, warning) = Config::parse("{}");
        assert_eq!((config, warning), (Config::default(), None));
        for w in [Weights::NORMAL, Weights::HIGH] {
            assert!(close(
                w.capability + w.cost + w.performance + w.availability,
                1.0
            ));
        }
    }

    #[test]
    fn partial_weights_keep_their_set_defaults_and_are_normalised() {
        let (config, warning) = Config::parse(
            r#"{"weights": {"cost": 1.25}, "high_weights": {"cost": 0},
                "expected_output_tokens": 50, "explain": true}"#,
        );
        assert_eq!(warning, None);
        // 0.30 + 1.25 + 0.25 + 0.20 = 2.
        let w = config.weights;
        assert!(close(w.cost, 0.625) && close(w.capability, 0.15), "{w:?}");
        // 0.35 + 0 + 0.35 + 0.20 = 0.9.
        let h = config.high_weights;
        assert!(
            close(h.cost, 0.0) && close(h.performance, 0.35 / 0.9),
            "{h:?}"
        );
        assert_eq!(config.expected_output_tokens, 50);
        assert!(config.explain);
    }

    #[test]
    fn bad_blocks_fall_back_to_the_defaults_with_a_warning() {
        for bad in [
            r#"{"weights": {"cost": -0.1}}"#,
            r#"{"weights": {"capability": 0, "cost": 0, "performance": 0, "availability": 0}}"#,
            r#"{"high_weights": {"cost": 1e308, "performance": 1e308}}"#,
            r#"{"weights": {"speed": 0.5}}"#,
            r#"{"weight": {}}"#,
            r#"{"explain": "yes"}"#,
            "[]",
        ] {
            let (config, warning) = Config::parse(bad);
            assert_eq!(config, Config::default(), "{bad}");
            assert!(
                warning.is_some_and(|w| w.contains("invalid config")),
                "{bad}"
            );
        }
    }
}
