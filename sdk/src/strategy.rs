//! Routing strategies: order the candidate deployments of a route.

use alloc::string::String;
use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::bindings::strategy::exports::switchyard::plugin::strategy as wit;
use crate::types::Metadata;

pub use wit::{Candidate, Capabilities, ErrorShares, RequestSummary, TaskPriority, WindowStats};

impl ErrorShares {
    /// No failures (a window without traffic, or a clean one).
    pub const NONE: Self = Self {
        rate_limited: 0.0,
        overloaded: 0.0,
        timeout: 0.0,
        connect: 0.0,
        transport: 0.0,
        auth: 0.0,
        context_length_exceeded: 0.0,
        content_filtered: 0.0,
        permanent: 0.0,
        plugin: 0.0,
        other: 0.0,
    };

    /// The failed share of the window: every class together.
    pub fn total(&self) -> f32 {
        self.rate_limited
            + self.overloaded
            + self.timeout
            + self.connect
            + self.transport
            + self.auth
            + self.context_length_exceeded
            + self.content_filtered
            + self.permanent
            + self.plugin
            + self.other
    }
}

/// A routing strategy.
pub trait Strategy {
    /// Name, version and capability tags (the kind is implied by [`export_strategy!`](crate::export_strategy)).
    fn metadata() -> Metadata;

    /// Indices into `candidates` in the order the host should try them.
    /// Leave a candidate out to skip it. An index out of range or repeated
    /// makes the host ignore the answer and use the configured order, as does
    /// an `Err`, so a buggy strategy degrades routing instead of breaking it.
    /// State that must outlive one call (e.g. a rotation) belongs in
    /// [`counter_next`](crate::counter_next), not in statics.
    fn order(request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String>;
}

#[doc(hidden)]
pub struct StrategyExport<S>(PhantomData<S>);

impl<S: Strategy> wit::Guest for StrategyExport<S> {
    fn metadata() -> Metadata {
        S::metadata()
    }
    fn order(request: RequestSummary, candidates: Vec<Candidate>) -> Result<Vec<u32>, String> {
        S::order(&request, &candidates)
    }
}

/// Exports `$ty` (a [`Strategy`]) as this component's `strategy` interface.
/// Invoke it once, in the plugin crate's root; a crate exports one kind only.
#[macro_export]
macro_rules! export_strategy {
    ($ty:ty) => {
        // Native builds (unit tests of plugin logic) only check the trait:
        // the component export symbols are meaningful on wasm only.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn implements<T: $crate::Strategy>() {}
            implements::<$ty>();
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __SwitchyardStrategy = $crate::__private::StrategyExport<$ty>;
            $crate::__export_strategy_plugin_impl!(
                __SwitchyardStrategy with_types_in $crate::__private::strategy_bindings
            );
        };
    };
}
