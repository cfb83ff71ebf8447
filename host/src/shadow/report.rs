//! `GET /admin/shadow`: each route's shadow strategies over a window (the
//! last 24 hours unless `since` says otherwise) — agreement with the live
//! side and the what-if cost and latency (see [`super::whatif`]).

use std::collections::{BTreeMap, HashMap};

use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};

use super::whatif::{self, Decision, Prices};
use crate::store::query::{Filter, QueryError, instant};

/// The window when the filter gives none.
const DEFAULT_SINCE: &str = "24h";

/// The report, with `prices` from the live config.
pub fn report(
    conn: &Connection,
    f: &Filter,
    now_ms: i64,
    prices: &HashMap<String, Prices>,
) -> Result<Value, QueryError> {
    let since = instant(f.since.as_deref().unwrap_or(DEFAULT_SINCE), "since", now_ms)?;
    let until = match &f.until {
        Some(u) => instant(u, "until", now_ms)?,
        None => i64::MAX,
    };
    let mut sql = String::from(
        "SELECT route, strategy, live_strategy, COALESCE(served, live_choice), choice,
                COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0), cost, error IS NOT NULL
         FROM shadow WHERE ts_ms >= ?1 AND ts_ms < ?2",
    );
    let mut params = vec![Sql::Integer(since), Sql::Integer(until)];
    if let Some(r) = &f.route {
        sql.push_str(" AND route = ?3");
        params.push(Sql::Text(r.clone()));
    }
    // Route → (live strategy, strategy → decisions).
    type Decisions = BTreeMap<String, Vec<Decision>>;
    let mut routes: BTreeMap<String, (Option<String>, Decisions)> = BTreeMap::new();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    while let Some(row) = rows.next()? {
        let entry = routes.entry(row.get(0)?).or_default();
        entry.0 = row.get(2)?;
        entry.1.entry(row.get(1)?).or_default().push(Decision {
            live: row.get(3)?,
            choice: row.get(4)?,
            prompt_tokens: row.get(5)?,
            completion_tokens: row.get(6)?,
            billed: row.get(7)?,
            failed: row.get(8)?,
        });
    }
    let p50 = medians(conn, since, until)?;
    let routes: Vec<Value> = routes
        .into_iter()
        .map(|(route, (live, strategies))| {
            let shadows: Vec<Value> = strategies
                .into_iter()
                .map(|(strategy, decisions)| {
                    let mut v = serde_json::to_value(whatif::summarize(&decisions, prices, &p50))
                        .unwrap_or(Value::Null);
                    v["strategy"] = json!(strategy);
                    v
                })
                .collect();
            json!({"route": route, "live": live, "shadows": shadows})
        })
        .collect();
    Ok(json!({
        "since_ms": since,
        "routes": routes,
        "dropped": super::dropped(),
    }))
}

/// Each deployment's median latency over the window's answered attempts.
pub fn medians(
    conn: &Connection,
    since: i64,
    until: i64,
) -> Result<HashMap<String, f64>, QueryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT deployment, latency_ms FROM request_attempts
         WHERE request_ts_ms >= ?1 AND request_ts_ms < ?2 AND class IS NULL",
    )?;
    let mut rows = stmt.query([since, until])?;
    let mut by: HashMap<String, Vec<f64>> = HashMap::new();
    while let Some(row) = rows.next()? {
        by.entry(row.get(0)?).or_default().push(row.get(1)?);
    }
    Ok(whatif::medians(by))
}
