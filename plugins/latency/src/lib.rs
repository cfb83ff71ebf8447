//! Latency routing: send each request where it is likely to be answered
//! soonest, judged by the performance monitor's recent figures.
//!
//! A streamed request is ranked by time to the first token, which is what
//! its client waits on; any other by the latency of whole answers. Always
//! sending everything to the single fastest deployment would overload it
//! (and the figures only move over the monitor's window, minutes), so the
//! first deployment to try is the faster of two drawn at random ("power of
//! two choices"): the faster ones take most of the traffic, the slowest none.
//! The fallbacks follow by latency.
//!
//! Healthy deployments with rate-limit headroom come first; the others are
//! never dropped but kept last, as a last resort (see [`order::order`]).
//!
//! Config, every field optional:
//! `{"metric": "p50" | "p95", "explore_unknown": true | false}`
//! (defaults `"p50"`, `true`); see [`config::Config`]. A malformed block is
//! logged once and the defaults used.

mod config;
mod order;

use std::sync::OnceLock;

use switchyard_sdk::{
    Candidate, Metadata, RequestSummary, Strategy, export_strategy, log, plugin_config, random_u64,
};

use config::Config;

struct Latency;

impl Strategy for Latency {
    fn metadata() -> Metadata {
        Metadata::new("latency", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        Ok(order::order(
            candidates,
            request.stream,
            config(),
            random_u64,
        ))
    }
}

export_strategy!(Latency);
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
            // the route down, and the defaults route sensibly.
            log::warn(&format!(
                "latency: ignoring bad config ({e}); using defaults"
            ));
            Config::default()
        })
    })
}
