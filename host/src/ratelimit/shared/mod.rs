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

mod check;

pub use check::{Check, Checked, Reservation, Verdict};

/// The check a request makes before an attempt: see [`check`].
const RESERVE: &str = include_str!("lua/reserve.lua");

/// Records a cool-down: field ARGV[1] of KEYS[1] until now + ARGV[2] ms
/// (the later of that and what is there).
const COOL: &str = include_str!("lua/cool.lua");

/// Adds ARGV[2] (may be negative) to bucket ARGV[1] of KEYS[1], if that
/// bucket is still there; never below zero.
const ADJUST: &str = include_str!("lua/adjust.lua");

/// Publishes this replica's budget reservations and reads the others' and
/// the spend: KEYS[1..n] each budget window's holds (a hash of replica →
/// `amount:until_ms`), KEYS[n+1..2n] its spend counters; ARGV[1] this
/// replica, ARGV[2] how long a hold lasts unless renewed (a dead
/// replica's run out), then this replica's hold on each. Returns, per
/// budget window, the others' holds and the spend, as strings.
const HOLD: &str = include_str!("lua/hold.lua");

/// How long a replica's published budget reservations count if it stops
/// renewing them (it died).
const HOLD_TTL_MS: u64 = 60_000;

/// Where the shared windows live.
pub struct Shared {
    url: String,
    prefix: String,
    timeout: Duration,
    conn: ArcSwapOption<ConnectionManager>,
    reserve: redis::Script,
    adjust: redis::Script,
    cool: redis::Script,
    hold: redis::Script,
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
            hold: redis::Script::new(HOLD),
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

    /// Publishes what this replica holds in reserve on each `(budget
    /// window, amount)` and returns, for each, what the other replicas
    /// hold and what all have spent (`None` when Redis does not answer).
    /// Run off the request path.
    pub async fn hold_budgets(&self, holds: &[(String, f64)]) -> Option<Vec<(f64, f64)>> {
        if holds.is_empty() || self.is_degraded() {
            return None;
        }
        let mut conn = (*self.conn.load_full()?).clone();
        let mut call = self.hold.prepare_invoke();
        for (key, _) in holds {
            call.key(format!("{}:held:{key}", self.prefix));
        }
        for (key, _) in holds {
            call.key(format!("{}:budget:{key}", self.prefix));
        }
        call.arg(&self.replica).arg(HOLD_TTL_MS);
        for (_, amount) in holds {
            call.arg(*amount);
        }
        let answer: Result<redis::RedisResult<Vec<String>>, _> =
            tokio::time::timeout(self.timeout * 4, call.invoke_async(&mut conn)).await;
        let figures = answer.ok()?.ok()?;
        let number = |s: &String| s.parse::<f64>().unwrap_or(0.0).max(0.0);
        Some(
            figures
                .chunks(2)
                .map(|pair| (number(&pair[0]), pair.get(1).map_or(0.0, number)))
                .collect(),
        )
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
