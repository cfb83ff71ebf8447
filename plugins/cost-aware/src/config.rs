//! The plugin's config block.

use serde::Deserialize;

/// How the strategy estimates and ranks, from `plugins.config.cost-aware`.
/// Unknown keys are refused so that a misspelt one is reported instead of
/// silently doing nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Answer tokens to expect: the estimate when the request sets no
    /// `max_tokens`, and a cap on it when it does, since a client's limit is
    /// a ceiling, usually far above what the answer will use.
    pub expected_output_tokens: u32,
    /// Where deployments without prices go among equally healthy ones.
    pub unpriced: Unpriced,
}

/// Placement of deployments with neither an input nor an output price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unpriced {
    /// Before the priced ones: e.g. self-hosted models that cost nothing.
    First,
    /// After the priced ones (default): an unknown price may be a high one.
    #[default]
    Last,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            expected_output_tokens: 256,
            unpriced: Unpriced::Last,
        }
    }
}

impl Config {
    /// Parses the block, or returns the defaults with a warning to log when
    /// it is not valid: a typo in the config must not fail every request.
    pub fn parse(json: &str) -> (Self, Option<String>) {
        match from_object(json) {
            Ok(config) => (config, None),
            Err(e) => (
                Self::default(),
                Some(format!("invalid config ({e}); using the defaults")),
            ),
        }
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

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(Config::parse("{}"), (Config::default(), None));
        let (config, warning) =
            Config::parse(r#"{"expected_output_tokens": 1000, "unpriced": "first"}"#);
        assert_eq!(warning, None);
        assert_eq!(config.expected_output_tokens, 1000);
        assert_eq!(config.unpriced, Unpriced::First);
    }

    #[test]
    fn bad_blocks_fall_back_to_the_defaults_with_a_warning() {
        for bad in [
            r#"{"unpriced": "middle"}"#,
            r#"{"expected_output_tokens": -1}"#,
            r#"{"expected_output_token": 10}"#,
            "null",
            "[]",
            "[300]",
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
