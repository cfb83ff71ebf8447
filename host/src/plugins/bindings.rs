//! Host-side bindings generated from `wit/plugin.wit`.
//!
//! One `bindgen!` over the `host-view` world, which imports the host interface
//! and exports all three plugin interfaces. A real plugin exports just one of
//! them; the runtime loads only the interface a component actually has (via
//! each interface's `GuestIndices`), so one set of generated types serves every
//! kind and nothing is converted between near-identical copies.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "host-view",
});

pub use self::switchyard::plugin::types;
pub use exports::switchyard::plugin::{adapter, evaluator, strategy};

/// The fully qualified export names the runtime looks for, by kind.
pub const ADAPTER_EXPORT: &str = "switchyard:plugin/adapter@0.1.0";
pub const STRATEGY_EXPORT: &str = "switchyard:plugin/strategy@0.1.0";
pub const EVALUATOR_EXPORT: &str = "switchyard:plugin/evaluator@0.1.0";
