//! The request views: a page of records, one record with its attempts,
//! and who asked a request (for feedback on it).

use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};

use super::{Filter, QueryError, conditions, page, rows};

const REQUEST_COLUMNS: &str = "r.id, r.ts_ms, r.route, r.caller, r.tags, r.stream, r.status, r.outcome, \
    r.deployment, r.attempts, r.latency_ms, r.overhead_ms, r.ttft_ms, r.prompt_tokens, \
    r.completion_tokens, r.cost, r.estimated, r.verdict, r.cache, r.saved_usd";

/// `GET /admin/requests`: the newest first (by start time), a page at a
/// time: by `offset`, or after a `cursor` (the previous page's
/// `next_cursor`: its last row's start time and row id). Cursor pages show
/// every record that existed when the first page was read exactly once,
/// whatever is recorded meanwhile; a request recorded later (one that
/// began later, or a long stream that was still running) is on a fresh
/// first page, not necessarily on the pages that follow.
pub fn requests(conn: &Connection, f: &Filter, now_ms: i64) -> Result<Value, QueryError> {
    let (mut filter, mut params) = conditions(f, now_ms, false)?;
    let (limit, offset) = page(f);
    if let Some(c) = &f.cursor {
        if f.offset.is_some() {
            return Err(QueryError::BadFilter(
                "cursor and offset: give one or the other".into(),
            ));
        }
        let (ts, row) = c
            .split_once('.')
            .and_then(|(t, r)| Some((t.parse::<i64>().ok()?, r.parse::<i64>().ok()?)))
            .ok_or_else(|| {
                QueryError::BadFilter(format!("cursor={c:?}: not a next_cursor of this view"))
            })?;
        filter.push_str(if filter.is_empty() { "WHERE " } else { " AND " });
        filter.push_str("(r.ts_ms < ? OR (r.ts_ms = ? AND r.rowid < ?))");
        params.extend([Sql::Integer(ts), Sql::Integer(ts), Sql::Integer(row)]);
    }
    params.push(Sql::Integer(i64::from(limit) + 1));
    params.push(Sql::Integer(i64::from(offset)));
    let mut data = rows(
        conn,
        &format!(
            "SELECT {REQUEST_COLUMNS}, r.rowid AS page_row FROM requests r {filter} ORDER BY r.ts_ms DESC, r.rowid DESC LIMIT ? OFFSET ?"
        ),
        &params,
    )?;
    let more = data.len() > limit as usize;
    data.truncate(limit as usize);
    let next_cursor = data
        .last()
        .filter(|_| more)
        .map(|last| format!("{}.{}", last["ts_ms"], last["page_row"]));
    for row in &mut data {
        if let Some(o) = row.as_object_mut() {
            o.remove("page_row");
        }
    }
    Ok(json!({
        "data": data,
        "next_offset": (more && f.cursor.is_none()).then_some(offset + limit),
        "next_cursor": next_cursor,
    }))
}

/// `GET /admin/requests/{id}`: the request with its attempts, or `None`.
pub fn request(conn: &Connection, id: &str) -> Result<Option<Value>, QueryError> {
    let mut found = rows(
        conn,
        &format!(
            "SELECT {REQUEST_COLUMNS}, r.rowid AS row FROM requests r WHERE r.id = ? ORDER BY r.ts_ms DESC, r.rowid DESC LIMIT 1"
        ),
        &[Sql::Text(id.to_string())],
    )?;
    let Some(mut request) = found.pop() else {
        return Ok(None);
    };
    let attempts = rows(
        conn,
        "SELECT a.n, a.ts_ms, a.deployment, a.adapter, a.class, a.status, a.latency_ms, a.ttft_ms, \
         a.prompt_tokens, a.completion_tokens, a.cost, a.billed, a.estimated, a.malformed, a.evaluator, \
         a.score, a.pass, a.reasons FROM attempts a WHERE a.request_rowid = ? ORDER BY a.n",
        &[Sql::Integer(request["row"].as_i64().unwrap_or(-1))],
    )?;
    if let Some(o) = request.as_object_mut() {
        o.remove("row");
    }
    request["attempts_detail"] = Value::Array(attempts);
    Ok(Some(request))
}

/// Where a request went and who made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub route: Option<String>,
    pub deployment: Option<String>,
    pub caller: Option<String>,
}

/// Who asked request `id` and what served it (its newest record), for
/// feedback on it.
pub fn served(conn: &Connection, id: &str) -> Result<Option<Served>, QueryError> {
    let found = rows(
        conn,
        "SELECT r.route, r.deployment, r.caller FROM requests r WHERE r.id = ? ORDER BY r.ts_ms DESC, r.rowid DESC LIMIT 1",
        &[Sql::Text(id.to_string())],
    )?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Ok(found.first().map(|r| Served {
        route: text(&r["route"]),
        deployment: text(&r["deployment"]),
        caller: text(&r["caller"]),
    }))
}
