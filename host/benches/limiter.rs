//! The in-memory limiter on the request path: check + reserve + reconcile
//! of one request on a deployment with three limits (rps, rpm, tpm), with
//! 8 threads contending for the same limiter. Reported per request: the
//! run's wall time over the requests all threads made (so on 2 cores,
//! about half the CPU each request costs).
//!
//! `cargo bench --bench limiter -- --warm-up-time 1 --measurement-time 3`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::ratelimit::{Limiter, Limits};

const THREADS: u64 = 8;

fn limiter(c: &mut Criterion) {
    // Limits far above the load: every request is admitted (the common case).
    let l = Limiter::new(
        Limits {
            rps: Some(u64::MAX / 4),
            rpm: Some(u64::MAX / 4),
            tpm: Some(u64::MAX / 4),
        },
        0.9,
    );
    c.bench_function("limiter/reserve_reconcile_3_limits_8_threads", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(THREADS);
            let started = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        let mut events = Vec::new();
                        for _ in 0..per_thread {
                            let r = l.try_reserve(700, &mut events).expect("admitted");
                            l.reconcile(&r, 350);
                            events.clear();
                        }
                    });
                }
            });
            let elapsed = started.elapsed();
            Duration::from_nanos(
                (elapsed.as_nanos() as u64).saturating_mul(iters) / (per_thread * THREADS),
            )
        })
    });
    let keys = switchyard::keys::KeyPool::new(
        &["A".to_string(), "B".to_string(), "C".to_string()],
        |v| Some(format!("secret-{v}")),
        Limits::default(),
        0.9,
        None,
    );
    c.bench_function("keys/pick_of_3_unlimited", |b| {
        let mut events = Vec::new();
        b.iter(|| {
            keys.pick(700, &mut events)
                .map(|lease| lease.key.env.is_some())
        })
    });
}

criterion_group!(benches, limiter);
criterion_main!(benches);
