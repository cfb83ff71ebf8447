//! {{name}}: a Switchyard routing strategy.
//!
//! Build: `cargo build --release --target wasm32-wasip2` (or the gateway's
//! `scripts/build-plugins` recipe), then copy
//! `target/wasm32-wasip2/release/{{name}}.wasm` into the gateway's plugins folder.

use switchyard_sdk::{Candidate, Metadata, RequestSummary, Strategy, export_strategy};

struct Plugin;

impl Strategy for Plugin {
    fn metadata() -> Metadata {
        Metadata::new("{{name}}", env!("CARGO_PKG_VERSION"), &[])
    }

    /// Healthy deployments first, then by configured priority.
    fn order(_request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        let mut order: Vec<u32> = (0..candidates.len() as u32).collect();
        order.sort_by_key(|i| {
            let c = &candidates[*i as usize];
            (!c.healthy, c.priority)
        });
        Ok(order)
    }
}

export_strategy!(Plugin);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();
