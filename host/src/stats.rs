//! `switchyard stats`: the admin API's views in the terminal, read from the
//! store's database (read-only; works while the gateway runs).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::config::BudgetConfig;
use crate::store::query::{self, Filter};
use std::collections::BTreeMap;

/// The report for the requests `filter` selects (its time range, route,
/// deployment and caller; `since` a span such as `24h`, or milliseconds
/// since the epoch), costs grouped by its `group_by` (day, route,
/// deployment or caller); JSON when `json`. Budgets are shown whole
/// (their windows are theirs, not the filter's).
pub fn report(
    db: &Path,
    budgets: &BTreeMap<String, BudgetConfig>,
    filter: &Filter,
    json: bool,
) -> Result<String, String> {
    let since = filter.since.as_deref().unwrap_or("24h");
    let by = filter.group_by.as_deref().unwrap_or("day");
    if !db.exists() {
        return Err(format!(
            "no store at {} (the gateway creates it on its first start with store.enabled)",
            db.display()
        ));
    }
    let conn = query::open(db).map_err(|e| e.to_string())?;
    let now = crate::pipeline::outcome::now_ms();
    let filter = Filter {
        since: Some(since.to_string()),
        group_by: Some(by.to_string()),
        ..filter.clone()
    };
    let run = |v: Result<Value, query::QueryError>| v.map_err(|e| e.to_string());
    let summary = run(query::summary(&conn, &filter, now))?;
    let usage = run(query::usage(&conn, &filter, now))?;
    let costs = run(query::costs(&conn, &filter, now))?;
    let quality = run(query::quality(
        &conn,
        &Filter {
            group_by: None,
            ..filter.clone()
        },
        now,
    ))?;
    let failed = run(query::requests(
        &conn,
        &Filter {
            outcome: Some("failed".into()),
            limit: Some(10),
            group_by: None,
            ..filter.clone()
        },
        now,
    ))?;
    let events = run(query::events(
        &conn,
        &Filter {
            limit: Some(10),
            group_by: None,
            ..filter.clone()
        },
        now,
    ))?;
    // The configured budgets' current windows, as the gateway restores
    // them at start (without what is in flight).
    let tallies = crate::budget::Budgets::default();
    tallies.set(budgets.clone());
    let unread = std::cell::RefCell::new(None);
    tallies.restore(now, |_, b, from| {
        query::budget_spend(&conn, b, from).unwrap_or_else(|e| {
            *unread.borrow_mut() = Some(e.to_string());
            0.0
        })
    });
    if let Some(e) = unread.into_inner() {
        return Err(format!("cannot read the budgets' spend: {e}"));
    }
    let budgets = tallies.view(now);
    if json {
        return Ok(serde_json::json!({
            "summary": summary, "usage": usage["data"], "costs": costs, "quality": quality["data"],
            "budgets": budgets["data"], "recent_failures": failed["data"], "recent_events": events["data"],
        })
        .to_string());
    }
    let mut out = String::new();
    let mut scope = format!("since {since}");
    for (name, v) in [
        ("until", &filter.until),
        ("route", &filter.route),
        ("deployment", &filter.deployment),
        ("caller", &filter.caller),
    ] {
        if let Some(v) = v {
            let _ = write!(scope, ", {name} {v}");
        }
    }
    let _ = writeln!(out, "Requests {scope} ({})", db.display());
    let num = |v: &Value| v.as_f64().map_or("-".to_string(), |f| format!("{f:.1}"));
    let _ = writeln!(
        out,
        "  {} requests: {} succeeded, {} failed, {} failed over; latency p50 {} ms, p95 {} ms, p99 {} ms; {} prompt + {} completion tokens; cost ${:.6}\n",
        summary["requests"],
        summary["successes"],
        summary["failures"],
        summary["failed_over"],
        num(&summary["latency_p50_ms"]),
        num(&summary["latency_p95_ms"]),
        num(&summary["latency_p99_ms"]),
        summary["prompt_tokens"],
        summary["completion_tokens"],
        summary["cost"].as_f64().unwrap_or(0.0),
    );
    table(
        &mut out,
        "Usage per route and deployment (every attempt)",
        &[
            "route",
            "deployment",
            "requests",
            "successes",
            "failures",
            "prompt_tokens",
            "completion_tokens",
            "cost",
        ],
        usage["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    table(
        &mut out,
        &format!(
            "Costs by {by} (total ${:.6})",
            costs["total_cost"].as_f64().unwrap_or(0.0)
        ),
        &[
            "key",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "cost",
            "billed_failures",
        ],
        costs["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    table(
        &mut out,
        "Quality per deployment (evaluator verdicts)",
        &[
            "key",
            "evaluations",
            "mean_score",
            "min_score",
            "pass_rate",
            "rejected",
        ],
        quality["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    table(
        &mut out,
        "Budgets (current windows)",
        &[
            "name",
            "period",
            "spent_usd",
            "limit_usd",
            "fraction",
            "action",
        ],
        budgets["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    table(
        &mut out,
        "Recent failed requests",
        &["id", "route", "status", "attempts", "latency_ms"],
        failed["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    table(
        &mut out,
        "Recent events",
        &["ts_ms", "kind", "subject"],
        events["data"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    Ok(out)
}

/// A plain-text table of `columns` from `rows`, columns padded to fit.
fn table(out: &mut String, title: &str, columns: &[&str], rows: &[Value]) {
    let _ = writeln!(out, "{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)\n");
        return;
    }
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            if f != 0.0 && f.abs() < 0.01 {
                format!("{f:.6}")
            } else {
                format!("{f:.2}")
            }
        }
        other => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |values: Vec<&str>| {
        let mut l = String::from(" ");
        for (v, w) in values.iter().zip(&widths) {
            let _ = write!(l, " {v:<w$}");
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(columns.to_vec()));
    for r in &cells {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
    out.push('\n');
}
