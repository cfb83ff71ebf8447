//! Quality-aware routing: try the deployment whose answers the evaluators
//! scored best first, and demote those whose average falls below a floor.
//! It reads `quality`, the host's running average of evaluator scores per
//! deployment (1 before the first evaluation, so a new deployment is tried
//! early and gets measured). Demoting a deployment for a while after K
//! consecutive low scores, with an event, is the host's job, not this
//! plugin's: it only ranks by the average it is given. Nothing is dropped:
//! demoted, unhealthy and exhausted deployments are last resorts, in that
//! order of last (see `rank::order`).
//!
//! Config (`plugins.config.quality-aware`, optional): `{"min_quality": 0.6}`.

mod config;
mod rank;

use std::sync::OnceLock;

use switchyard_sdk::{
    Candidate, Metadata, RequestSummary, Strategy, export_strategy, log, plugin_config,
};

use crate::config::Config;

struct QualityAware;

impl Strategy for QualityAware {
    fn metadata() -> Metadata {
        Metadata::new("quality-aware", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(_request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        Ok(rank::order(candidates, config()))
    }
}

export_strategy!(QualityAware);
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
