//! Limits shared by every replica: the same sliding windows as the local
//! limiter (60 sub-buckets a window), kept in Redis and updated atomically
//! by one Lua script per check (one round trip, `EVALSHA`), with Redis's
//! own clock so replicas with skewed clocks agree on the buckets.
//!
//! Each limit is a hash (`<prefix>:lim:<scope>:<name>:<kind>`) of bucket
//! number → count, trimmed as buckets leave the window and expiring when
//! idle. A check sums the live buckets of every limit and, only if all fit,
//! adds the request to each (so a refused request takes nothing).
//!
//! **Never on the request path for long, never a failed request**: every
//! call has its own timeout (`redis.timeout_ms`, a few ms). When Redis is
//! down or slow the caller falls back to its local limiter, which holds
//! its share of each limit (`limits.replicas_hint`); that is logged once,
//! Redis is retried with back-off (100 ms doubling to 2 s), and its return
//! is logged too. Token corrections (usage known) and give-backs are sent
//! off the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;

use super::{Kind, Limits, Refused};

/// Checks and takes one request (and its tokens) from every limit; see
/// the module's doc.
///
/// KEYS: [1] the deployment's state (cool-downs: field → until, ms), [2]
/// its requests in flight (a sorted set of leases by expiry), then one
/// hash per deployment limit, then per candidate key one hash per key
/// limit. ARGV: [1] tokens, [2] the in-flight cap (0: none), [3] this
/// request's lease, [4] the lease's length in ms, [5] the number of
/// deployment limits, [6] of key limits, [7] of candidate keys; then per
/// deployment limit and then per key limit: its size, its bucket width in
/// µs, 1 when it counts tokens.
///
/// Returns, each followed by the cool-downs as field, ms-left pairs:
/// `{1, headroom‰, now_µs, chosen key (1-based, 0: none)}`,
/// `{0, limit index, wait_µs, used}` (a deployment limit is full),
/// `{2, cap}` (in flight at the cap), `{3, wait_µs}` (every key is full).
const RESERVE: &str = include_str!("lua/reserve.lua");

/// Records a cool-down: field ARGV[1] of KEYS[1] until now + ARGV[2] ms
/// (the later of that and what is there).
const COOL: &str = include_str!("lua/cool.lua");

/// Adds ARGV[2] (may be negative) to bucket ARGV[1] of KEYS[1], if that
/// bucket is still there; never below zero.
const ADJUST: &str = include_str!("lua/adjust.lua");

/// Where the shared windows live.
pub struct Shared {
    url: String,
    prefix: String,
    timeout: Duration,
    conn: ArcSwapOption<ConnectionManager>,
    reserve: redis::Script,
    adjust: redis::Script,
    cool: redis::Script,
    origin: Instant,
    /// Until when (ms since `origin`) Redis is not asked: the back-off.
    skip_until_ms: AtomicU64,
    backoff_ms: AtomicU64,
    /// Whether the fall-back is in force (logged when it starts and ends).
    degraded: AtomicBool,
    /// When (ms since `origin`) the fall-back and the return were last
    /// logged: at most once each per [`WARN_EVERY_MS`].
    warned_ms: AtomicU64,
    back_ms: AtomicU64,
    /// This process's name among the replicas (in its leases).
    replica: String,
    leases: AtomicU64,
}

/// A request's place under a deployment's in-flight cap shared by the
/// replicas: an entry in a sorted set, scored by when it expires (so a
/// replica that dies frees its places when their leases run out), removed
/// when dropped.
pub struct Lease {
    shared: Arc<Shared>,
    key: String,
    member: String,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("member", &self.member)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.key);
        let member = std::mem::take(&mut self.member);
        // Even while Redis looks down: a lease taken before must not hold
        // its place for its whole length. Lost, it still runs out.
        self.shared.off_path(true, move |me, mut conn| async move {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(key).arg(member);
            let _: Result<redis::RedisResult<i64>, _> =
                tokio::time::timeout(me.timeout * 4, cmd.query_async(&mut conn)).await;
        });
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .field("degraded", &self.degraded.load(Relaxed))
            .finish()
    }
}

/// What a shared reservation holds: each limit's hash, bucket and amount.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    taken: Vec<(String, u64, u64, bool)>,
}

/// A shared check's answer.
#[derive(Debug)]
pub enum Checked {
    Admitted {
        reservation: Reservation,
        /// 0..1: the tightest limit after this request.
        headroom: f32,
        /// Cool-downs other replicas saw: `circuit` or `key:<fingerprint>`,
        /// and how long each has left.
        cooling: Vec<(String, Duration)>,
        /// Its place under the in-flight cap, when it has one.
        lease: Option<Lease>,
        /// The candidate key whose windows had room (its index among those
        /// passed), when key windows were checked.
        key_index: Option<usize>,
    },
    /// Every candidate key is at one of its limits: free again after this.
    KeysBusy(Duration, Vec<(String, Duration)>),
    Refused(Refused, Vec<(String, Duration)>),
    /// At its in-flight cap across the replicas (the cap).
    AtCapacity(u32, Vec<(String, Duration)>),
    /// Redis is down, slow or erroring: use the local limiter.
    Unavailable,
}

const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 2_000;
/// The fall-back and the return are each logged at most this often.
const WARN_EVERY_MS: u64 = 10_000;

impl Shared {
    /// A client for `url` (checked now: a bad URL is a config error); it
    /// connects in the background and keeps reconnecting, so a Redis that
    /// is down at start delays nothing.
    pub fn start(url: &str, prefix: &str, timeout: Duration) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis.url: {e}"))?;
        let shared = Arc::new(Self {
            url: redact(url),
            prefix: prefix.to_string(),
            timeout,
            conn: ArcSwapOption::empty(),
            reserve: redis::Script::new(RESERVE),
            adjust: redis::Script::new(ADJUST),
            cool: redis::Script::new(COOL),
            origin: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            warned_ms: AtomicU64::new(0),
            back_ms: AtomicU64::new(0),
            replica: {
                let mut id = [0u8; 6];
                let _ = getrandom::fill(&mut id);
                id.iter().map(|b| format!("{b:02x}")).collect()
            },
            leases: AtomicU64::new(0),
        });
        // No runtime (a config check): nothing to connect for.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = Arc::downgrade(&shared);
            rt.spawn(Self::connect(me, client));
        }
        Ok(shared)
    }

    /// Connects, retrying with back-off for as long as the client is in use
    /// (a reload that drops it ends the retries).
    async fn connect(me: std::sync::Weak<Self>, client: redis::Client) {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_millis(500))
            .set_number_of_retries(2)
            .set_max_delay(BACKOFF_MAX_MS);
        let mut delay = BACKOFF_MIN_MS;
        loop {
            let connected =
                ConnectionManager::new_with_config(client.clone(), config.clone()).await;
            let Some(this) = me.upgrade() else {
                return;
            };
            match connected {
                Ok(conn) => {
                    tracing::info!(redis = %this.url, "connected to Redis: limits are shared by every replica");
                    this.conn.store(Some(Arc::new(conn)));
                    return;
                }
                Err(e) => {
                    this.down(&e.to_string());
                    drop(this);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    delay = (delay * 2).min(BACKOFF_MAX_MS);
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Redis failed: the local limiters take over (logged once), and Redis
    /// is left alone for a growing while.
    fn down(&self, why: &str) {
        let backoff = (self.backoff_ms.load(Relaxed) * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        self.backoff_ms.store(backoff, Relaxed);
        self.skip_until_ms.store(self.now_ms() + backoff, Relaxed);
        // Once per outage: a Redis that flaps while it comes back (a stale
        // connection failing after the first success) is not a new one.
        let now = self.now_ms();
        let last = self.warned_ms.load(Relaxed);
        if !self.degraded.swap(true, Relaxed)
            && (last == 0 || now.saturating_sub(last) >= WARN_EVERY_MS)
        {
            self.warned_ms.store(now.max(1), Relaxed);
            tracing::warn!(redis = %self.url,
                "Redis unavailable ({why}): each replica keeps its share of the limits (limits.replicas_hint) until it returns");
        }
    }

    fn up(&self) {
        self.backoff_ms.store(0, Relaxed);
        let last = self.back_ms.load(Relaxed);
        if self.degraded.swap(false, Relaxed)
            && (last == 0 || self.now_ms().saturating_sub(last) >= WARN_EVERY_MS)
        {
            self.back_ms.store(self.now_ms().max(1), Relaxed);
            tracing::info!(redis = %self.url, "Redis is back: limits are shared again");
        }
    }

    /// Whether the local fall-back is in force.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Relaxed)
    }

    fn key(&self, scope: &str, name: &str, kind: Kind) -> String {
        format!("{}:lim:{scope}:{name}:{}", self.prefix, kind.name())
    }

    fn state_key(&self, scope: &str, name: &str) -> String {
        format!("{}:state:{scope}:{name}", self.prefix)
    }

    /// Runs `work` on a connection off the request path (spawned): not
    /// while Redis is down (unless `even_degraded`), nor without a runtime
    /// (a config check).
    fn off_path<Fut>(
        self: &Arc<Self>,
        even_degraded: bool,
        work: impl FnOnce(Arc<Self>, ConnectionManager) -> Fut,
    ) where
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.is_degraded() && !even_degraded {
            return;
        }
        let (Some(conn), Ok(rt)) = (self.conn.load_full(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        rt.spawn(work(self.clone(), (*conn).clone()));
    }

    /// Adds each `(budget window, cost)` to its counter and hands the
    /// totals every replica spent to `totals` (all sent off the request
    /// path; nothing when Redis is unavailable).
    pub fn add_spend(
        self: &Arc<Self>,
        items: Vec<(String, f64)>,
        totals: impl FnOnce(Vec<f64>) + Send + 'static,
    ) {
        self.off_path(false, move |me, mut conn| async move {
            let mut pipe = redis::pipe();
            for (key, cost) in &items {
                let key = format!("{}:budget:{key}", me.prefix);
                pipe.cmd("INCRBYFLOAT").arg(&key).arg(*cost);
                // A month and a day: the longest window and then some.
                pipe.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(32u64 * 86_400_000)
                    .ignore();
            }
            let answer: Result<redis::RedisResult<Vec<f64>>, _> =
                tokio::time::timeout(me.timeout * 4, pipe.query_async(&mut conn)).await;
            if let Ok(Ok(sums)) = answer {
                totals(sums);
            }
        });
    }

    /// Tells the other replicas that `what` of `name` no longer cools down
    /// (a circuit closed here).
    pub fn clear_cooldown(self: &Arc<Self>, scope: &str, name: &str, what: &str) {
        let key = self.state_key(scope, name);
        let what = what.to_string();
        self.off_path(false, move |me, mut conn| async move {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(key).arg(what);
            let _: Result<redis::RedisResult<i64>, _> =
                tokio::time::timeout(me.timeout * 4, cmd.query_async(&mut conn)).await;
        });
    }

    /// Tells the other replicas that `what` (`circuit`, `key:<fingerprint>`)
    /// of `name` cools down for `for_` (sent off the request path).
    pub fn publish_cooldown(self: &Arc<Self>, scope: &str, name: &str, what: &str, for_: Duration) {
        let key = self.state_key(scope, name);
        let what = what.to_string();
        self.off_path(false, move |me, mut conn| async move {
            let mut call = me.cool.prepare_invoke();
            call.key(key).arg(what).arg(for_.as_millis().max(1) as u64);
            let _: Result<redis::RedisResult<i64>, _> =
                tokio::time::timeout(me.timeout * 4, call.invoke_async(&mut conn)).await;
        });
    }

    /// Checks and takes one request and `tokens` from `name`'s shared
    /// windows. One round trip, at most `redis.timeout_ms`.
    pub async fn reserve(
        self: &Arc<Self>,
        scope: &str,
        name: &str,
        limits: Limits,
        tokens: u64,
        cap: Option<(u32, Duration)>,
        keys: Option<(Limits, &[String])>,
    ) -> Checked {
        if self.now_ms() < self.skip_until_ms.load(Relaxed) {
            return Checked::Unavailable;
        }
        let Some(conn) = self.conn.load_full() else {
            return Checked::Unavailable;
        };
        let windows = windows_of(limits);
        let (key_windows, candidates): (Vec<(Kind, u64, u64)>, &[String]) = match keys {
            Some((l, fps)) if !l.is_empty() && !fps.is_empty() => (windows_of(l), fps),
            _ => (Vec::new(), &[]),
        };
        let mut call = self.reserve.prepare_invoke();
        let in_flight_key = format!("{}:inflight:{scope}:{name}", self.prefix);
        let member = format!("{}:{}", self.replica, self.leases.fetch_add(1, Relaxed));
        call.key(self.state_key(scope, name));
        call.key(&in_flight_key);
        call.arg(tokens);
        match cap {
            Some((max, lease)) => call
                .arg(max)
                .arg(&member)
                .arg(lease.as_millis().max(1) as u64),
            None => call.arg(0).arg("").arg(0),
        };
        call.arg(windows.len())
            .arg(key_windows.len())
            .arg(candidates.len());
        for (kind, _, _) in &windows {
            call.key(self.key(scope, name, *kind));
        }
        let key_window =
            |fp: &str, kind: Kind| format!("{}:lim:key:{name}:{fp}:{}", self.prefix, kind.name());
        for fp in candidates {
            for (kind, _, _) in &key_windows {
                call.key(key_window(fp, *kind));
            }
        }
        for (kind, limit, width) in windows.iter().chain(&key_windows) {
            call.arg(*limit)
                .arg(*width)
                .arg(u8::from(*kind == Kind::Tpm));
        }
        let mut conn = (*conn).clone();
        let answer: Result<redis::RedisResult<Vec<redis::Value>>, _> =
            tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await;
        let values = match answer {
            Err(_) => {
                self.down(&format!("no answer within {} ms", self.timeout.as_millis()));
                // The script may still run: a lease it adds must not hold a
                // place for its whole length (its window counts, at most a
                // window, err on the safe side).
                if cap.is_some() {
                    drop(Lease {
                        shared: self.clone(),
                        key: in_flight_key,
                        member,
                    });
                }
                return Checked::Unavailable;
            }
            Ok(Err(e)) => {
                self.down(&e.to_string());
                return Checked::Unavailable;
            }
            Ok(Ok(v)) => v,
        };
        self.up();
        let number = |v: &redis::Value| match v {
            redis::Value::Int(n) => Some(*n),
            _ => None,
        };
        let head: Vec<i64> = values.iter().take(4).map_while(number).collect();
        let tail_from = match head.first() {
            Some(2 | 3) => 2,
            _ => 4,
        };
        let cooling: Vec<(String, Duration)> = values
            .get(tail_from..)
            .unwrap_or_default()
            .chunks(2)
            .filter_map(|pair| match pair {
                [redis::Value::BulkString(field), left] => Some((
                    String::from_utf8_lossy(field).into_owned(),
                    Duration::from_millis(number(left)?.max(0) as u64),
                )),
                _ => None,
            })
            .collect();
        let need = |kind: Kind| if kind == Kind::Tpm { tokens } else { 1 };
        match head.as_slice() {
            [1, headroom, now_us, chosen] => {
                let now_us = *now_us as u64;
                let mut taken: Vec<(String, u64, u64, bool)> = windows
                    .iter()
                    .map(|(kind, _, width)| {
                        let key = self.key(scope, name, *kind);
                        (key, now_us / width, need(*kind), *kind == Kind::Tpm)
                    })
                    .collect();
                let key_index = usize::try_from(*chosen)
                    .ok()
                    .and_then(|c| c.checked_sub(1))
                    .filter(|&c| c < candidates.len());
                if let Some(c) = key_index {
                    taken.extend(key_windows.iter().map(|(kind, _, width)| {
                        let key = key_window(&candidates[c], *kind);
                        (key, now_us / width, need(*kind), *kind == Kind::Tpm)
                    }));
                }
                Checked::Admitted {
                    reservation: Reservation { taken },
                    headroom: (*headroom as f32 / 1000.0).clamp(0.0, 1.0),
                    cooling,
                    lease: cap.map(|_| Lease {
                        shared: self.clone(),
                        key: in_flight_key,
                        member,
                    }),
                    key_index,
                }
            }
            [2, max, ..] => Checked::AtCapacity(*max as u32, cooling),
            [3, wait_us, ..] => {
                Checked::KeysBusy(Duration::from_micros((*wait_us).max(1) as u64), cooling)
            }
            [0, index, wait_us, _used] => {
                let (kind, limit, _) = windows[(*index as usize)
                    .saturating_sub(1)
                    .min(windows.len().saturating_sub(1))];
                Checked::Refused(
                    Refused {
                        limit: kind,
                        max: limit,
                        retry_after: Duration::from_micros((*wait_us).max(1) as u64),
                    },
                    cooling,
                )
            }
            other => {
                self.down(&format!("unexpected script answer {other:?}"));
                Checked::Unavailable
            }
        }
    }

    /// The request's real token count corrects its `tpm` bucket (sent off
    /// the request path).
    pub fn reconcile(self: &Arc<Self>, r: &Reservation, actual: u64) {
        let changes: Vec<(String, u64, i64)> = r
            .taken
            .iter()
            .filter(|(_, _, _, tokens)| *tokens)
            .map(|(key, slot, need, _)| (key.clone(), *slot, actual as i64 - *need as i64))
            .filter(|(_, _, delta)| *delta != 0)
            .collect();
        self.send_adjustments(changes);
    }

    /// Gives a reservation back whole (the request was never sent).
    pub fn release(self: &Arc<Self>, r: &Reservation) {
        let changes = r
            .taken
            .iter()
            .map(|(key, slot, need, _)| (key.clone(), *slot, -(*need as i64)))
            .collect();
        self.send_adjustments(changes);
    }

    fn send_adjustments(self: &Arc<Self>, changes: Vec<(String, u64, i64)>) {
        if changes.is_empty() {
            return;
        }
        self.off_path(false, move |me, mut conn| async move {
            for (key, slot, delta) in changes {
                let mut call = me.adjust.prepare_invoke();
                call.key(key).arg(slot).arg(delta);
                let sent: Result<redis::RedisResult<i64>, _> =
                    tokio::time::timeout(me.timeout * 4, call.invoke_async(&mut conn)).await;
                if !matches!(sent, Ok(Ok(_))) {
                    // A lost correction errs on the safe side for at most
                    // a window; the next check notices Redis is down.
                    break;
                }
            }
        });
    }
}

/// The windows of `limits`: kind, size, bucket width in µs.
fn windows_of(limits: Limits) -> Vec<(Kind, u64, u64)> {
    [
        (Kind::Rps, limits.rps, 1_000_000u64),
        (Kind::Rpm, limits.rpm, 60_000_000),
        (Kind::Tpm, limits.tpm, 60_000_000),
    ]
    .into_iter()
    .filter_map(|(kind, limit, window)| Some((kind, limit?, window.div_ceil(60))))
    .collect()
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
