//! {{name}}: a Switchyard response evaluator.
//!
//! Build: `cargo build --release --target wasm32-wasip2`, then copy the
//! `.wasm` into the gateway's plugins folder.

use switchyard_sdk::{Evaluator, Metadata, Verdict, export_evaluator};

struct Plugin;

impl Evaluator for Plugin {
    fn metadata() -> Metadata {
        Metadata::new("{{name}}", env!("CARGO_PKG_VERSION"), &[])
    }

    /// Fails answers whose first choice has no content.
    fn evaluate(_request: &str, response: &str) -> Result<Verdict, String> {
        Ok(if response.contains("\"content\":\"\"") {
            Verdict::fail(0.0, "empty content")
        } else {
            Verdict::pass()
        })
    }
}

export_evaluator!(Plugin);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();
