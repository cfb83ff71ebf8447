//! Types every plugin kind shares, plus small constructors.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

pub use crate::bindings::base::switchyard::plugin::types::{LogLevel, Metadata, Usage};

impl Metadata {
    /// Metadata for a plugin; pass `env!("CARGO_PKG_VERSION")` as `version` so
    /// that logs and `switchyard check` show the version that was built.
    /// There is no kind to state: a plugin's kind is the interface its export
    /// macro exports, so the two can never disagree.
    pub fn new(name: &str, version: &str, capabilities: &[&str]) -> Self {
        Metadata {
            name: name.to_string(),
            version: version.to_string(),
            capabilities: capabilities
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<String>>(),
        }
    }
}

impl Usage {
    /// Token counts as the upstream reported them, with no cached prompt
    /// tokens, no reasoning tokens and no cache writes; add those with
    /// [`with_cached_prompt_tokens`](Self::with_cached_prompt_tokens),
    /// [`with_reasoning_tokens`](Self::with_reasoning_tokens) and
    /// [`with_cache_write_tokens`](Self::with_cache_write_tokens) when the
    /// upstream reports them. `prompt_tokens` and `completion_tokens` are
    /// totals: they include the cached, cache-write and reasoning tokens.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            cached_prompt_tokens: 0,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
        }
    }

    /// The same usage, with `n` of its prompt tokens served from the
    /// provider's prompt cache (usually billed at a discount).
    pub fn with_cached_prompt_tokens(mut self, n: u32) -> Self {
        self.cached_prompt_tokens = n;
        self
    }

    /// The same usage, with `n` of its prompt tokens written to the
    /// provider's prompt cache (Anthropic bills them at a premium).
    pub fn with_cache_write_tokens(mut self, n: u32) -> Self {
        self.cache_write_tokens = n;
        self
    }

    /// The same usage, with `n` of its completion tokens spent on hidden reasoning.
    pub fn with_reasoning_tokens(mut self, n: u32) -> Self {
        self.reasoning_tokens = n;
        self
    }
}
