//! The writer thread: opens the database (and opens it again after a fault),
//! commits rows in batched transactions, prunes old rows, and reports the
//! store degraded or recovered.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{BATCH_WAIT, MAX_PENDING, Row, Shared, Status, queue, schema};

fn open_db(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(2))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// The identity of the file a connection opened, to notice it was deleted
/// or replaced (a connection keeps writing to an unlinked file).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes one slice of the rows older than `retention` from each table:
/// the writer is held briefly, and the next batch prunes the next slice.
/// `(rows deleted, whether more remain)`.
fn prune(conn: &rusqlite::Connection, retention: Duration) -> rusqlite::Result<(usize, bool)> {
    const SLICE: usize = 5000;
    let cutoff = crate::pipeline::outcome::now_ms() - retention.as_millis() as i64;
    let mut total = 0;
    let mut more = false;
    for table in ["requests", "attempt_rows", "events", "shadow", "feedback"] {
        let n = conn.execute(
            &format!(
                "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE ts_ms < ?1 LIMIT {SLICE})"
            ),
            [cutoff],
        )?;
        total += n;
        more |= n == SLICE;
    }
    Ok((total, more))
}

pub(super) fn write_loop(shared: &Arc<Shared>, queue: &queue::Queue) {
    let mut conn: Option<(rusqlite::Connection, Option<(u64, u64)>)> = None;
    let mut last_prune: Option<Instant> = None;
    // Created (and migrated) at start, so readers find it before the first
    // request; a failure here is retried with the first rows.
    match open_db(&shared.path) {
        Ok(c) => conn = Some((c, file_id(&shared.path))),
        Err(e) => shared.set_status(Status::Degraded(e.to_string())),
    }
    let mut pending: Vec<Row> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        // Take a batch: wait for the first row (unless rows wait for a
        // retry), then gather for up to BATCH_WAIT.
        // With a retention, an idle writer still wakes once per prune
        // period: rows age out of an idle gateway's store too.
        let idle = shared.retention.map(|_| PRUNE_EVERY);
        let (rows, closed) = queue.take(BATCH_WAIT, !pending.is_empty(), idle);
        pending.extend(rows);
        if pending.is_empty() {
            if closed {
                return;
            }
            if let (Some(retention), Some((c, _))) = (shared.retention, conn.as_ref())
                && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
            {
                // Idle: every slice at once (no request waits on the writer).
                loop {
                    match prune(c, retention) {
                        Ok((_, true)) => continue,
                        Ok((_, false)) => break,
                        Err(e) => {
                            tracing::warn!("store could not prune old rows: {e}");
                            break;
                        }
                    }
                }
                last_prune = Some(Instant::now());
            }
            continue;
        }
        // A database file deleted or replaced under the open connection:
        // reopen (a deleted one is created afresh).
        if conn
            .as_ref()
            .is_some_and(|(_, id)| *id != file_id(&shared.path))
        {
            tracing::warn!(path = %shared.path.display(), "store file deleted or replaced; reopening");
            conn = None;
        }
        let result = match conn.as_mut() {
            Some((c, _)) => commit(c, &pending),
            None => open_db(&shared.path).and_then(|mut c| {
                let r = commit(&mut c, &pending);
                conn = Some((c, file_id(&shared.path)));
                r
            }),
        };
        if result.is_ok()
            && let (Some(retention), Some((c, _))) = (shared.retention, conn.as_ref())
            && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        {
            match prune(c, retention) {
                Ok((n, more)) => {
                    if n > 0 {
                        tracing::debug!(rows = n, "store pruned rows past retention");
                    }
                    if !more {
                        last_prune = Some(Instant::now());
                    }
                }
                Err(e) => {
                    last_prune = Some(Instant::now());
                    tracing::warn!("store could not prune old rows: {e}");
                }
            }
        }
        match result {
            Ok(()) => {
                // Healthy before anyone waiting on a flush hears of it.
                shared.set_status(Status::Ok);
                backoff = Duration::from_millis(100);
                for row in pending.drain(..) {
                    if let Row::Flush(done) = row {
                        let _ = done.send(());
                    }
                }
            }
            Err(e) => {
                shared.set_status(Status::Degraded(e.to_string()));
                // The writer's own reference is the last: no handle is left.
                if closed || Arc::strong_count(shared) == 1 {
                    let lost = pending.len() as u64;
                    shared.dropped.fetch_add(lost, Ordering::Relaxed);
                    tracing::error!(lost, "store closed with rows it could not write");
                    return;
                }
                // Reopened next time: the file may have been replaced or deleted.
                conn = None;
                if pending.len() > MAX_PENDING {
                    let excess = pending.len() - MAX_PENDING;
                    pending.drain(..excess);
                    let n = shared.dropped.fetch_add(excess as u64, Ordering::Relaxed);
                    if shared.pending_drop_warning.due() {
                        tracing::warn!(
                            dropped = n + excess as u64,
                            waiting = MAX_PENDING,
                            "store degraded: rows beyond those kept in memory dropped"
                        );
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn commit(conn: &mut rusqlite::Connection, rows: &[Row]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut cached = false;
    {
        // A request's last attempt is columns of its row (see schema 11);
        // the attempts before it are rows of their own.
        let mut requests = tx.prepare_cached(
            "INSERT INTO requests (id, ts_ms, route, caller, tags, stream, status, outcome, deployment,
             attempts, latency_ms, overhead_ms, ttft_ms, prompt_tokens, completion_tokens, cost, estimated, verdict,
             cache, saved_usd, a_ts_ms, a_deployment, a_adapter, a_class, a_status, a_latency_ms,
             a_ttft_ms, a_prompt_tokens, a_completion_tokens, a_cost, a_billed, a_evaluator, a_score,
             a_pass, a_reasons, a_estimated, a_malformed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
             ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36, ?37)",
        )?;
        let mut attempts = tx.prepare_cached(
            "INSERT INTO attempt_rows (request_id, n, ts_ms, deployment, adapter, class, status, latency_ms,
             ttft_ms, prompt_tokens, completion_tokens, cost, billed, request_rowid,
             evaluator, score, pass, reasons, estimated, malformed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
        )?;
        let mut events = tx.prepare_cached(
            "INSERT INTO events (ts_ms, kind, subject, detail) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for row in rows {
            match row {
                Row::Request(r, list) => {
                    let (last, earlier) = match list.split_last() {
                        Some((last, earlier)) => (Some(last), earlier),
                        None => (None, &[][..]),
                    };
                    let q = last.and_then(|a| a.quality.as_ref());
                    requests.execute(rusqlite::params![
                        r.id,
                        r.ts_ms,
                        r.route,
                        r.caller,
                        r.tags,
                        r.stream,
                        r.status,
                        r.outcome,
                        r.deployment,
                        r.attempts,
                        r.latency_ms,
                        r.overhead_ms,
                        r.ttft_ms,
                        r.prompt_tokens,
                        r.completion_tokens,
                        r.cost,
                        r.estimated,
                        r.verdict,
                        r.cache,
                        r.saved_usd,
                        last.map(|a| a.ts_ms),
                        last.map(|a| &a.deployment),
                        last.map(|a| &a.adapter),
                        last.and_then(|a| a.class),
                        last.and_then(|a| a.status),
                        last.map(|a| a.latency_ms),
                        last.and_then(|a| a.ttft_ms),
                        last.and_then(|a| a.prompt_tokens),
                        last.and_then(|a| a.completion_tokens),
                        last.and_then(|a| a.cost),
                        last.map(|a| a.billed),
                        q.map(|q| &q.evaluator),
                        q.and_then(|q| q.score.map(f64::from)),
                        q.and_then(|q| q.pass),
                        q.and_then(|q| q.reasons.as_ref()),
                        last.map(|a| a.estimated),
                        last.map(|a| a.malformed),
                    ])?;
                    let request_rowid = tx.last_insert_rowid();
                    for a in earlier {
                        attempts.execute(rusqlite::params![
                            a.request_id,
                            a.n,
                            a.ts_ms,
                            a.deployment,
                            a.adapter,
                            a.class,
                            a.status,
                            a.latency_ms,
                            a.ttft_ms,
                            a.prompt_tokens,
                            a.completion_tokens,
                            a.cost,
                            a.billed,
                            request_rowid,
                            a.quality.as_ref().map(|q| &q.evaluator),
                            a.quality.as_ref().and_then(|q| q.score.map(f64::from)),
                            a.quality.as_ref().and_then(|q| q.pass),
                            a.quality.as_ref().and_then(|q| q.reasons.as_ref()),
                            a.estimated,
                            a.malformed,
                        ])?;
                    }
                }
                Row::Event(e) => {
                    events.execute(rusqlite::params![e.ts_ms, e.kind, e.subject, e.detail])?;
                }
                Row::Feedback(f) => {
                    tx.prepare_cached(
                        "INSERT INTO feedback (ts_ms, request_id, route, deployment, caller, score, comment)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(rusqlite::params![
                        f.ts_ms,
                        f.request_id,
                        f.route,
                        f.deployment,
                        f.caller,
                        f.score,
                        f.comment
                    ])?;
                }
                Row::Shadow(d) => {
                    tx.prepare_cached(
                        "INSERT INTO shadow (ts_ms, request_id, route, strategy, live_strategy, live_choice,
                         choice, served, prompt_tokens, completion_tokens, cost, error)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )?
                    .execute(rusqlite::params![
                        d.ts_ms,
                        d.request_id,
                        d.route,
                        d.strategy,
                        d.live_strategy,
                        d.live_choice,
                        d.choice,
                        d.served,
                        d.prompt_tokens,
                        d.completion_tokens,
                        d.cost,
                        d.error
                    ])?;
                }
                Row::CachePut(c) => {
                    cached = true;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO cache (key, route, created_ms, expires_ms, deployment, cost, body)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(rusqlite::params![
                        &c.key[..],
                        c.route,
                        c.created_ms,
                        c.expires_ms,
                        c.deployment,
                        c.cost,
                        &c.body[..]
                    ])?;
                }
                Row::Flush(_) => {}
            }
        }
    }
    // Expired entries go as new ones come (by the index: only those).
    if cached {
        tx.execute(
            "DELETE FROM cache WHERE expires_ms < ?1",
            [crate::pipeline::outcome::now_ms()],
        )?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::super::{AttemptRow, EventRow, QualityRow, RequestRow};
    use super::*;
    use crate::pipeline::outcome::now_ms;

    /// Rows past the retention go, from every table that keeps history;
    /// newer ones stay.
    #[test]
    fn prune_deletes_only_rows_past_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_db(&dir.path().join("db.sqlite")).unwrap();
        let day = 86_400_000;
        let mut rows = Vec::new();
        for (id, ts_ms) in [("old", now_ms() - 3 * day), ("new", now_ms() - day / 2)] {
            rows.push(Row::Request(
                RequestRow {
                    id: id.into(),
                    ts_ms,
                    route: "chat".into(),
                    status: 200,
                    outcome: "success",
                    attempts: 2,
                    ..Default::default()
                },
                // The first a row of its own, the last in the request's.
                (1..=2)
                    .map(|n| AttemptRow {
                        request_id: id.into(),
                        n,
                        ts_ms,
                        deployment: "d".into(),
                        adapter: "openai".into(),
                        ..Default::default()
                    })
                    .collect(),
            ));
            rows.push(Row::Event(EventRow {
                ts_ms,
                kind: "failover".into(),
                subject: id.into(),
                detail: "{}".into(),
            }));
        }
        commit(&mut conn, &rows).unwrap();
        let (deleted, more) = prune(&conn, Duration::from_millis(2 * day as u64)).unwrap();
        assert_eq!((deleted, more), (3, false));
        for (table, column) in [
            ("requests", "id"),
            ("attempts", "request_id"),
            ("events", "subject"),
        ] {
            let left: Vec<String> = conn
                .prepare(&format!("SELECT {column} FROM {table}"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let want = if table == "attempts" {
                &["new", "new"][..]
            } else {
                &["new"][..]
            };
            assert_eq!(left, want, "{table}");
        }
    }

    /// A request of route `chat` at 1,000 ms that was answered after
    /// `attempts` attempts.
    fn answered(id: &str, attempts: u32) -> RequestRow {
        RequestRow {
            id: id.into(),
            ts_ms: 1_000,
            route: "chat".into(),
            status: 200,
            outcome: "success",
            attempts,
            ..Default::default()
        }
    }

    /// A request's last attempt is kept in its own row and the earlier ones
    /// in `attempt_rows`; the `attempts` view gives them all, each as it
    /// was recorded, and a request with none has none.
    #[test]
    fn the_last_attempt_is_folded_into_its_request_and_the_view_gives_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_db(&dir.path().join("db.sqlite")).unwrap();
        let attempt =
            |n: u32, deployment: &str, class: Option<&'static str>, cost: f64| AttemptRow {
                request_id: "r1".into(),
                n,
                ts_ms: 1_000 + i64::from(n),
                deployment: deployment.into(),
                adapter: "openai".into(),
                class,
                status: Some(if class.is_some() { 503 } else { 200 }),
                latency_ms: 2.5 * f64::from(n),
                cost: Some(cost),
                billed: class.is_none(),
                malformed: n,
                quality: (class.is_none()).then(|| QualityRow {
                    evaluator: "basic".into(),
                    score: Some(0.75),
                    pass: Some(true),
                    reasons: Some("[\"ok\"]".into()),
                }),
                ..Default::default()
            };
        let rows = vec![
            Row::Request(
                answered("r1", 3),
                vec![
                    attempt(1, "a", Some("overloaded"), 0.0),
                    attempt(2, "b", Some("timeout"), 0.5),
                    attempt(3, "c", None, 1.25),
                ],
            ),
            Row::Request(answered("cached", 0), Vec::new()),
        ];
        commit(&mut conn, &rows).unwrap();
        let own: i64 = conn
            .query_row("SELECT count(*) FROM attempt_rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(own, 2, "the last attempt has no row of its own");
        type Seen = (
            String,
            u32,
            i64,
            String,
            Option<String>,
            f64,
            bool,
            u32,
            i64,
        );
        let seen: Vec<Seen> = conn
            .prepare(
                "SELECT request_id, n, ts_ms, deployment, class, cost, billed, malformed, request_rowid
                 FROM attempts ORDER BY n",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row: i64 = conn
            .query_row("SELECT seq FROM requests WHERE id = 'r1'", [], |r| r.get(0))
            .unwrap();
        let want = |n: u32, d: &str, class: Option<&str>, cost: f64| -> Seen {
            (
                "r1".into(),
                n,
                1_000 + i64::from(n),
                d.into(),
                class.map(Into::into),
                cost,
                class.is_none(),
                n,
                row,
            )
        };
        assert_eq!(
            seen,
            [
                want(1, "a", Some("overloaded"), 0.0),
                want(2, "b", Some("timeout"), 0.5),
                want(3, "c", None, 1.25),
            ]
        );
        let quality: (String, f64, bool, String) = conn
            .query_row(
                "SELECT evaluator, score, pass, reasons FROM quality_scores",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(quality, ("basic".into(), 0.75, true, "[\"ok\"]".into()));
        let (route, at): (String, i64) = conn
            .query_row(
                "SELECT route, request_ts_ms FROM request_attempts WHERE n = 3",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((route.as_str(), at), ("chat", 1_000));
    }

    /// The admin views find a request by any deployment it tried, whether
    /// that attempt is a row of its own or its request's last, and count
    /// every attempt per deployment.
    #[test]
    fn the_views_see_attempts_in_either_place() {
        use super::super::query::{Filter, requests, usage};
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_db(&dir.path().join("db.sqlite")).unwrap();
        let attempt = |id: &str, n: u32, deployment: &str| AttemptRow {
            request_id: id.into(),
            n,
            ts_ms: 1_000,
            deployment: deployment.into(),
            adapter: "openai".into(),
            ..Default::default()
        };
        let rows = vec![
            Row::Request(
                answered("failed-over", 2),
                vec![
                    attempt("failed-over", 1, "broken"),
                    attempt("failed-over", 2, "good"),
                ],
            ),
            Row::Request(answered("direct", 1), vec![attempt("direct", 1, "good")]),
        ];
        commit(&mut conn, &rows).unwrap();
        let ids = |deployment: &str| -> Vec<String> {
            let f = Filter {
                deployment: Some(deployment.into()),
                ..Default::default()
            };
            let page = requests(&conn, &f, 2_000).unwrap();
            let mut ids: Vec<String> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids("broken"), ["failed-over"]);
        assert_eq!(ids("good"), ["direct", "failed-over"]);
        assert!(ids("other").is_empty());
        let used = usage(&conn, &Filter::default(), 2_000).unwrap();
        let mut per: Vec<(String, i64)> = used["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["deployment"].as_str().unwrap().to_string(),
                    r["requests"].as_i64().unwrap(),
                )
            })
            .collect();
        per.sort();
        assert_eq!(per, [("broken".to_string(), 1), ("good".to_string(), 2)]);
    }

    /// The reports read attempts by their requests' time through the
    /// requests' index, and a request's attempts by its row number: never
    /// a scan of the whole history.
    #[test]
    fn attempts_are_found_by_index_never_by_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_db(&dir.path().join("db.sqlite")).unwrap();
        let plan = |sql: &str| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([1, 2], |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
                .join("; ")
        };
        for sql in [
            "SELECT SUM(cost) FROM request_attempts WHERE request_ts_ms >= ?1 AND request_ts_ms < ?2",
            "SELECT deployment, SUM(cost) FROM request_attempts a WHERE a.request_ts_ms >= ?1 AND ?2 > 0 GROUP BY a.deployment",
            "SELECT n FROM attempts WHERE request_rowid = ?1 AND ?2 > 0 ORDER BY n",
        ] {
            let p = plan(sql);
            assert!(
                !p.contains("SCAN requests") && !p.contains("SCAN attempt_rows"),
                "{sql}: {p}"
            );
        }
    }
}
