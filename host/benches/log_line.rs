//! The one `info` line a request logs, through the gateway's own subscriber
//! set-up (an `EnvFilter` at `info`, the fmt layer, the batched writer into a
//! sink): what logging costs a request.
//!
//!     cargo bench --bench log_line -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

fn log_line(c: &mut Criterion) {
    let (log, _guard) = switchyard::logging::batched(std::io::sink()).expect("log writer");
    let filter = tracing_subscriber::EnvFilter::new("info");
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(log)
        .with_ansi(false)
        .with_filter(filter);
    let subscriber = tracing_subscriber::registry().with(fmt);
    let _default = tracing::subscriber::set_default(subscriber);
    let request_id = String::from("161602ec-000000000001");
    c.bench_function("log_line/answered", |b| {
        b.iter(|| {
            tracing::info!(request_id = %black_box(&request_id), model = %"load",
                deployment = %"mock", attempts = 1u32, ms = 0u64, total_ms = 1u64, "answered");
        })
    });
    c.bench_function("log_line/debug_disabled", |b| {
        b.iter(|| {
            tracing::debug!(request_id = %black_box(&request_id), "not logged at info");
        })
    });
}

criterion_group!(benches, log_line);
criterion_main!(benches);
