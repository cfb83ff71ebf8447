//! The response cache: an identical request on a route that opted in is
//! answered from an earlier answer instead of an upstream call.
//!
//! **The key** is a SHA-256 over the route, the request with the members that
//! do not change the answer left out (`stream`, `stream_options`, `user`,
//! `fallbacks`; object members in sorted order), and the content hashes of
//! the route's adapter and evaluator plugins: a plugin swap changes every key
//! of its routes.
//!
//! **What is stored**: answers that passed their evaluation (or had none),
//! from a complete request or a stream that ended cleanly on its first leg,
//! as one canonical `chat.completion`. A hit is served as JSON, or replayed
//! as a stream with a live stream's chunk shape ([`replay`]).
//!
//! **Two layers.** An LRU in memory, bounded by entries and by bytes, in
//! front of the store (SQLite, [`crate::store`]): entries are written there
//! through the store's writer (never on the request path) and survive
//! restarts. The keys the store holds are kept in memory, so a miss costs no
//! read; an entry only on disk is read off the runtime's threads.
//!
//! **Failure** degrades the cache, never a request: a store that cannot be
//! read answers `bypass` (logged once a minute) and the request goes
//! upstream.

mod key;
pub mod replay;
mod stored;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Deserialize;

pub use key::{Key, Normalised, key_for};

use crate::pipeline::outcome::now_ms;

/// `cache` at the top of the config: the memory layer's bounds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Entries in memory at most.
    #[serde(default = "default_entries")]
    pub max_entries: usize,
    /// Their bytes at most (answers, keys and bookkeeping).
    #[serde(default = "default_mib")]
    pub max_mib: f64,
    /// Also keep entries in the store (when it is on), across restarts.
    #[serde(default = "yes")]
    pub persist: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_entries(),
            max_mib: default_mib(),
            persist: true,
        }
    }
}

/// `routes.<m>.cache`: whether and how long a route's answers are reused.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteCache {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_ttl")]
    pub ttl_s: u64,
    /// Every request, not only deterministic ones (`temperature: 0`).
    #[serde(default)]
    pub all_requests: bool,
}

impl Default for RouteCache {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_s: default_ttl(),
            all_requests: false,
        }
    }
}

fn default_entries() -> usize {
    10_000
}
fn default_mib() -> f64 {
    64.0
}
fn default_ttl() -> u64 {
    300
}
fn yes() -> bool {
    true
}

/// What the cache did for a request (the `x-switchyard-cache` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Bypass,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Bypass => "bypass",
        }
    }
}

/// One stored answer.
#[derive(Clone, Debug)]
pub struct Entry {
    /// A canonical `chat.completion`.
    pub body: Bytes,
    /// The deployment that answered.
    pub deployment: Arc<str>,
    /// What the answer cost (what a hit saves).
    pub cost: f64,
    pub created_ms: i64,
    pub expires_ms: i64,
}

impl Entry {
    fn size(&self) -> usize {
        // The body, the key, the deployment's name, and the map's and
        // list's bookkeeping (measured roughly).
        self.body.len() + self.deployment.len() + 32 + 96
    }
}

/// A miss whose answer is stored once it is known (and passed).
#[derive(Clone, Debug)]
pub struct Pending {
    pub key: Key,
    pub route: String,
    pub ttl_ms: i64,
    /// The route's deployments: only their answers are stored (one from a
    /// fallback route is not this route's answer).
    pub members: Vec<String>,
    /// A streamed answer can be stored whole (one choice, no logprobs).
    pub stream_whole: bool,
}

/// What a request may do with the cache, from its headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `x-switchyard-cache: on`: a non-deterministic request opts in.
    pub opt_in: bool,
    /// `Cache-Control: no-cache`, `x-switchyard-cache: refresh`: never
    /// served from the cache (its answer may be stored).
    pub no_read: bool,
    /// `Cache-Control: no-store`: its answer is not stored.
    pub no_store: bool,
}

impl Directives {
    /// Reads `Cache-Control` and `x-switchyard-cache`; an unknown value of
    /// the latter is refused, naming the ones it takes.
    pub fn parse(cache_control: Option<&str>, switch: Option<&str>) -> Result<Self, String> {
        let mut d = Directives::default();
        for part in cache_control.unwrap_or("").split(',') {
            match part.trim().to_ascii_lowercase().as_str() {
                "no-cache" => d.no_read = true,
                "no-store" => d.no_store = true,
                _ => {}
            }
        }
        match switch.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") => {}
            Some("on") => d.opt_in = true,
            Some("refresh") => d.no_read = true,
            Some("bypass" | "off") => {
                d.no_read = true;
                d.no_store = true;
            }
            Some(other) => {
                return Err(format!(
                    "header x-switchyard-cache: {other:?} is not one of on, refresh, bypass, off"
                ));
            }
        }
        Ok(d)
    }
}

/// The cache (one per process, kept across reloads).
pub struct Cache {
    memory: Mutex<Memory>,
    disk: Option<Disk>,
    pub(crate) counters: Counters,
}

/// Figures for `/metrics`, and the failure warning's gate.
pub(crate) struct Counters {
    pub(crate) stored: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) errors: AtomicU64,
    warned: crate::logging::Every,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            stored: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            warned: crate::logging::Every::new(std::time::Duration::from_secs(60)),
        }
    }
}

struct Memory {
    map: lru::LruCache<Key, Entry>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

/// The store's copy: the keys it holds (and until when), and a connection
/// to read an entry with.
struct Disk {
    path: PathBuf,
    keys: Mutex<stored::StoredKeys>,
    conn: Mutex<Option<rusqlite::Connection>>,
}

impl Cache {
    /// A cache bounded by `config`, persisted in the store at `store`
    /// (`None`: memory only). The keys the store holds are read now.
    pub fn new(config: &CacheConfig, store: Option<&Path>) -> Arc<Self> {
        let disk = store.filter(|_| config.persist).map(|path| {
            let keys = read_keys(path).unwrap_or_else(|e| {
                tracing::warn!(
                    "the cache cannot read its entries from the store: {e}; starting empty"
                );
                stored::StoredKeys::default()
            });
            if !keys.is_empty() {
                tracing::info!(entries = keys.len(), "cache entries found in the store");
            }
            Disk {
                path: path.to_path_buf(),
                keys: Mutex::new(keys),
                conn: Mutex::new(None),
            }
        });
        let cache = Arc::new(Self {
            memory: Mutex::new(Memory {
                map: lru::LruCache::unbounded(),
                bytes: 0,
                max_entries: 0,
                max_bytes: 0,
            }),
            disk,
            counters: Counters::default(),
        });
        cache.configure(config);
        cache
    }

    /// New bounds (a reload): entries past them are evicted now.
    pub fn configure(&self, config: &CacheConfig) {
        let mut m = lock(&self.memory);
        m.max_entries = config.max_entries;
        m.max_bytes = (config.max_mib * 1024.0 * 1024.0) as usize;
        let evicted = m.trim();
        self.counters.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Entries and bytes in memory.
    pub fn size(&self) -> (usize, usize) {
        let m = lock(&self.memory);
        (m.map.len(), m.bytes)
    }

    /// The entry for `key` still fresh, from memory or (read off the
    /// runtime's threads) the store. `Err`: the store could not be read.
    pub async fn get(self: &Arc<Self>, key: &Key) -> Result<Option<Entry>, String> {
        let now = now_ms();
        {
            let mut m = lock(&self.memory);
            match m.map.get(key) {
                Some(e) if e.expires_ms > now => return Ok(Some(e.clone())),
                Some(_) => {
                    if let Some(e) = m.map.pop(key) {
                        m.bytes -= e.size();
                    }
                }
                None => {}
            }
        }
        let Some(disk) = &self.disk else {
            return Ok(None);
        };
        {
            let mut keys = lock(&disk.keys);
            match keys.get(key) {
                Some(expires) if expires > now => {}
                Some(_) => {
                    keys.remove(key);
                    return Ok(None);
                }
                None => return Ok(None),
            }
        }
        let this = self.clone();
        let key = *key;
        let read = tokio::task::spawn_blocking(move || {
            let disk = this.disk.as_ref().expect("checked above");
            disk.read(&key, now)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        match read {
            Ok(Some(entry)) => {
                self.remember(key, entry.clone());
                Ok(Some(entry))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed(&format!("cannot read the store ({e})"));
                Err(e)
            }
        }
    }

    /// Keeps `entry` under `key` in memory and, through the store's writer,
    /// on disk.
    pub fn put(&self, key: Key, route: &str, entry: Entry, store: Option<&crate::store::Store>) {
        self.counters.stored.fetch_add(1, Ordering::Relaxed);
        if let (Some(disk), Some(store)) = (&self.disk, store) {
            let mut keys = lock(&disk.keys);
            // The store drops expired rows as new ones come; their keys
            // leave here a few at a time.
            keys.insert(key, entry.expires_ms, now_ms());
            drop(keys);
            store.record(crate::store::Row::CachePut(crate::store::CacheRow {
                key,
                route: route.to_string(),
                created_ms: entry.created_ms,
                expires_ms: entry.expires_ms,
                deployment: entry.deployment.to_string(),
                cost: entry.cost,
                body: entry.body.clone(),
            }));
        }
        self.remember(key, entry);
    }

    fn remember(&self, key: Key, entry: Entry) {
        let mut m = lock(&self.memory);
        m.bytes += entry.size();
        if let Some(old) = m.map.put(key, entry) {
            m.bytes -= old.size();
        }
        let evicted = m.trim();
        self.counters.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Stores the answer of a miss.
    pub fn store(
        &self,
        pending: Pending,
        body: Bytes,
        deployment: &str,
        cost: f64,
        store: Option<&crate::store::Store>,
    ) {
        let now = now_ms();
        let entry = Entry {
            body,
            deployment: Arc::from(deployment),
            cost,
            created_ms: now,
            expires_ms: now + pending.ttl_ms,
        };
        self.put(pending.key, &pending.route, entry, store);
    }

    /// A failure of the cache's own (the request goes on without it).
    pub fn failed(&self, what: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if self.counters.warned.due() {
            tracing::warn!("response cache bypassed: {what}; requests go upstream meanwhile");
        }
    }
}

impl Memory {
    /// Evicts the least recently used entries past the bounds; how many.
    fn trim(&mut self) -> u64 {
        let mut n = 0;
        while self.map.len() > self.max_entries || self.bytes > self.max_bytes {
            match self.map.pop_lru() {
                Some((_, e)) => {
                    self.bytes -= e.size();
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

impl Disk {
    fn read(&self, key: &Key, now: i64) -> rusqlite::Result<Option<Entry>> {
        let mut conn = lock(&self.conn);
        if conn.is_none() {
            *conn = Some(open_read(&self.path)?);
        }
        let c = conn.as_ref().expect("opened above");
        let found = c
            .prepare_cached(
                "SELECT body, deployment, cost, created_ms, expires_ms FROM cache WHERE key = ?1",
            )
            .and_then(|mut s| {
                let mut rows = s.query([&key[..]])?;
                match rows.next()? {
                    None => Ok(None),
                    Some(r) => Ok(Some(Entry {
                        body: Bytes::from(r.get::<_, Vec<u8>>(0)?),
                        deployment: Arc::from(r.get::<_, String>(1)?),
                        cost: r.get(2)?,
                        created_ms: r.get(3)?,
                        expires_ms: r.get(4)?,
                    })),
                }
            });
        if found.is_err() {
            // A fresh connection next time (the file may have been replaced).
            *conn = None;
        }
        Ok(found?.filter(|e| e.expires_ms > now))
    }
}

fn read_keys(path: &Path) -> rusqlite::Result<stored::StoredKeys> {
    if !path.exists() {
        return Ok(stored::StoredKeys::default());
    }
    let conn = open_read(path)?;
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'cache')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(stored::StoredKeys::default());
    }
    let mut s = conn.prepare("SELECT key, expires_ms FROM cache WHERE expires_ms > ?1")?;
    let rows = s.query_map([now_ms()], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut keys = Vec::new();
    for row in rows {
        let (k, expires) = row?;
        if let Ok(k) = Key::try_from(k.as_slice()) {
            keys.push((k, expires));
        }
    }
    Ok(keys.into_iter().collect())
}

/// A read-only connection; a busy database is waited for briefly (an entry
/// read late is worth less than the upstream call it saves).
fn open_read(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(200))?;
    Ok(conn)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
