//! The Switchyard plugin SDK.
//!
//! A Switchyard plugin is a WebAssembly component that implements one of the
//! three worlds of `wit/v0.2/plugin.wit` (`switchyard:plugin@0.2.0`): a
//! provider **adapter**, a routing **strategy** or a response **evaluator**.
//! This crate hides the generated component bindings: implement one small
//! trait and invoke one macro.
//!
//! ```
//! use switchyard_sdk::{Evaluator, Metadata, Verdict, export_evaluator};
//!
//! struct NonEmpty;
//!
//! impl Evaluator for NonEmpty {
//!     fn metadata() -> Metadata {
//!         Metadata::new("non-empty", env!("CARGO_PKG_VERSION"), &[])
//!     }
//!     fn evaluate(_request: &str, response: &str) -> Result<Verdict, String> {
//!         switchyard_sdk::log::debug("checking an answer");
//!         Ok(if response.contains("\"content\":\"\"") {
//!             Verdict::fail(0.0, "empty content")
//!         } else {
//!             Verdict::pass()
//!         })
//!     }
//! }
//!
//! export_evaluator!(NonEmpty);
//! ```
//!
//! Adapters also parse streams. The host frames a streamed body into events
//! and keeps the parser between calls as bytes, so a [`StreamParser`] handles
//! one event at a time and says how to save and restore itself; the SDK does
//! the rest (see [`stream`]). [`run`] calls an adapter exactly as the host
//! does, for unit tests.
//!
//! Build the crate as a `cdylib` for a wasm target (see `scripts/build-plugins`);
//! the output is a component the gateway loads from its plugin folder.
//!
//! Why one world per macro: a plugin's kind is the interface it exports, and
//! a component must export exactly one. The bindings of all kinds can live in
//! this crate at once because the part of the component type that declares an
//! export is emitted only where its `export_*!` macro is expanded, i.e. in
//! the plugin crate, once.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;
// The generated bindings name their runtime as `switchyard_sdk::...`, so that
// the same paths resolve both here and inside plugin crates that expand the
// export macros.
extern crate self as switchyard_sdk;

mod bindings;
mod host;
mod types;

#[cfg(feature = "adapter")]
mod adapter;
#[cfg(feature = "canonical")]
pub mod canonical;
#[cfg(feature = "adapter")]
pub mod errors;
#[cfg(feature = "evaluator")]
mod evaluator;
#[cfg(feature = "adapter")]
mod headers;
#[cfg(feature = "strategy")]
pub mod rng;
#[cfg(feature = "adapter")]
pub mod run;
pub mod small_blocks;
#[cfg(feature = "strategy")]
mod strategy;
#[cfg(feature = "adapter")]
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "adapter")]
pub use adapter::*;
#[cfg(feature = "evaluator")]
pub use evaluator::*;
#[cfg(feature = "adapter")]
pub use headers::{
    HeaderLines, READ_BY_SDK, created_s, header, header_block, header_lines, parse_duration_ms,
    read_by_sdk_and, retry_after_ms, rfc3339_s,
};
pub use host::{counter_next, log, now_ns, plugin_config, random_u64};
pub use small_blocks::SmallBlocks;
#[cfg(feature = "strategy")]
pub use strategy::*;
#[cfg(feature = "adapter")]
pub use stream::{StateReader, StateWriter, StreamEvent, StreamOutput, StreamParser};
pub use types::{LogLevel, Metadata, Usage};

/// Implementation details the export macros expand to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    #[cfg(feature = "adapter")]
    pub use crate::adapter::AdapterExport;
    #[cfg(feature = "adapter")]
    pub use crate::bindings::adapter as adapter_bindings;
    #[cfg(feature = "evaluator")]
    pub use crate::bindings::evaluator as evaluator_bindings;
    #[cfg(feature = "strategy")]
    pub use crate::bindings::strategy as strategy_bindings;
    #[cfg(feature = "evaluator")]
    pub use crate::evaluator::EvaluatorExport;
    #[cfg(feature = "strategy")]
    pub use crate::strategy::StrategyExport;
}
