//! Test strategy whose `order` never returns: the host must interrupt it at
//! its deadline and keep serving (falling back to the configured order).

use switchyard_sdk::{Candidate, Metadata, RequestSummary, Strategy, export_strategy};

struct Spin;

impl Strategy for Spin {
    fn metadata() -> Metadata {
        Metadata::new("spin", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(_request: &RequestSummary, _candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        // `black_box` makes every iteration observable, so the optimiser can
        // neither remove the loop nor prove it endless and drop the function.
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n).wrapping_add(1);
        }
    }
}

export_strategy!(Spin);
