//! The store's writer: rows per second from `Store::record` to committed, in
//! batches of 10,000 (a request row and two attempt rows at a time, as a
//! request with one failover leaves them). Criterion reports the time per
//! 10,000 rows; the floor is 20,000 rows/s (0.5 s per 10,000).
//!
//! Run: `cargo bench --bench store_writer -- --warm-up-time 1 --measurement-time 5`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard::store::{AttemptRow, RequestRow, Row, Store};

const ROWS: u64 = 9_999;

fn rows(store: &Store, from: u64) {
    for n in from..from + ROWS / 3 {
        // As the gateway makes them (a caller may send its own).
        let id: std::sync::Arc<str> = format!("5f3a9c01-{n:012x}").into();
        let request = RequestRow {
            id: id.clone(),
            ts_ms: n as i64,
            route: "chat".into(),
            status: 200,
            outcome: "ok",
            deployment: Some("b".into()),
            attempts: 2,
            latency_ms: 12.5,
            prompt_tokens: Some(120),
            completion_tokens: Some(40),
            cost: Some(0.0003),
            ..Default::default()
        };
        let attempts = ["a", "b"]
            .into_iter()
            .enumerate()
            .map(|(i, d)| AttemptRow {
                request_id: id.clone(),
                n: i as u32 + 1,
                ts_ms: n as i64,
                deployment: d.into(),
                adapter: "openai".into(),
                class: (i == 0).then_some("overloaded"),
                status: Some(if i == 0 { 503 } else { 200 }),
                latency_ms: 6.0,
                ..Default::default()
            })
            .collect();
        store.record(Row::Request(request, attempts));
    }
}

fn writer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.db"));
    let mut next = 0;
    let mut group = c.benchmark_group("store_writer");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(10);
    group.bench_function("record_and_commit_9999_rows", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                rows(&store, next);
                next += ROWS;
                assert!(store.flush(Duration::from_secs(60)), "flush timed out");
            }
            started.elapsed()
        })
    });
    group.finish();
    assert_eq!(store.dropped(), 0, "the bench outran the queue");
}

criterion_group!(benches, writer);
criterion_main!(benches);
