//! Time series of the store for the dashboard's overview: requests, errors,
//! latency percentiles, the gateway's own overhead, spend and cache hits,
//! in fixed buckets over the last hour, day or week.
//!
//! Everything is computed in SQL (bucketing by integer division of the
//! timestamp, percentiles by rank within each bucket with window
//! functions), so the numbers the dashboard shows are the store's, and the
//! totals use the same nearest-rank percentile as `switchyard stats`.

use std::collections::HashMap;

use rusqlite::Connection;
use serde_json::{Value, json};

use super::query::QueryError;

/// The span a series covers, and how finely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last hour in one-minute buckets.
    Hour,
    /// The last day in 15-minute buckets.
    Day,
    /// The last week in one-hour buckets.
    Week,
}

impl Window {
    /// `1h`, `24h` or `7d` (the dashboard's three ranges).
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        match text {
            "1h" => Ok(Self::Hour),
            "24h" | "1d" => Ok(Self::Day),
            "7d" => Ok(Self::Week),
            other => Err(QueryError::BadFilter(format!(
                "window={other:?}: one of 1h, 24h, 7d"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    pub fn bucket_ms(self) -> i64 {
        match self {
            Self::Hour => 60_000,
            Self::Day => 15 * 60_000,
            Self::Week => 3_600_000,
        }
    }

    pub fn buckets(self) -> i64 {
        match self {
            Self::Hour => 60,
            Self::Day => 96,
            Self::Week => 168,
        }
    }

    /// The first bucket's start: buckets are aligned to their size, the
    /// last one holding `now_ms`.
    pub fn start_ms(self, now_ms: i64) -> i64 {
        let b = self.bucket_ms();
        (now_ms.div_euclid(b) - (self.buckets() - 1)) * b
    }
}

/// Percentiles the series reports.
const P50: f64 = 0.50;
const P95: f64 = 0.95;

/// Columns of `requests` a percentile may be taken of (never caller text).
#[derive(Clone, Copy)]
enum Column {
    Latency,
    Overhead,
}

impl Column {
    fn sql(self) -> &'static str {
        match self {
            Self::Latency => "latency_ms",
            Self::Overhead => "overhead_ms",
        }
    }
}

/// The nearest-rank percentile `p` of `column` per bucket of `bucket_ms`
/// from `from_ms` to `to_ms` (inclusive): bucket index → value.
fn percentile(
    conn: &Connection,
    column: Column,
    p: f64,
    from_ms: i64,
    bucket_ms: i64,
    to_ms: i64,
) -> Result<HashMap<i64, f64>, QueryError> {
    let col = column.sql();
    let sql = format!(
        "SELECT b, v FROM (
           SELECT (ts_ms - ?1) / ?2 AS b, {col} AS v,
                  ROW_NUMBER() OVER (PARTITION BY (ts_ms - ?1) / ?2 ORDER BY {col}) AS k,
                  COUNT(*) OVER (PARTITION BY (ts_ms - ?1) / ?2) AS n
           FROM requests WHERE ts_ms >= ?1 AND ts_ms <= ?3 AND {col} IS NOT NULL)
         WHERE k = CAST(ROUND((n - 1) * ?4) AS INTEGER) + 1"
    );
    let mut stmt = conn.prepare(&sql)?;
    let out = stmt
        .query_map(rusqlite::params![from_ms, bucket_ms, to_ms, p], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        })?
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(out)
}

/// Counts per bucket: requests, errors (any outcome but success), cache
/// hits and lookups (hits and misses; bypasses and uncached routes are
/// not lookups).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    requests: i64,
    errors: i64,
    failed_over: i64,
    cache_hits: i64,
    cache_lookups: i64,
}

fn counts(
    conn: &Connection,
    from_ms: i64,
    bucket_ms: i64,
    to_ms: i64,
) -> Result<HashMap<i64, Counts>, QueryError> {
    let mut stmt = conn.prepare(
        "SELECT (ts_ms - ?1) / ?2 AS b, COUNT(*),
                COALESCE(SUM(outcome != 'success'), 0), COALESCE(SUM(attempts > 1), 0),
                COALESCE(SUM(cache = 'hit'), 0), COALESCE(SUM(cache IN ('hit', 'miss')), 0)
         FROM requests WHERE ts_ms >= ?1 AND ts_ms <= ?3 GROUP BY b",
    )?;
    let out = stmt
        .query_map(rusqlite::params![from_ms, bucket_ms, to_ms], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Counts {
                    requests: r.get(1)?,
                    errors: r.get(2)?,
                    failed_over: r.get(3)?,
                    cache_hits: r.get(4)?,
                    cache_lookups: r.get(5)?,
                },
            ))
        })?
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(out)
}

/// Spend per bucket: every attempt's cost, failed billed ones too (as
/// `/admin/costs` and the budgets count it), at the attempt's time, of the
/// requests begun in the window (found by their index).
fn spend(
    conn: &Connection,
    from_ms: i64,
    bucket_ms: i64,
    to_ms: i64,
) -> Result<HashMap<i64, f64>, QueryError> {
    let mut stmt = conn.prepare(
        "SELECT (ts_ms - ?1) / ?2 AS b, COALESCE(SUM(cost), 0.0)
         FROM request_attempts WHERE request_ts_ms >= ?1 AND request_ts_ms <= ?3 GROUP BY b",
    )?;
    let out = stmt
        .query_map(rusqlite::params![from_ms, bucket_ms, to_ms], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        })?
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(out)
}

fn ratio(n: i64, of: i64) -> Value {
    if of == 0 {
        Value::Null
    } else {
        json!(n as f64 / of as f64)
    }
}

/// The start of the UTC day and month holding `now_ms`.
fn day_and_month_start(now_ms: i64) -> (i64, i64) {
    let day = now_ms.div_euclid(86_400_000) * 86_400_000;
    // Civil date from days since the epoch (proleptic Gregorian).
    let days = now_ms.div_euclid(86_400_000);
    let (_, _, d) = crate::calendar::civil(days);
    (day, day - (d - 1) * 86_400_000)
}

/// `GET /admin/series?window=1h|24h|7d`: every bucket (empty ones as
/// zeros, so a chart's x axis is time), and the window's totals.
pub fn series(conn: &Connection, window: Window, now_ms: i64) -> Result<Value, QueryError> {
    let bucket = window.bucket_ms();
    let from = window.start_ms(now_ms);
    let counts_by = counts(conn, from, bucket, now_ms)?;
    let spend_by = spend(conn, from, bucket, now_ms)?;
    let p50 = percentile(conn, Column::Latency, P50, from, bucket, now_ms)?;
    let p95 = percentile(conn, Column::Latency, P95, from, bucket, now_ms)?;
    let o50 = percentile(conn, Column::Overhead, P50, from, bucket, now_ms)?;
    let buckets: Vec<Value> = (0..window.buckets())
        .map(|i| {
            let c = counts_by.get(&i).copied().unwrap_or_default();
            json!({
                "ts_ms": from + i * bucket,
                "requests": c.requests,
                "errors": c.errors,
                "failed_over": c.failed_over,
                "latency_p50_ms": p50.get(&i),
                "latency_p95_ms": p95.get(&i),
                "overhead_p50_ms": o50.get(&i),
                "cost_usd": spend_by.get(&i).copied().unwrap_or(0.0),
                "cache_hits": c.cache_hits,
                "cache_lookups": c.cache_lookups,
            })
        })
        .collect();

    // The whole window as one bucket.
    let all = window.buckets() * bucket;
    let t = counts(conn, from, all, now_ms)?
        .remove(&0)
        .unwrap_or_default();
    let one = |m: HashMap<i64, f64>| m.get(&0).copied();
    let span_s = ((now_ms - from) as f64 / 1000.0).max(1.0);
    let (day, month) = day_and_month_start(now_ms);
    let spent_since = |since: i64| -> Result<f64, QueryError> {
        Ok(conn.query_row(
            "SELECT COALESCE(SUM(cost), 0.0) FROM request_attempts
             WHERE request_ts_ms >= ?1 AND request_ts_ms <= ?2",
            rusqlite::params![since, now_ms],
            |r| r.get(0),
        )?)
    };
    Ok(json!({
        "window": window.name(),
        "bucket_ms": bucket,
        "from_ms": from,
        "to_ms": now_ms,
        "totals": {
            "requests": t.requests,
            "errors": t.errors,
            "failed_over": t.failed_over,
            "requests_per_s": t.requests as f64 / span_s,
            "error_rate": ratio(t.errors, t.requests),
            "latency_p50_ms": one(percentile(conn, Column::Latency, P50, from, all, now_ms)?),
            "latency_p95_ms": one(percentile(conn, Column::Latency, P95, from, all, now_ms)?),
            "overhead_p50_ms": one(percentile(conn, Column::Overhead, P50, from, all, now_ms)?),
            "overhead_p95_ms": one(percentile(conn, Column::Overhead, P95, from, all, now_ms)?),
            "cost_usd": spent_since(from)?,
            "cache_hits": t.cache_hits,
            "cache_lookups": t.cache_lookups,
            "cache_hit_rate": ratio(t.cache_hits, t.cache_lookups),
        },
        "spend": {
            "today_usd": spent_since(day)?,
            "month_usd": spent_since(month)?,
            "day_start_ms": day,
            "month_start_ms": month,
        },
        "buckets": buckets,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        conn
    }

    /// A request at `ts_ms` with one attempt costing `cost`.
    fn add(
        conn: &Connection,
        ts_ms: i64,
        latency: f64,
        outcome: &str,
        cost: f64,
        cache: Option<&str>,
    ) {
        // Its attempt in its row, as the writer keeps a last attempt.
        conn.execute(
            "INSERT INTO requests (id, ts_ms, route, stream, status, outcome, attempts, latency_ms, overhead_ms, cache,
               a_ts_ms, a_deployment, a_adapter, a_latency_ms, a_cost)
             VALUES ('r', ?1, 'demo', 0, 200, ?2, 1, ?3, ?4, ?5, ?1, 'd', 'openai', ?3, ?6)",
            rusqlite::params![ts_ms, outcome, latency, latency / 100.0, cache, cost],
        )
        .unwrap();
    }

    #[test]
    fn windows_parse_and_align() {
        assert_eq!(Window::parse("1h").unwrap(), Window::Hour);
        assert_eq!(Window::parse("7d").unwrap(), Window::Week);
        let e = Window::parse("2h").unwrap_err().to_string();
        assert!(
            e.contains("window=\"2h\"") && e.contains("1h, 24h, 7d"),
            "{e}"
        );
        let now = 1_000 * MIN + 30_000;
        assert_eq!(Window::Hour.start_ms(now), (1_000 - 59) * MIN);
    }

    #[test]
    fn buckets_hold_their_requests_and_empty_ones_are_zero() {
        let conn = db();
        let now = 10_000 * MIN + 5_000;
        // Two in the last minute, one three minutes back, one outside.
        add(&conn, now - 1_000, 100.0, "success", 0.5, Some("miss"));
        add(&conn, now - 2_000, 300.0, "failed", 0.25, Some("hit"));
        add(&conn, now - 3 * MIN, 200.0, "success", 1.0, None);
        add(&conn, now - 2 * 3_600_000, 900.0, "success", 8.0, None);
        let s = series(&conn, Window::Hour, now).unwrap();
        let b = s["buckets"].as_array().unwrap();
        assert_eq!(b.len(), 60);
        let last = &b[59];
        assert_eq!(last["ts_ms"], json!(10_000 * MIN));
        assert_eq!(last["requests"], json!(2));
        assert_eq!(last["errors"], json!(1));
        assert_eq!(last["cache_hits"], json!(1));
        assert_eq!(last["cost_usd"], json!(0.75));
        // Nearest rank: of [100, 300], p50 is rank round(0.5) + 1 = 2.
        assert_eq!(last["latency_p50_ms"], json!(300.0));
        assert_eq!(last["latency_p95_ms"], json!(300.0));
        assert_eq!(b[56]["requests"], json!(1));
        assert_eq!(b[56]["latency_p50_ms"], json!(200.0));
        assert_eq!(b[10]["requests"], json!(0));
        assert_eq!(b[10]["latency_p50_ms"], Value::Null);

        let t = &s["totals"];
        assert_eq!(
            t["requests"],
            json!(3),
            "the request two hours back is outside"
        );
        assert_eq!(t["errors"], json!(1));
        assert_eq!(t["latency_p50_ms"], json!(200.0));
        assert_eq!(t["latency_p95_ms"], json!(300.0));
        assert_eq!(t["overhead_p50_ms"], json!(2.0));
        assert_eq!(t["cost_usd"], json!(1.75));
        assert_eq!(t["cache_hit_rate"], json!(0.5));
        // Today includes the request two hours back (same UTC day here).
        assert_eq!(s["spend"]["today_usd"], json!(9.75));
    }

    #[test]
    fn an_empty_store_has_no_rates() {
        let s = series(&db(), Window::Week, 1_700_000_000_000).unwrap();
        assert_eq!(s["buckets"].as_array().unwrap().len(), 168);
        assert_eq!(s["totals"]["error_rate"], Value::Null);
        assert_eq!(s["totals"]["cache_hit_rate"], Value::Null);
        assert_eq!(s["totals"]["latency_p50_ms"], Value::Null);
    }

    #[test]
    fn month_starts_on_the_first_utc() {
        // 2026-12-03T19:37:46Z
        let now = 1_796_326_666_000;
        let (day, month) = day_and_month_start(now);
        assert_eq!(day, 1_796_256_000_000); // 2026-12-03T00:00Z
        assert_eq!(month, 1_796_083_200_000); // 2026-12-01T00:00Z
    }
}
