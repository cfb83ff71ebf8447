//! Suitability routing: rank deployments by a weighted score of capability
//! (features and evaluated quality), cost, performance and availability,
//! with more weight on quality and speed for high- and critical-priority
//! requests. See `score::rank` for exactly how each part is computed.
//! Health and rate-limit headroom come first, but nothing is dropped: an
//! unhealthy or exhausted deployment is still a last resort.
//!
//! Config (`plugins.config.suitability`, every key optional):
//! `{"weights": {"capability": 0.3, "cost": 0.25, "performance": 0.25,
//! "availability": 0.2}, "high_weights": {"capability": 0.35, "cost": 0.1,
//! "performance": 0.35, "availability": 0.2}, "expected_output_tokens": 256,
//! "explain": false}` (see `config.rs`).

mod config;
mod explain;
mod figures;
mod score;

use std::sync::OnceLock;

use switchyard_sdk::{
    Candidate, Metadata, RequestSummary, Strategy, export_strategy, log, plugin_config,
};

use crate::config::Config;

struct Suitability;

impl Strategy for Suitability {
    fn metadata() -> Metadata {
        Metadata::new("suitability", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        let config = config();
        let ranking = score::rank(request, candidates, config);
        // Built only when asked for: formatting costs more than ranking.
        if config.explain {
            log::debug(&explain::explain(&ranking, candidates));
        }
        Ok(ranking.order)
    }
}

export_strategy!(Suitability);
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
