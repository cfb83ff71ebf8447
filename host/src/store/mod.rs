//! The store: an embedded SQLite database, written by one thread, never on
//! the request path.
//!
//! A request hands its rows to [`Store::record`], which only puts them on a
//! bounded queue (a full queue drops them, counted, with a warning at most
//! every ten seconds). The writer thread commits what it took in batched
//! transactions (at most [`BATCH_ROWS`] rows or [`BATCH_WAIT`] after the
//! first). The database is in WAL mode with `synchronous = NORMAL`: a crash
//! loses at most the last transactions, never a committed one, and leaves
//! a database that passes `integrity_check`.
//!
//! A database that cannot be written (read-only, full, locked, deleted,
//! corrupt) puts the store in degraded mode: logged once, reported by
//! [`Store::status`], and retried with back-off while rows wait in memory
//! (up to [`MAX_PENDING`], then dropped and counted). It recovers by itself.
//!
//! Requests reach it through their record ([`crate::pipeline::outcome`]);
//! [`query`] reads it for the admin API and `switchyard stats`.

pub mod query;
mod queue;
mod schema;
pub mod series;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rows the queue holds before [`Store::record`] drops.
pub const QUEUE_ROWS: usize = 65_536;
/// Most rows in one transaction.
pub const BATCH_ROWS: usize = 2_048;
/// Longest a row waits for its batch to fill.
pub const BATCH_WAIT: Duration = Duration::from_millis(50);
/// Rows kept in memory while the database cannot be written.
pub const MAX_PENDING: usize = 200_000;

/// One finished request.
#[derive(Clone, Debug, Default)]
pub struct RequestRow {
    pub id: String,
    pub ts_ms: i64,
    pub route: String,
    pub caller: Option<String>,
    pub tags: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub outcome: String,
    pub deployment: Option<String>,
    pub attempts: u32,
    pub latency_ms: f64,
    pub overhead_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cost: Option<f64>,
    pub estimated: bool,
    pub verdict: Option<String>,
    /// What the response cache did (`hit`, `miss`, `bypass`).
    pub cache: Option<&'static str>,
    /// The cost a cache hit saved.
    pub saved_usd: Option<f64>,
}

/// One response cache entry.
#[derive(Clone, Debug)]
pub struct CacheRow {
    pub key: crate::cache::Key,
    pub route: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub deployment: String,
    pub cost: f64,
    pub body: bytes::Bytes,
}

/// One attempt of a request on one deployment.
#[derive(Clone, Debug, Default)]
pub struct AttemptRow {
    pub request_id: String,
    pub n: u32,
    pub ts_ms: i64,
    pub deployment: String,
    pub adapter: String,
    pub class: Option<String>,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cost: Option<f64>,
    pub billed: bool,
    /// Its usage was estimated from text lengths (the upstream sent none).
    pub estimated: bool,
    /// Stream events its adapter skipped as malformed.
    pub malformed: u32,
    /// The evaluator's verdict on this attempt's answer.
    pub quality: Option<QualityRow>,
}

/// An evaluator's verdict on one attempt's answer.
#[derive(Clone, Debug, Default)]
pub struct QualityRow {
    pub evaluator: String,
    /// `None`: the evaluator failed (its reason is in `reasons`).
    pub score: Option<f32>,
    pub pass: Option<bool>,
    /// JSON list of the evaluator's reasons (`None`: it gave none).
    pub reasons: Option<String>,
}

/// Something that happened (a failover, a circuit opening, an alert).
#[derive(Clone, Debug, Default)]
pub struct EventRow {
    pub ts_ms: i64,
    pub kind: String,
    pub subject: String,
    /// JSON.
    pub detail: String,
}

/// An application's judgement of an answer (`POST /v1/feedback`).
#[derive(Debug, Clone, Default)]
pub struct FeedbackRow {
    pub ts_ms: i64,
    pub request_id: String,
    pub route: Option<String>,
    pub deployment: Option<String>,
    pub caller: Option<String>,
    /// 0 (useless) to 1 (perfect).
    pub score: f64,
    pub comment: Option<String>,
}

/// A shadow strategy's decision on one request (see [`crate::shadow`]).
#[derive(Debug, Clone, Default)]
pub struct ShadowRow {
    pub ts_ms: i64,
    pub request_id: String,
    pub route: String,
    pub strategy: String,
    pub live_strategy: Option<String>,
    /// The live order's first deployment.
    pub live_choice: Option<String>,
    /// The shadow's first deployment (none: it failed, see `error`).
    pub choice: Option<String>,
    /// The deployment that served the request (none: it failed).
    pub served: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cost: Option<f64>,
    pub error: Option<String>,
}

/// What the writer is handed. A request comes with its attempts, in one
/// queue slot and one transaction: a crash never leaves one without the other.
pub enum Row {
    Request(RequestRow, Vec<AttemptRow>),
    Event(EventRow),
    Feedback(FeedbackRow),
    Shadow(ShadowRow),
    /// A response cache entry (see [`crate::cache`]).
    CachePut(CacheRow),
    /// Commit everything before this, then answer (tests, benchmarks, shutdown).
    Flush(std::sync::mpsc::Sender<()>),
}

/// The store's condition, for `/healthz`.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Ok,
    Degraded(String),
}

/// A handle on the store (cheap to clone).
#[derive(Clone)]
pub struct Store {
    queue: Arc<queue::Queue>,
    shared: Arc<Shared>,
    /// Closes the queue when the last handle goes.
    _handles: Arc<Handles>,
}

struct Handles(Arc<queue::Queue>);

impl Drop for Handles {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct Shared {
    path: PathBuf,
    /// Rows older than this are pruned (hourly, in the writer).
    retention: Option<Duration>,
    dropped: AtomicU64,
    drop_warning: crate::logging::Every,
    status: Mutex<Status>,
}

impl Store {
    /// Starts the writer on the database at `path` (created with its folder
    /// if missing). Never fails: a database that cannot be opened is a
    /// degraded store, retried.
    pub fn open(path: &Path) -> Store {
        Self::open_with(path, None)
    }

    /// [`Store::open`], pruning rows older than `retention`.
    pub fn open_with(path: &Path, retention: Option<Duration>) -> Store {
        let queue = Arc::new(queue::Queue::default());
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            retention,
            dropped: AtomicU64::new(0),
            drop_warning: crate::logging::Every::new(Duration::from_secs(10)),
            status: Mutex::new(Status::Ok),
        });
        let (writer, rows) = (shared.clone(), queue.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                crate::background::batch_thread();
                write_loop(&writer, &rows)
            })
            .expect("spawn the store writer");
        Store {
            _handles: Arc::new(Handles(queue.clone())),
            queue,
            shared,
        }
    }

    /// Queues a row; never blocks. A full queue drops it (counted).
    pub fn record(&self, row: Row) {
        if !self.queue.push(row) {
            let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if self.shared.drop_warning.due() {
                tracing::warn!(dropped = n, "store queue full: records dropped");
            }
        }
    }

    /// Waits until every row queued before is committed (or `limit` passes).
    pub fn flush(&self, limit: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        if !self.queue.push(Row::Flush(tx)) {
            return false;
        }
        rx.recv_timeout(limit).is_ok()
    }

    /// Rows waiting for the writer.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Rows dropped so far (queue full, or too many waiting on a broken database).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn status(&self) -> Status {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Shared {
    fn set_status(&self, status: Status) {
        let mut current = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match (&*current, &status) {
            (Status::Ok, Status::Degraded(why)) => {
                tracing::error!(path = %self.path.display(), "store degraded, records wait in memory: {why}")
            }
            (Status::Degraded(_), Status::Ok) => {
                tracing::info!(path = %self.path.display(), "store recovered")
            }
            _ => {}
        }
        *current = status;
    }
}

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

fn write_loop(shared: &Arc<Shared>, queue: &queue::Queue) {
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
                    shared.dropped.fetch_add(excess as u64, Ordering::Relaxed);
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
mod tests;
