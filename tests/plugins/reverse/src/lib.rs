//! Test strategy: tries the candidates in the reverse of the configured
//! order, so tests can tell that the configured strategy is really in use.

use switchyard_sdk::{Candidate, Metadata, RequestSummary, Strategy, export_strategy};

struct Reverse;

impl Strategy for Reverse {
    fn metadata() -> Metadata {
        Metadata::new("reverse", env!("CARGO_PKG_VERSION"), &[])
    }

    fn order(_request: &RequestSummary, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
        Ok((0..candidates.len() as u32).rev().collect())
    }
}

export_strategy!(Reverse);
