//! The plugin's config block.

use serde::Deserialize;

/// From `plugins.config.quality`; every key is optional.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub weights: Weights,
    /// A weighted score below this fails the answer.
    pub threshold: f64,
}

/// How much each component counts, normalised to sum 1 when parsed so the
/// weighted score stays between 0 and 1 whatever scale the config uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub completeness: f64,
    pub relevance: f64,
    pub coherence: f64,
}

impl Default for Config {
    /// Completeness weighs most: a cut-off or empty answer is the failure a
    /// retry on another deployment most often fixes. Relevance is a word
    /// overlap, the weakest signal, so alone it cannot fail an answer.
    fn default() -> Self {
        Config {
            weights: Weights {
                completeness: 0.4,
                relevance: 0.35,
                coherence: 0.25,
            },
            threshold: 0.5,
        }
    }
}

/// The block as written. A weight left out keeps its default. Unknown keys
/// are refused so that a misspelt one is reported instead of ignored.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Given {
    weights: Option<GivenWeights>,
    threshold: Option<f64>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GivenWeights {
    completeness: Option<f64>,
    relevance: Option<f64>,
    coherence: Option<f64>,
}

impl Config {
    /// Parses the block; the error says what is wrong (the caller logs it
    /// once and uses the defaults: a typo must not fail every answer).
    pub fn parse(json: &str) -> Result<Self, String> {
        // Only an object: serde would also read a struct from an array.
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        let given: Given =
            serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| e.to_string())?;
        let d = Config::default();
        let g = given.weights.unwrap_or_default();
        let w = [
            g.completeness.unwrap_or(d.weights.completeness),
            g.relevance.unwrap_or(d.weights.relevance),
            g.coherence.unwrap_or(d.weights.coherence),
        ];
        let sum: f64 = w.iter().sum();
        if !(w.iter().all(|&x| x >= 0.0) && sum.is_finite() && sum > 0.0) {
            return Err("weights must be non-negative numbers, not all 0".into());
        }
        let threshold = given.threshold.unwrap_or(d.threshold);
        if !(0.0..=1.0).contains(&threshold) {
            return Err("threshold must be between 0 and 1".into());
        }
        Ok(Config {
            weights: Weights {
                completeness: w[0] / sum,
                relevance: w[1] / sum,
                coherence: w[2] / sum,
            },
            threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_block_is_the_defaults() {
        assert_eq!(Config::parse("{}"), Ok(Config::default()));
        let w = Config::default().weights;
        assert!((w.completeness + w.relevance + w.coherence - 1.0).abs() < 1e-9);
    }

    #[test]
    fn partial_weights_are_merged_and_normalised() {
        let c = Config::parse(r#"{"weights": {"coherence": 1.25}, "threshold": 0.7}"#).unwrap();
        // 0.4 + 0.35 + 1.25 = 2.
        assert!((c.weights.coherence - 0.625).abs() < 1e-9);
        assert!((c.weights.completeness - 0.2).abs() < 1e-9);
        assert_eq!(c.threshold, 0.7);
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        for bad in [
            r#"{"weights": {"completeness": -1}}"#,
            r#"{"weights": {"completeness": 0, "relevance": 0, "coherence": 0}}"#,
            r#"{"weights": {"completeness": 1e308, "relevance": 1e308}}"#,
            r#"{"weights": {"fluency": 1}}"#,
            r#"{"threshold": 1.5}"#,
            r#"{"threshold": "high"}"#,
            r#"{"treshold": 0.5}"#,
            "[0.5]",
            "not json",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }
}
