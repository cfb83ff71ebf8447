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
    for table in ["requests", "attempts", "events", "shadow", "feedback"] {
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
        let mut requests = tx.prepare_cached(
            "INSERT INTO requests (id, ts_ms, route, caller, tags, stream, status, outcome, deployment,
             attempts, latency_ms, overhead_ms, ttft_ms, prompt_tokens, completion_tokens, cost, estimated, verdict,
             cache, saved_usd)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
        )?;
        let mut attempts = tx.prepare_cached(
            "INSERT INTO attempts (request_id, n, ts_ms, deployment, adapter, class, status, latency_ms,
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
                        r.saved_usd
                    ])?;
                    let request_rowid = tx.last_insert_rowid();
                    for a in list {
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
    use super::super::{AttemptRow, EventRow, RequestRow};
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
                    outcome: "success".into(),
                    attempts: 1,
                    ..Default::default()
                },
                vec![AttemptRow {
                    request_id: id.into(),
                    ts_ms,
                    deployment: "d".into(),
                    adapter: "openai".into(),
                    ..Default::default()
                }],
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
            assert_eq!(left, ["new"], "{table}");
        }
    }
}
