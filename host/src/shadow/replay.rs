//! `switchyard replay`: a strategy over the requests the store recorded,
//! before it routes a single live request. Each recorded request of a
//! configured route is put to the strategy with the route's deployments as
//! candidates, as they stood then: their figures (attempts, success rate,
//! median latency and time to first token, quality) are rebuilt from the
//! recorded attempts of the monitor's window before the request, refreshed
//! at most once a second of recorded time as the live monitor is. The
//! strategy's first choice is compared with the deployment that served,
//! and priced with the request's real usage (see [`super::whatif`]).
//!
//! Not replayed: what the request needed (tools, JSON mode, vision) is not
//! recorded, so every deployment of the route is a candidate; live
//! headroom and in-flight counts are not recorded either (full headroom,
//! none in flight).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{Value, json};

use super::whatif::{self, Decision};
use crate::config::Config;
use crate::domain::{Candidate, Kind, RequestSummary, WindowStats};
use crate::plugins::{Registry, RegistrySettings};
use crate::store::query::{self, instant};

/// What to replay.
pub struct Options<'a> {
    pub strategy: &'a Path,
    pub route: Option<&'a str>,
    pub since: &'a str,
    pub until: Option<&'a str>,
    /// Requests replayed at most (the oldest first).
    pub limit: u32,
    pub json: bool,
}

/// A recorded request.
struct Recorded {
    id: String,
    ts_ms: i64,
    route: String,
    tags: Vec<String>,
    stream: bool,
    deployment: Option<String>,
    prompt_tokens: u32,
    completion_tokens: u32,
    cost: Option<f64>,
}

/// A recorded attempt, for the deployments' figures.
struct Seen {
    ts_ms: i64,
    deployment: String,
    ok: bool,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    score: Option<f64>,
}

/// Runs the replay and renders its report.
pub async fn run(config: &Config, o: &Options<'_>) -> Result<String, String> {
    let db = &config.store.path;
    if !db.exists() {
        return Err(format!(
            "no store at {} (the gateway records requests there with store.enabled)",
            db.display()
        ));
    }
    if let Some(r) = o.route
        && !config.routes.contains_key(r)
    {
        return Err(format!("--route {r:?}: the config has no such route"));
    }
    let (registry, id, _scratch) = load(config, o.strategy)?;
    let conn = query::open(db).map_err(|e| e.to_string())?;
    let now = crate::pipeline::outcome::now_ms();
    let since = instant(o.since, "since", now).map_err(|e| format!("--{e}"))?;
    let until = match o.until {
        Some(u) => instant(u, "until", now).map_err(|e| format!("--{e}"))?,
        None => i64::MAX,
    };
    let window_ms = (config.monitor.window_s * 1000.0) as i64;
    let requests = recorded(&conn, o, since, until).map_err(|e| e.to_string())?;
    let seen = attempts(&conn, since - window_ms, until).map_err(|e| e.to_string())?;
    let plugin = registry
        .get(&id, Kind::Strategy)
        .map_err(|e| format!("{}: {e}", o.strategy.display()))?;
    let mut figures = Figures::new(seen, window_ms);
    let mut decisions: BTreeMap<String, Vec<Decision>> = BTreeMap::new();
    let mut skipped = 0u64;
    for r in &requests {
        let Some(route) = config.routes.get(&r.route) else {
            skipped += 1;
            continue;
        };
        let stats = figures.at(r.ts_ms);
        let candidates: Vec<Candidate> = route
            .members
            .iter()
            .filter_map(|m| {
                let d = config.deployments.get(&m.name)?;
                let p = d.prices().ok()?;
                let recent = stats.get(&m.name).cloned().unwrap_or_default();
                Some(Candidate {
                    deployment: m.name.clone(),
                    adapter: d.adapter.clone(),
                    healthy: recent.0.attempts == 0 || recent.0.success_rate >= 0.5,
                    headroom: 1.0,
                    in_flight: 0,
                    error_rate: if recent.0.attempts == 0 {
                        0.0
                    } else {
                        1.0 - recent.0.success_rate
                    },
                    latency_ms: recent.0.latency_p50_ms,
                    input_cost_per_1m: p.input,
                    output_cost_per_1m: p.output,
                    cached_input_cost_per_1m: p.cached_input,
                    priority: m.priority,
                    weight: m.weight,
                    quality: recent.1,
                    supports: crate::pipeline::capabilities(&d.capabilities),
                    recent: Arc::new(recent.0),
                })
            })
            .collect();
        let summary = RequestSummary {
            model: r.route.clone(),
            input_tokens: r.prompt_tokens,
            max_output_tokens: None,
            stream: r.stream,
            needs: crate::domain::Capabilities::empty(),
            priority: crate::domain::TaskPriority::default(),
            tags: r.tags.clone(),
        };
        let request_id: Arc<str> = Arc::from(r.id.as_str());
        let choice = if candidates.is_empty() {
            None
        } else {
            plugin
                .order(&request_id, summary, candidates.clone())
                .await
                .ok()
                .and_then(|order| crate::pipeline::validate_order(order, candidates.len()).ok())
                .and_then(|order| order.first().map(|&i| candidates[i].deployment.clone()))
        };
        let failed = choice.is_none() && !candidates.is_empty();
        decisions
            .entry(r.route.clone())
            .or_default()
            .push(Decision {
                live: r.deployment.clone(),
                choice,
                failed,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                billed: r.cost,
            });
    }
    let prices = whatif::prices_of(config);
    let p50 = super::report::medians(&conn, since, until).map_err(|e| e.to_string())?;
    let routes: BTreeMap<String, whatif::Summary> = decisions
        .into_iter()
        .map(|(route, d)| (route, whatif::summarize(&d, &prices, &p50)))
        .collect();
    let report = json!({
        "strategy": o.strategy.display().to_string(),
        "requests": requests.len(),
        "skipped": skipped,
        "since_ms": since,
        "routes": routes,
    });
    Ok(if o.json {
        serde_json::to_string_pretty(&report).unwrap_or_default()
    } else {
        render(&report, &routes)
    })
}

/// The strategy file loaded alone, under its file name, with the config's
/// plugin limits and its config block (`plugins.config.<id>`) if any.
fn load(
    config: &Config,
    file: &Path,
) -> Result<(Arc<Registry>, String, tempfile::TempDir), String> {
    let id = file
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a plugin file name", file.display()))?
        .to_string();
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot make a scratch folder: {e}"))?;
    let dir = scratch.path().join("plugins");
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    std::fs::copy(file, dir.join(format!("{id}.wasm")))
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut settings = RegistrySettings::from(config);
    settings.dir = dir;
    settings.cache_dir = scratch.path().join("cache");
    settings.expected_kinds = HashMap::from([(id.clone(), Kind::Strategy)]);
    let registry = Registry::new(settings).map_err(|e| e.to_string())?;
    if let Some(why) = registry.rejected().get(&id) {
        return Err(format!("{}: {why}", file.display()));
    }
    Ok((registry, id, scratch))
}

fn recorded(
    conn: &Connection,
    o: &Options<'_>,
    since: i64,
    until: i64,
) -> rusqlite::Result<Vec<Recorded>> {
    let mut stmt = conn.prepare(
        "SELECT id, ts_ms, route, tags, stream, deployment, COALESCE(prompt_tokens, 0),
                COALESCE(completion_tokens, 0), cost
         FROM requests
         WHERE ts_ms >= ?1 AND ts_ms < ?2 AND (?3 IS NULL OR route = ?3) AND cache IS NOT 'hit'
         ORDER BY ts_ms LIMIT ?4",
    )?;
    let rows = stmt.query_map(rusqlite::params![since, until, o.route, o.limit], |row| {
        let tags: Option<String> = row.get(3)?;
        Ok(Recorded {
            id: row.get(0)?,
            ts_ms: row.get(1)?,
            route: row.get(2)?,
            tags: tags
                .map(|t| t.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            stream: row.get(4)?,
            deployment: row.get(5)?,
            prompt_tokens: row.get(6)?,
            completion_tokens: row.get(7)?,
            cost: row.get(8)?,
        })
    })?;
    rows.collect()
}

fn attempts(conn: &Connection, since: i64, until: i64) -> rusqlite::Result<VecDeque<Seen>> {
    let mut stmt = conn.prepare(
        "SELECT ts_ms, deployment, class IS NULL, latency_ms, ttft_ms, score
         FROM request_attempts WHERE request_ts_ms >= ?1 AND request_ts_ms < ?2 ORDER BY ts_ms",
    )?;
    let rows = stmt.query_map([since, until], |row| {
        Ok(Seen {
            ts_ms: row.get(0)?,
            deployment: row.get(1)?,
            ok: row.get(2)?,
            latency_ms: row.get(3)?,
            ttft_ms: row.get(4)?,
            score: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// The deployments' figures over a window sliding through recorded time.
struct Figures {
    pending: VecDeque<Seen>,
    window: VecDeque<Seen>,
    window_ms: i64,
    /// The figures as of `at_ms` (recomputed once a second of recorded time).
    at_ms: i64,
    current: HashMap<String, (WindowStats, f32)>,
}

impl Figures {
    fn new(pending: VecDeque<Seen>, window_ms: i64) -> Self {
        Self {
            pending,
            window: VecDeque::new(),
            window_ms: window_ms.max(1000),
            at_ms: i64::MIN,
            current: HashMap::new(),
        }
    }

    /// Each deployment's figures (and mean quality, 1 without scores) over
    /// the window before `ts_ms`.
    fn at(&mut self, ts_ms: i64) -> &HashMap<String, (WindowStats, f32)> {
        if ts_ms.saturating_sub(self.at_ms) < 1000 {
            return &self.current;
        }
        self.at_ms = ts_ms;
        while self.pending.front().is_some_and(|s| s.ts_ms < ts_ms) {
            self.window.extend(self.pending.pop_front());
        }
        while self
            .window
            .front()
            .is_some_and(|s| s.ts_ms < ts_ms - self.window_ms)
        {
            self.window.pop_front();
        }
        let mut by: HashMap<&str, Vec<&Seen>> = HashMap::new();
        for s in &self.window {
            by.entry(&s.deployment).or_default().push(s);
        }
        let minutes = self.window_ms as f32 / 60_000.0;
        self.current = by
            .into_iter()
            .map(|(name, seen)| {
                let ok: Vec<&&Seen> = seen.iter().filter(|s| s.ok).collect();
                let mut latency: Vec<f64> = ok.iter().map(|s| s.latency_ms).collect();
                let mut ttft: Vec<f64> = ok.iter().filter_map(|s| s.ttft_ms).collect();
                let scores: Vec<f64> = seen.iter().filter_map(|s| s.score).collect();
                let quality = if scores.is_empty() {
                    1.0
                } else {
                    (scores.iter().sum::<f64>() / scores.len() as f64) as f32
                };
                let stats = WindowStats {
                    attempts: seen.len() as u32,
                    requests_per_minute: seen.len() as f32 / minutes,
                    success_rate: ok.len() as f32 / seen.len() as f32,
                    latency_p50_ms: quantile(&mut latency, 0.5),
                    latency_p95_ms: quantile(&mut latency, 0.95),
                    latency_p99_ms: quantile(&mut latency, 0.99),
                    ttft_p50_ms: quantile(&mut ttft, 0.5),
                    ttft_p95_ms: quantile(&mut ttft, 0.95),
                    ..WindowStats::default()
                };
                (name.to_string(), (stats, quality))
            })
            .collect();
        &self.current
    }
}

fn quantile(v: &mut [f64], q: f64) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)] as f32
}

fn render(report: &Value, routes: &BTreeMap<String, whatif::Summary>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replay of {} over {} recorded request(s){}",
        report["strategy"].as_str().unwrap_or_default(),
        report["requests"],
        match report["skipped"].as_u64() {
            Some(0) | None => String::new(),
            Some(n) => format!(" ({n} of routes the config no longer has, skipped)"),
        }
    );
    if routes.is_empty() {
        out.push_str(
            "nothing to replay: no recorded requests of the config's routes in the window\n",
        );
    }
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    for (route, s) in routes {
        let _ = writeln!(out, "\nroute {route}: {} request(s)", s.decisions);
        let _ = writeln!(
            out,
            "  agreement with the live choice: {}{}",
            s.agreement
                .map_or("-".to_string(), |a| format!("{:.1} %", a * 100.0)),
            if s.failed > 0 {
                format!(" ({} decision(s) failed)", s.failed)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "  cost (usage at list prices): live ${:.6} -> replay ${:.6} (billed live ${:.6})",
            s.live.cost_usd, s.what_if.cost_usd, s.live_billed_usd
        );
        let _ = writeln!(
            out,
            "  latency (median of the chosen deployment): live {} -> replay {}",
            ms(s.live.latency_p50_ms),
            ms(s.what_if.latency_p50_ms)
        );
        let _ = writeln!(out, "  {:<28} {:>8} {:>8}", "deployment", "live", "replay");
        for (d, c) in &s.by_deployment {
            let _ = writeln!(out, "  {d:<28} {:>8} {:>8}", c.live, c.candidate);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ts_ms: i64, deployment: &str, ok: bool, latency_ms: f64) -> Seen {
        Seen {
            ts_ms,
            deployment: deployment.into(),
            ok,
            latency_ms,
            ttft_ms: None,
            score: ok.then_some(0.5),
        }
    }

    #[test]
    fn figures_cover_the_window_before_each_request() {
        let mut f = Figures::new(
            VecDeque::from([
                seen(0, "a", true, 100.0),
                seen(500, "a", false, 5.0),
                seen(2_000, "a", true, 300.0),
                seen(70_000, "b", true, 50.0),
            ]),
            60_000,
        );
        // Nothing before the first attempt.
        assert!(f.at(0).is_empty());
        // Refreshed at most once a second of recorded time.
        assert!(f.at(900).is_empty());
        let a = f.at(3_000)["a"].clone();
        assert_eq!(a.0.attempts, 3);
        assert!((a.0.success_rate - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.0.latency_p50_ms, 300.0);
        assert_eq!(a.1, 0.5);
        // A minute later the first two have left the window.
        let now = f.at(61_000);
        assert_eq!(now["a"].0.attempts, 1);
        assert!(!now.contains_key("b"));
        assert_eq!(f.at(80_000)["b"].0.attempts, 1);
    }

    #[test]
    fn quantiles_of_nothing_are_zero() {
        assert_eq!(quantile(&mut [], 0.5), 0.0);
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.99), 3.0);
    }
}
