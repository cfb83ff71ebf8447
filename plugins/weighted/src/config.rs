//! The plugin's config block.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `{"weights": {"<deployment>": n}}`, every part optional.
///
/// Unknown fields are an error rather than ignored, so that a typo such as
/// `"weight"` is reported (once, in the log) instead of silently doing nothing.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Weights that replace the deployment's configured `weight`, by
    /// deployment name. A `BTreeMap`: no hashing seed to draw, and lookups in
    /// a handful of names are as fast as hashing one.
    pub weights: BTreeMap<String, u32>,
}

impl Config {
    /// Parses the block; `null` (no block) is the default config.
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<Option<Self>>(json).map(Option::unwrap_or_default)
    }

    /// The weight to use for deployment `name`, configured with `weight`.
    pub fn weight(&self, name: &str, weight: u32) -> u32 {
        if self.weights.is_empty() {
            return weight;
        }
        self.weights.get(name).copied().unwrap_or(weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_null_are_defaults() {
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
        assert_eq!(Config::parse("null").unwrap(), Config::default());
        assert_eq!(Config::default().weight("a", 7), 7);
    }

    #[test]
    fn overrides_by_deployment() {
        let c = Config::parse(r#"{"weights": {"a": 0, "b": 5}}"#).unwrap();
        assert_eq!(
            (c.weight("a", 3), c.weight("b", 1), c.weight("c", 2)),
            (0, 5, 2)
        );
    }

    #[test]
    fn bad_blocks_are_errors() {
        for bad in [
            r#"{"weight": {"a": 1}}"#,
            r#"{"weights": {"a": -1}}"#,
            r#"{"weights": {"a": 1.5}}"#,
            r#"{"weights": ["a"]}"#,
            "",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }
}
