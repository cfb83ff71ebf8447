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
mod rows;
mod schema;
pub mod series;
mod writer;

pub use rows::*;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rows the queue holds before [`Store::record`] drops.
pub const QUEUE_ROWS: usize = 65_536;
/// Most rows in one transaction.
pub const BATCH_ROWS: usize = 2_048;
/// Longest a row waits for its batch to fill.
pub const BATCH_WAIT: Duration = Duration::from_millis(50);
/// Rows kept in memory while the database cannot be written.
pub const MAX_PENDING: usize = 200_000;

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
    /// Its own: rows dropped by a degraded writer warn apart from a full queue.
    pending_drop_warning: crate::logging::Every,
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
            pending_drop_warning: crate::logging::Every::new(Duration::from_secs(10)),
            status: Mutex::new(Status::Ok),
        });
        let (writer, rows) = (shared.clone(), queue.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                crate::background::batch_thread();
                writer::write_loop(&writer, &rows)
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

#[cfg(test)]
mod tests;
