//! Reading the store: the views the admin API and `switchyard stats` show.
//!
//! Every view reads through its own connection (WAL: readers never block
//! the writer, nor it them) and answers JSON. Filters are bound parameters,
//! never text spliced into SQL.

use std::path::Path;

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;
use serde_json::{Value, json};

mod requests;
pub use requests::{Served, request, requests, served};

/// The filters every view accepts (query parameters of the admin API).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// From: milliseconds since the epoch, or a span back from now (`90m`,
    /// `24h`, `7d`).
    pub since: Option<String>,
    pub until: Option<String>,
    pub route: Option<String>,
    pub deployment: Option<String>,
    pub caller: Option<String>,
    pub status: Option<u16>,
    pub outcome: Option<String>,
    /// Rows per page (default 100, at most 1,000).
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// `requests`: the page after the one that gave this `next_cursor`.
    /// Unlike an offset, it does not shift while new requests are recorded
    /// (no row twice, none skipped).
    pub cursor: Option<String>,
    /// `costs`: `day`, `route`, `deployment` or `caller`; `quality`:
    /// `deployment`, `route`, `evaluator`, `day` or `hour`.
    pub group_by: Option<String>,
    /// `events`: the kind.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A bad filter or a database that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    BadFilter(String),
    #[error("the store cannot be read: {0}")]
    Store(#[from] rusqlite::Error),
}

/// Opens the database read-only (it must exist).
pub fn open(path: &Path) -> Result<Connection, QueryError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    Ok(conn)
}

/// A point in time in milliseconds: an integer, or a span back from `now`.
pub(crate) fn instant(text: &str, what: &str, now_ms: i64) -> Result<i64, QueryError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        QueryError::BadFilter(format!(
            "{what}={text:?}: give milliseconds since the epoch or a span back from now such as 90m, 24h or 7d"
        ))
    };
    let Some((cut, _)) = text.char_indices().last() else {
        return Err(bad());
    };
    let (n, unit) = text.split_at(cut);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms)
        .and_then(|back| now_ms.checked_sub(back))
        .ok_or_else(bad)
}

/// The columns the request filters read: in `requests` (aliased `r`), or
/// in the `request_attempts` view (aliased `a`), where the time range is the
/// requests' and the deployment the attempt's own.
struct Columns {
    since: &'static str,
    until: &'static str,
    route: &'static str,
    caller: &'static str,
    outcome: &'static str,
    deployment: &'static str,
    status: &'static str,
}

const OF_REQUESTS: Columns = Columns {
    since: "r.ts_ms >= ?",
    until: "r.ts_ms < ?",
    route: "r.route = ?",
    caller: "r.caller = ?",
    outcome: "r.outcome = ?",
    // Its last attempt is in its row; the others are rows of their own.
    deployment: "(r.a_deployment = ? OR EXISTS (SELECT 1 FROM attempt_rows a WHERE a.request_rowid = r.seq AND a.deployment = ?))",
    status: "r.status = ?",
};

const OF_ATTEMPTS: Columns = Columns {
    since: "a.request_ts_ms >= ?",
    until: "a.request_ts_ms < ?",
    route: "a.route = ?",
    caller: "a.caller = ?",
    outcome: "a.outcome = ?",
    deployment: "a.deployment = ?",
    status: "a.request_status = ?",
};

/// `WHERE` clauses and their parameters for the request filters, over
/// requests or over attempts (see [`Columns`]).
fn conditions(
    f: &Filter,
    now_ms: i64,
    over_attempts: bool,
) -> Result<(String, Vec<Sql>), QueryError> {
    let c = if over_attempts {
        &OF_ATTEMPTS
    } else {
        &OF_REQUESTS
    };
    let mut w = Where::default();
    w.time_range(f, now_ms, [c.since, c.until])?;
    w.text(&f.route, c.route);
    w.text(&f.caller, c.caller);
    w.text(&f.outcome, c.outcome);
    w.text(&f.deployment, c.deployment);
    if let Some(s) = f.status {
        w.and(c.status, [Sql::Integer(i64::from(s))]);
    }
    Ok(w.finish())
}

/// A `WHERE` clause built a condition at a time, with its parameters in
/// order (empty when there is no condition).
#[derive(Default)]
struct Where {
    clauses: Vec<&'static str>,
    params: Vec<Sql>,
}

impl Where {
    fn and(&mut self, clause: &'static str, params: impl IntoIterator<Item = Sql>) {
        self.clauses.push(clause);
        self.params.extend(params);
    }

    /// `clause` with `value` (for each of its `?`), when the filter has one.
    fn text(&mut self, value: &Option<String>, clause: &'static str) {
        if let Some(v) = value {
            let marks = clause.matches('?').count();
            self.and(clause, std::iter::repeat_n(Sql::Text(v.clone()), marks));
        }
    }

    /// The filter's `since` and `until`, as the two clauses given.
    fn time_range(
        &mut self,
        f: &Filter,
        now_ms: i64,
        [since, until]: [&'static str; 2],
    ) -> Result<(), QueryError> {
        if let Some(s) = &f.since {
            self.and(since, [Sql::Integer(instant(s, "since", now_ms)?)]);
        }
        if let Some(u) = &f.until {
            self.and(until, [Sql::Integer(instant(u, "until", now_ms)?)]);
        }
        Ok(())
    }

    fn finish(self) -> (String, Vec<Sql>) {
        let sql = if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        };
        (sql, self.params)
    }
}

fn page(f: &Filter) -> (u32, u32) {
    (f.limit.unwrap_or(100).clamp(1, 1000), f.offset.unwrap_or(0))
}

fn to_json(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef::*;
    match v {
        Null => Value::Null,
        Integer(i) => json!(i),
        Real(f) => json!(f),
        Text(t) => json!(String::from_utf8_lossy(t)),
        Blob(_) => Value::Null,
    }
}

/// Runs `sql` and gives each row as an object keyed by column name.
fn rows(conn: &Connection, sql: &str, params: &[Sql]) -> Result<Vec<Value>, QueryError> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let out = stmt
        .query_map(rusqlite::params_from_iter(params), |row| {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let mut v = to_json(row.get_ref(i)?);
                // SQLite has no booleans.
                if matches!(name.as_str(), "stream" | "estimated" | "billed" | "pass")
                    && !v.is_null()
                {
                    v = json!(v.as_i64().unwrap_or(0) != 0);
                }
                if name == "verdict"
                    && let Some(text) = v.as_str()
                {
                    v = serde_json::from_str(text).unwrap_or(v);
                }
                obj.insert(name.clone(), v);
            }
            Ok(Value::Object(obj))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(out)
}

/// `GET /admin/usage`: per route and deployment, every attempt counted.
pub fn usage(conn: &Connection, f: &Filter, now_ms: i64) -> Result<Value, QueryError> {
    let (filter, params) = conditions(f, now_ms, true)?;
    let data = rows(
        conn,
        &format!(
            "SELECT a.route AS route, a.deployment AS deployment, COUNT(*) AS requests,
               SUM(a.class IS NULL) AS successes, SUM(a.class IS NOT NULL) AS failures,
               COALESCE(SUM(a.prompt_tokens), 0) AS prompt_tokens,
               COALESCE(SUM(a.completion_tokens), 0) AS completion_tokens,
               COALESCE(SUM(a.cost), 0.0) AS cost, MAX(a.ts_ms) AS last_used_ms
             FROM request_attempts a {filter}
             GROUP BY a.route, a.deployment ORDER BY cost DESC, requests DESC"
        ),
        &params,
    )?;
    Ok(json!({ "data": data }))
}

/// `GET /admin/costs?group_by=day|route|deployment|caller`: spend (every
/// billed attempt, failed ones too) per group.
pub fn costs(conn: &Connection, f: &Filter, now_ms: i64) -> Result<Value, QueryError> {
    let group = match f.group_by.as_deref().unwrap_or("day") {
        "day" => "date(a.ts_ms / 1000, 'unixepoch')",
        "route" => "a.route",
        "deployment" => "a.deployment",
        "caller" => "COALESCE(a.caller, '')",
        other => {
            return Err(QueryError::BadFilter(format!(
                "group_by={other:?}: one of day, route, deployment, caller"
            )));
        }
    };
    let (filter, params) = conditions(f, now_ms, true)?;
    let data = rows(
        conn,
        &format!(
            "SELECT {group} AS key, COUNT(DISTINCT a.request_rowid) AS requests,
               COALESCE(SUM(a.prompt_tokens), 0) AS prompt_tokens,
               COALESCE(SUM(a.completion_tokens), 0) AS completion_tokens,
               COALESCE(SUM(a.cost), 0.0) AS cost, SUM(a.billed AND a.class IS NOT NULL) AS billed_failures
             FROM request_attempts a {filter}
             GROUP BY key ORDER BY key"
        ),
        &params,
    )?;
    let total: f64 = data.iter().filter_map(|r| r["cost"].as_f64()).sum();
    Ok(
        json!({ "group_by": f.group_by.as_deref().unwrap_or("day"), "data": data, "total_cost": total }),
    )
}

/// `GET /admin/quality?group_by=deployment|route|evaluator|day|hour`: the
/// evaluators' verdicts per group (every evaluated attempt): how many, the
/// mean and lowest score, and the share that passed.
pub fn quality(conn: &Connection, f: &Filter, now_ms: i64) -> Result<Value, QueryError> {
    let by = f.group_by.as_deref().unwrap_or("deployment");
    let group = match by {
        "deployment" => "a.deployment",
        "route" => "a.route",
        "evaluator" => "a.evaluator",
        "day" => "date(a.ts_ms / 1000, 'unixepoch')",
        "hour" => "strftime('%Y-%m-%dT%H:00', a.ts_ms / 1000, 'unixepoch')",
        other => {
            return Err(QueryError::BadFilter(format!(
                "group_by={other:?}: one of deployment, route, evaluator, day, hour"
            )));
        }
    };
    let (filter, params) = conditions(f, now_ms, true)?;
    let and = if filter.is_empty() { "WHERE" } else { "AND" };
    let data = rows(
        conn,
        &format!(
            "SELECT {group} AS key, COUNT(a.score) AS evaluations, AVG(a.score) AS mean_score,
               MIN(a.score) AS min_score, AVG(a.pass) AS pass_rate, SUM(NOT a.pass) AS rejected,
               COUNT(*) - COUNT(a.score) AS evaluator_failures, MAX(a.ts_ms) AS last_ms
             FROM request_attempts a
             {filter} {and} a.evaluator IS NOT NULL
             GROUP BY key ORDER BY key"
        ),
        &params,
    )?;
    Ok(json!({ "group_by": by, "data": data, "feedback": feedback(conn, f, by, now_ms)? }))
}

/// Applications' judgements (`POST /v1/feedback`) grouped as the
/// evaluators' scores are (none by evaluator: feedback has none).
fn feedback(conn: &Connection, f: &Filter, by: &str, now_ms: i64) -> Result<Value, QueryError> {
    let group = match by {
        "deployment" => "deployment",
        "route" => "route",
        "day" => "date(ts_ms / 1000, 'unixepoch')",
        "hour" => "strftime('%Y-%m-%dT%H:00', ts_ms / 1000, 'unixepoch')",
        _ => return Ok(Value::Array(Vec::new())),
    };
    let mut w = Where::default();
    w.time_range(f, now_ms, ["ts_ms >= ?", "ts_ms < ?"])?;
    w.text(&f.route, "route = ?");
    w.text(&f.deployment, "deployment = ?");
    w.text(&f.caller, "caller = ?");
    let (filter, params) = w.finish();
    let data = rows(
        conn,
        &format!(
            "SELECT {group} AS key, COUNT(*) AS judgements, AVG(score) AS mean_score,
               MIN(score) AS min_score, MAX(ts_ms) AS last_ms
             FROM feedback {filter} GROUP BY key ORDER BY key"
        ),
        &params,
    )?;
    Ok(Value::Array(data))
}

/// `GET /admin/events?type=...`: the newest first.
pub fn events(conn: &Connection, f: &Filter, now_ms: i64) -> Result<Value, QueryError> {
    if f.status.is_some() || f.outcome.is_some() {
        return Err(QueryError::BadFilter(
            "status and outcome filter requests, not events (events take type, deployment, caller, route, since, until)".into(),
        ));
    }
    let mut w = Where::default();
    w.text(&f.kind, "kind = ?");
    // An event's subject is its deployment (or budget, or `caller:<name>`);
    // a request's route is in its detail. An event has one subject: a
    // deployment and a caller both given select the events of either.
    let caller = f.caller.as_ref().map(|c| Sql::Text(format!("caller:{c}")));
    match (&f.deployment, caller) {
        (Some(d), Some(c)) => w.and("subject IN (?, ?)", [Sql::Text(d.clone()), c]),
        (Some(d), None) => w.and("subject = ?", [Sql::Text(d.clone())]),
        (None, Some(c)) => w.and("subject = ?", [c]),
        (None, None) => {}
    }
    w.text(&f.route, "json_extract(detail, '$.route') = ?");
    w.time_range(f, now_ms, ["ts_ms >= ?", "ts_ms < ?"])?;
    let (filter, mut params) = w.finish();
    let (limit, offset) = page(f);
    params.push(Sql::Integer(i64::from(limit) + 1));
    params.push(Sql::Integer(i64::from(offset)));
    let mut data = rows(
        conn,
        &format!(
            "SELECT ts_ms, kind, subject, detail FROM events {filter} ORDER BY ts_ms DESC, rowid DESC LIMIT ? OFFSET ?"
        ),
        &params,
    )?;
    let more = data.len() > limit as usize;
    data.truncate(limit as usize);
    for e in &mut data {
        if let Some(text) = e["detail"].as_str() {
            e["detail"] = serde_json::from_str(text).unwrap_or(Value::Null);
        }
    }
    Ok(json!({ "data": data, "next_offset": more.then_some(offset + limit) }))
}

/// Totals and latency percentiles of the requests the filter selects.
pub fn summary(conn: &Connection, f: &Filter, now_ms: i64) -> Result<Value, QueryError> {
    let (filter, params) = conditions(f, now_ms, false)?;
    let mut totals = rows(
        conn,
        &format!(
            "SELECT COUNT(*) AS requests, COALESCE(SUM(r.outcome = 'success'), 0) AS successes,
               COALESCE(SUM(r.outcome != 'success'), 0) AS failures,
               COALESCE(SUM(r.attempts > 1), 0) AS failed_over,
               COALESCE(SUM(r.prompt_tokens), 0) AS prompt_tokens,
               COALESCE(SUM(r.completion_tokens), 0) AS completion_tokens,
               COALESCE(SUM(r.cost), 0.0) AS cost
             FROM requests r {filter}"
        ),
        &params,
    )?;
    let mut out = totals.pop().unwrap_or(Value::Null);
    let n = out["requests"].as_i64().unwrap_or(0);
    for (name, p) in [
        ("latency_p50_ms", 0.50),
        ("latency_p95_ms", 0.95),
        ("latency_p99_ms", 0.99),
    ] {
        let mut at = params.clone();
        at.push(Sql::Integer(((n as f64 - 1.0) * p).round().max(0.0) as i64));
        let v = rows(
            conn,
            &format!(
                "SELECT r.latency_ms AS v FROM requests r {filter} ORDER BY r.latency_ms LIMIT 1 OFFSET ?"
            ),
            &at,
        )?;
        out[name] = v.first().map(|r| r["v"].clone()).unwrap_or(Value::Null);
    }
    Ok(out)
}

/// What attempts covered by a budget cost since `from_ms` (a budget's
/// spend restored at start).
pub fn budget_spend(
    conn: &Connection,
    b: &crate::config::BudgetConfig,
    from_ms: i64,
) -> Result<f64, QueryError> {
    // Attempts of the requests since then (their index; an attempt starts
    // after its request, within its deadline).
    let mut clauses = vec!["a.request_ts_ms >= ?".to_string()];
    let mut params = vec![Sql::Integer(from_ms)];
    for (value, clause) in [
        (&b.route, "a.route = ?"),
        (&b.caller, "a.caller = ?"),
        (&b.deployment, "a.deployment = ?"),
    ] {
        if let Some(v) = value {
            clauses.push(clause.to_string());
            params.push(Sql::Text(v.clone()));
        }
    }
    if let Some(t) = &b.tag {
        clauses.push("instr(',' || a.tags || ',', ?) > 0".to_string());
        params.push(Sql::Text(format!(",{t},")));
    }
    let sql = format!(
        "SELECT COALESCE(SUM(a.cost), 0.0) FROM request_attempts a WHERE {}",
        clauses.join(" AND ")
    );
    Ok(conn.query_row(&sql, rusqlite::params_from_iter(params), |r| r.get(0))?)
}
