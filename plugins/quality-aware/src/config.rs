//! The plugin's config block.

use serde::Deserialize;

/// From `plugins.config.quality-aware`. Unknown keys are refused so that a
/// misspelt one is reported instead of silently doing nothing.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Deployments whose average evaluator score is below this (0 to 1) go
    /// after all the others of their health tier.
    pub min_quality: f32,
}

impl Default for Config {
    fn default() -> Self {
        Self { min_quality: 0.6 }
    }
}

impl Config {
    /// Parses the block, or returns the defaults with a warning to log when
    /// it is not valid: a typo in the config must not fail every request.
    pub fn parse(json: &str) -> (Self, Option<String>) {
        let error = match from_object::<Self>(json) {
            Ok(config) if (0.0..=1.0).contains(&config.min_quality) => return (config, None),
            Ok(config) => format!("min_quality {} is not between 0 and 1", config.min_quality),
            Err(e) => e.to_string(),
        };
        (
            Self::default(),
            Some(format!("invalid config ({error}); using the defaults")),
        )
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
        assert_eq!(
            Config::parse(r#"{"min_quality": 0.85}"#),
            (Config { min_quality: 0.85 }, None)
        );
        assert_eq!(Config::parse(r#"{"min_quality": 0}"#).0.min_quality, 0.0);
    }

    #[test]
    fn bad_blocks_fall_back_to_the_defaults_with_a_warning() {
        for bad in [
            r#"{"min_quality": 1.5}"#,
            r#"{"min_quality": -0.1}"#,
            r#"{"min_quality": "high"}"#,
            r#"{"minquality": 0.7}"#,
            "[]",
            "[0.7]",
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
