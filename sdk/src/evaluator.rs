//! Response evaluators: check a final answer before the client gets it.

use alloc::string::String;
use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::bindings::evaluator::exports::switchyard::plugin::evaluator as wit;
use crate::types::Metadata;

pub use wit::Verdict;

/// A response evaluator.
pub trait Evaluator {
    /// Name, version and capability tags (the kind is implied by [`export_evaluator!`](crate::export_evaluator)).
    fn metadata() -> Metadata;

    /// Scores the canonical `response` JSON given the canonical `request` JSON.
    /// A failing [`Verdict`] on a non-streamed answer makes the host try the
    /// next candidate; an `Err` means the evaluator itself could not judge.
    fn evaluate(request: &str, response: &str) -> Result<Verdict, String>;
}

impl Verdict {
    /// A pass with score 1 and no reasons.
    pub fn pass() -> Self {
        Verdict {
            score: 1.0,
            pass: true,
            reasons: Vec::new(),
        }
    }

    /// A fail with `score` and one reason; say exactly what was wrong, it ends
    /// up in logs and in the error the client sees when every candidate fails.
    pub fn fail(score: f32, reason: impl Into<String>) -> Self {
        Verdict {
            score,
            pass: false,
            reasons: alloc::vec![reason.into()],
        }
    }
}

#[doc(hidden)]
pub struct EvaluatorExport<E>(PhantomData<E>);

impl<E: Evaluator> wit::Guest for EvaluatorExport<E> {
    fn metadata() -> Metadata {
        E::metadata()
    }
    fn evaluate(request: String, response: String) -> Result<Verdict, String> {
        E::evaluate(&request, &response)
    }
}

/// Exports `$ty` (an [`Evaluator`]) as this component's `evaluator` interface.
/// Invoke it once, in the plugin crate's root; a crate exports one kind only.
#[macro_export]
macro_rules! export_evaluator {
    ($ty:ty) => {
        // Native builds (unit tests of plugin logic) only check the trait:
        // the component export symbols are meaningful on wasm only.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn implements<T: $crate::Evaluator>() {}
            implements::<$ty>();
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __SwitchyardEvaluator = $crate::__private::EvaluatorExport<$ty>;
            $crate::__export_evaluator_plugin_impl!(
                __SwitchyardEvaluator with_types_in $crate::__private::evaluator_bindings
            );
        };
    };
}
