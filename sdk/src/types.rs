//! Types every plugin kind shares, plus small constructors.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

pub use crate::bindings::base::switchyard::plugin::types::{LogLevel, Metadata, PluginKind, Usage};

impl Metadata {
    /// Metadata for a plugin; pass `env!("CARGO_PKG_VERSION")` as `version` so
    /// that logs and `switchyard check` show the version that was built.
    /// `kind` must match the export macro the crate uses, or the host refuses
    /// to load the plugin.
    pub fn new(name: &str, version: &str, kind: PluginKind, capabilities: &[&str]) -> Self {
        Metadata {
            name: name.to_string(),
            version: version.to_string(),
            kind,
            capabilities: capabilities
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<String>>(),
        }
    }
}

impl Usage {
    /// Token counts as the upstream reported them.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
        }
    }
}
