//! Cost-aware routing: try the deployment where this request is estimated to
//! cost least first. The estimate is the prompt's tokens at the input price
//! plus the expected answer at the output price (see `rank.rs`); deployments
//! without prices go last by default, as they may well be the expensive ones.
//! Health and rate-limit headroom come first, but nothing is dropped: an
//! unhealthy or exhausted deployment is still a last resort.
//!
//! Config (`plugins.config.cost-aware`, every key optional):
//! `{"expected_output_tokens": 256, "unpriced": "last"}` (see `config.rs`).

mod config;
mod rank;

use std::sync::OnceLock;

use switchyard_sdk::{
    Candidate, Metadata, RequestSummary, Strategy, export_strategy, log, plugin_config,
};

use crate::config::Config;

struct CostAware;

impl Strategy for CostAware {
    fn metadata() -> Metadata {
        Metadata::new("cost-aware", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        Ok(rank::order(request, candidates, config()))
    }
}

export_strategy!(CostAware);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// This instance's config, read and parsed on its first call only: a host
/// call and a JSON parse are too dear for every request, and the host
/// replaces instances when the config changes, so the copy never goes stale.
/// A bad block is reported once and replaced by the defaults rather than
/// failing every request.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let (config, warning) = Config::parse(&plugin_config());
        if let Some(warning) = warning {
            log::warn(&warning);
        }
        config
    })
}
