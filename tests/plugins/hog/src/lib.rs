//! Test evaluator that allocates and touches 1 GiB per call: the host's
//! memory limit must stop it without harming the gateway.

use switchyard_sdk::{Evaluator, Metadata, Verdict, export_evaluator};

struct Hog;

impl Evaluator for Hog {
    fn metadata() -> Metadata {
        Metadata::new("hog", env!("CARGO_PKG_VERSION"), &[])
    }

    fn evaluate(_request: &str, _response: &str) -> Result<Verdict, String> {
        // A non-zero fill value writes every byte (zeroed memory could be
        // lazily mapped); `black_box` keeps the allocation from being elided.
        let block = std::hint::black_box(vec![1u8; 1 << 30]);
        std::hint::black_box(&block);
        Ok(Verdict::pass())
    }
}

export_evaluator!(Hog);
