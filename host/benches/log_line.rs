//! The one `info` line a request logs, through the gateway's own subscriber
//! set-up (an `EnvFilter` at `info`, the fmt layer with the gateway's line
//! format, the batched writer into a sink): what logging costs a request;
//! and the same line in tracing-subscriber's default format.
//!
//!     cargo bench --bench log_line -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

fn log_line(c: &mut Criterion) {
    let request_id = String::from("161602ec-000000000001");
    // The gateway's format, then tracing-subscriber's default for comparison.
    for (name, lean) in [
        ("log_line/answered", true),
        ("log_line/answered_default_format", false),
    ] {
        let (log, _guard) = switchyard::logging::batched(std::io::sink()).expect("log writer");
        let filter = tracing_subscriber::EnvFilter::new("info");
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(log)
            .with_ansi(false);
        let _default = if lean {
            let fmt = fmt.event_format(switchyard::logging::line::Line::default());
            tracing::subscriber::set_default(
                tracing_subscriber::registry().with(fmt.with_filter(filter)),
            )
        } else {
            tracing::subscriber::set_default(
                tracing_subscriber::registry().with(fmt.with_filter(filter)),
            )
        };
        c.bench_function(name, |b| {
            b.iter(|| {
                tracing::info!(request_id = %black_box(&request_id), model = %"load",
                    deployment = %"mock", attempts = 1u32, ms = 0u64, total_ms = 1u64, "answered");
            })
        });
        if lean {
            c.bench_function("log_line/debug_disabled", |b| {
                b.iter(|| {
                    tracing::debug!(request_id = %black_box(&request_id), "not logged at info");
                })
            });
        }
    }
}

criterion_group!(benches, log_line);
criterion_main!(benches);
