//! Weighted random routing: each request tries the route's deployments in a
//! random order drawn by weight, so over many requests a deployment of weight
//! 3 comes first three times as often as one of weight 1.
//!
//! Unlike `round-robin`, nothing is shared between requests: no host
//! counter, no strict rotation, just one host random number per request.
//! That keeps the share right even when many gateways or instances route the
//! same traffic, at the price of short-run streaks.
//!
//! Healthy deployments with rate-limit headroom come first; the others are
//! never dropped but kept last, as a last resort (see [`order`]).
//!
//! Config (optional): `{"weights": {"<deployment>": n}}` overrides the
//! weight configured on the deployment, e.g. to shift traffic without
//! touching the route. Anything else, or a malformed block, is logged once
//! and ignored (see [`config`]).

mod config;
mod order;

use std::sync::OnceLock;

use switchyard_sdk::{
    Candidate, Metadata, RequestSummary, Strategy, export_strategy, log, plugin_config, random_u64,
};

use config::Config;

struct Weighted;

impl Strategy for Weighted {
    fn metadata() -> Metadata {
        Metadata::new("weighted", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(_request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        Ok(order::order(candidates, config(), random_u64))
    }
}

export_strategy!(Weighted);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// This instance's config, read and parsed on first use only: `order` runs on
/// every request and has no time for a host call and JSON parsing. The host
/// replaces instances when the config changes, so the cache never goes stale.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::parse(&plugin_config()).unwrap_or_else(|e| {
            // Once per instance: failing every request over a typo would take
            // the route down; the configured weights still make sense.
            log::warn(&format!(
                "weighted: ignoring bad config ({e}); using defaults"
            ));
            Config::default()
        })
    })
}
