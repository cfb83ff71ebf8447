//! Families built at the scrape from live state: the plugins' call
//! counters and latency buckets (plain atomics, off the metrics path), the
//! limiter's headroom, the wait queue, the response cache's size.

use prometheus::proto::MetricType;

/// The response cache's size and its own counters, read at the scrape.
pub(super) fn cache_families(cache: &crate::cache::Cache) -> Vec<prometheus::proto::MetricFamily> {
    use std::sync::atomic::Ordering::Relaxed;
    let (entries, bytes) = cache.size();
    let c = &cache.counters;
    vec![
        family(
            "switchyard_cache_entries",
            "Answers held in the cache's memory layer",
            MetricType::GAUGE,
            vec![(vec![], entries as f64)],
        ),
        family(
            "switchyard_cache_bytes",
            "Bytes held in the cache's memory layer",
            MetricType::GAUGE,
            vec![(vec![], bytes as f64)],
        ),
        family(
            "switchyard_cache_stored_total",
            "Answers stored in the cache",
            MetricType::COUNTER,
            vec![(vec![], c.stored.load(Relaxed) as f64)],
        ),
        family(
            "switchyard_cache_evicted_total",
            "Answers evicted from the memory layer (least recently used first)",
            MetricType::COUNTER,
            vec![(vec![], c.evicted.load(Relaxed) as f64)],
        ),
        family(
            "switchyard_cache_errors_total",
            "Cache failures (the request went upstream)",
            MetricType::COUNTER,
            vec![(vec![], c.errors.load(Relaxed) as f64)],
        ),
    ]
}

/// Families read from live state at the scrape: plugins' call counters
/// (kept by each plugin as plain atomics, off the metrics path), limiter
/// headroom and the wait queue.
pub(super) fn live_families(
    gateway: &crate::pipeline::Gateway,
) -> Vec<prometheus::proto::MetricFamily> {
    use std::sync::atomic::Ordering::Relaxed;
    let plugins = gateway.registry().loaded();
    let per_plugin = |f: &dyn Fn(&crate::plugins::Plugin) -> f64| {
        plugins
            .iter()
            .map(|p| {
                (
                    vec![
                        ("plugin", p.id.to_string()),
                        ("kind", format!("{:?}", p.kind).to_lowercase()),
                    ],
                    f(p),
                )
            })
            .collect::<Vec<_>>()
    };
    vec![
        family(
            "switchyard_plugin_calls_total",
            "Plugin calls made",
            MetricType::COUNTER,
            per_plugin(&|p| p.stats.calls.load(Relaxed) as f64),
        ),
        family(
            "switchyard_plugin_call_errors_total",
            "Plugin calls that failed (trap, deadline, quarantine, refused input or output)",
            MetricType::COUNTER,
            per_plugin(&|p| p.stats.errors.load(Relaxed) as f64),
        ),
        family(
            "switchyard_plugin_faults_total",
            "Plugin calls that ended in a fault (trap, deadline, out of memory): what quarantines a plugin",
            MetricType::COUNTER,
            per_plugin(&|p| p.faults() as f64),
        ),
        family(
            "switchyard_plugin_timeouts_total",
            "Plugin calls interrupted at their deadline (counted among the faults too)",
            MetricType::COUNTER,
            per_plugin(&|p| p.stats.timeouts.load(Relaxed) as f64),
        ),
        family(
            "switchyard_plugin_traps_total",
            "Plugin calls that trapped (counted among the faults too)",
            MetricType::COUNTER,
            per_plugin(&|p| p.stats.traps.load(Relaxed) as f64),
        ),
        plugin_latency(&plugins),
        family(
            "switchyard_plugin_call_seconds_total",
            "Wall time of plugin calls (divide by switchyard_plugin_calls_total for the mean)",
            MetricType::COUNTER,
            per_plugin(&|p| p.stats.call_ns.load(Relaxed) as f64 / 1e9),
        ),
        family(
            "switchyard_plugin_quarantined",
            "1 while a plugin is quarantined",
            MetricType::GAUGE,
            per_plugin(&|p| {
                f64::from(u8::from(matches!(
                    p.state(),
                    crate::plugins::PluginState::Quarantined { .. }
                )))
            }),
        ),
        family(
            "switchyard_limiter_headroom",
            "Rate-limit headroom of a deployment, 0 (at a limit) to 1 (untouched): the tightest of its windows and its best key's",
            MetricType::GAUGE,
            gateway
                .limiter_headrooms()
                .into_iter()
                .map(|(d, h)| (vec![("deployment", d.to_string())], f64::from(h)))
                .collect(),
        ),
        family(
            "switchyard_queue_waiting",
            "Requests waiting in the queue for a place (a cap or a limit)",
            MetricType::GAUGE,
            vec![(vec![], gateway.queue_len() as f64)],
        ),
    ]
}

/// Upper bounds of [`Buckets`], in seconds: plugin calls take tens of
/// microseconds when well, up to their deadline (tens of milliseconds).
pub const CALL_SECONDS: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// A latency histogram's counts, one atomic per bucket (the last: past
/// every bound), observed lock-free and read at the scrape.
#[derive(Default, Debug)]
pub struct Buckets {
    counts: [std::sync::atomic::AtomicU64; CALL_SECONDS.len() + 1],
}

impl Buckets {
    pub fn observe(&self, took: std::time::Duration) {
        let s = took.as_secs_f64();
        let i = CALL_SECONDS.partition_point(|b| *b < s);
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Cumulative counts per bound, and the total.
    fn cumulative(&self) -> (Vec<u64>, u64) {
        let mut sum = 0;
        let mut out = Vec::with_capacity(CALL_SECONDS.len());
        for (i, c) in self.counts.iter().enumerate() {
            sum += c.load(std::sync::atomic::Ordering::Relaxed);
            if i < CALL_SECONDS.len() {
                out.push(sum);
            }
        }
        (out, sum)
    }
}

/// A histogram family of the plugins' [`Buckets`].
fn plugin_latency(
    plugins: &[std::sync::Arc<crate::plugins::Plugin>],
) -> prometheus::proto::MetricFamily {
    use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily};
    let mut f = MetricFamily::default();
    f.set_name("switchyard_plugin_call_duration_seconds".into());
    f.set_help("Plugin calls by wall time (waits for an instance or a turn included)".into());
    f.set_field_type(MetricType::HISTOGRAM);
    for p in plugins {
        let (cumulative, count) = p.stats.latency.cumulative();
        let mut h = Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(p.stats.call_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9);
        h.set_bucket(
            CALL_SECONDS
                .iter()
                .zip(cumulative)
                .map(|(bound, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        let mut m = Metric::default();
        m.set_label(
            [
                ("plugin", p.id.to_string()),
                ("kind", format!("{:?}", p.kind).to_lowercase()),
            ]
            .into_iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name(k.into());
                l.set_value(v);
                l
            })
            .collect(),
        );
        m.set_histogram(h);
        f.mut_metric().push(m);
    }
    f
}

/// One metric family built by hand.
fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Vec<(&str, String)>, f64)>,
) -> prometheus::proto::MetricFamily {
    use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily};
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    for (labels, value) in samples {
        let mut m = Metric::default();
        m.set_label(
            labels
                .into_iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v);
                    l
                })
                .collect(),
        );
        if kind == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        f.mut_metric().push(m);
    }
    f
}
