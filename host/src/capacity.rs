//! Concurrency caps and the wait queue.
//!
//! A [`Gauge`] counts what is in flight against one cap: the whole gateway
//! (`limits.max_in_flight`), a route or a deployment (`max_in_flight`).
//! A request that finds every candidate busy (at a cap, at a rate limit,
//! or cooling down after a 429) waits in one bounded queue instead of
//! failing: `critical` before `high` before `normal` before `low`, first
//! come first served within a priority. Every released slot wakes the
//! first waiter; a waiter that still finds nothing for itself passes the
//! wake-up on to the next, so a slot one waiter cannot use (another
//! route's) is not lost. Waiters also wake when the earliest rate-limit
//! reset they were told of passes.
//!
//! Gauges and the queue are kept across config reloads (by route and
//! deployment name): requests in flight on the old config still hold
//! their slots.

use std::collections::BTreeMap;
use std::sync::atomic::{
    AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::TaskPriority;

/// What is in flight against one cap.
#[derive(Debug)]
pub struct Gauge {
    now: AtomicU32,
    waiters: Arc<Waiters>,
}

/// One unit of a gauge (and, with Redis, the replicas' shared lease),
/// given back when dropped.
#[derive(Debug)]
pub struct Slot {
    gauge: Option<Arc<Gauge>>,
    /// Held for its `Drop`, which gives the lease back.
    _lease: Option<crate::ratelimit::shared::Lease>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(g) = self.gauge.take() {
            g.now.fetch_sub(1, SeqCst);
            g.waiters.wake_first();
        }
    }
}

impl Slot {
    /// Gives the slot back without waking the queue: for a request that
    /// took it, found something else full, and is about to wait itself
    /// (waking the queue would wake it, and it would spin).
    pub fn give_back_quietly(mut self) {
        if let Some(g) = self.gauge.take() {
            g.now.fetch_sub(1, SeqCst);
        }
    }
}

impl Gauge {
    pub fn new(waiters: Arc<Waiters>) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicU32::new(0),
            waiters,
        })
    }

    /// A slot if fewer than `max` are taken.
    pub fn try_acquire(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.now
            .fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot {
                gauge: Some(self.clone()),
                _lease: None,
            })
    }

    /// A slot under a cap the replicas share: counted here (for the admin
    /// API) whatever the local count, held with its `lease`.
    pub fn leased(self: &Arc<Self>, lease: crate::ratelimit::shared::Lease) -> Slot {
        self.now.fetch_add(1, SeqCst);
        Slot {
            gauge: Some(self.clone()),
            _lease: Some(lease),
        }
    }

    pub fn current(&self) -> u32 {
        self.now.load(SeqCst)
    }
}

/// The requests waiting for a candidate, in the order they are served.
#[derive(Debug, Default)]
pub struct Waiters {
    queue: Mutex<BTreeMap<(u8, u64), Arc<Notify>>>,
    len: AtomicUsize,
    seq: AtomicU64,
}

/// A place in the queue; leaving it (drop) gives the place up.
pub struct Ticket {
    waiters: Arc<Waiters>,
    key: (u8, u64),
    notify: Arc<Notify>,
}

fn rank(p: TaskPriority) -> u8 {
    match p {
        TaskPriority::Critical => 0,
        TaskPriority::High => 1,
        TaskPriority::Normal => 2,
        TaskPriority::Low => 3,
    }
}

impl Waiters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u8, u64), Arc<Notify>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.len.load(SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the queue, or `None` when `max_len` are already waiting.
    pub fn enter(self: &Arc<Self>, priority: TaskPriority, max_len: usize) -> Option<Ticket> {
        let mut q = self.lock();
        if q.len() >= max_len {
            return None;
        }
        let key = (rank(priority), self.seq.fetch_add(1, Relaxed));
        let notify = Arc::new(Notify::new());
        q.insert(key, notify.clone());
        self.len.store(q.len(), SeqCst);
        Some(Ticket {
            waiters: self.clone(),
            key,
            notify,
        })
    }

    /// Something freed up: the first waiter tries again. (One atomic load
    /// when nobody waits.)
    pub fn wake_first(&self) {
        if self.is_empty() {
            return;
        }
        if let Some(n) = self.lock().values().next() {
            n.notify_one();
        }
    }

    fn wake_after(&self, key: (u8, u64)) {
        use std::ops::Bound::{Excluded, Unbounded};
        if let Some((_, n)) = self.lock().range((Excluded(key), Unbounded)).next() {
            n.notify_one();
        }
    }
}

impl Ticket {
    /// Waits until woken or `for_` passes; whether it was woken.
    pub async fn wait(&self, for_: Duration) -> bool {
        tokio::time::timeout(for_, self.notify.notified())
            .await
            .is_ok()
    }

    /// Woken but nothing was free for this request: the next waiter may
    /// be able to use what was freed.
    pub fn pass_on(&self) {
        self.waiters.wake_after(self.key);
    }

    /// Whether it is first in line (tests).
    #[cfg(test)]
    fn is_first(&self) -> bool {
        self.waiters.lock().keys().next() == Some(&self.key)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut q = self.waiters.lock();
        q.remove(&self.key);
        self.waiters.len.store(q.len(), SeqCst);
        // Its place goes to the next: a wake-up it had not used yet is not lost.
        if let Some(n) = q.values().next() {
            n.notify_one();
        }
    }
}

/// The gateway-wide gauges and queue, kept across reloads.
#[derive(Debug)]
pub struct Capacity {
    pub waiters: Arc<Waiters>,
    pub global: Arc<Gauge>,
    routes: Mutex<std::collections::HashMap<String, Arc<Gauge>>>,
    deployments: Mutex<std::collections::HashMap<String, Arc<Gauge>>>,
}

impl Default for Capacity {
    fn default() -> Self {
        let waiters = Waiters::new();
        Self {
            global: Gauge::new(waiters.clone()),
            waiters,
            routes: Default::default(),
            deployments: Default::default(),
        }
    }
}

impl Capacity {
    fn gauge(
        &self,
        map: &Mutex<std::collections::HashMap<String, Arc<Gauge>>>,
        name: &str,
    ) -> Arc<Gauge> {
        map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Gauge::new(self.waiters.clone()))
            .clone()
    }

    /// Route `name`'s gauge (the same one across reloads).
    pub fn route(&self, name: &str) -> Arc<Gauge> {
        self.gauge(&self.routes, name)
    }

    /// Deployment `name`'s gauge (the same one across reloads).
    pub fn deployment(&self, name: &str) -> Arc<Gauge> {
        self.gauge(&self.deployments, name)
    }
}

/// One request's wait: its place in the queue (taken on its first wait
/// and kept across its retries) and its deadline.
pub struct Waiting {
    waiters: Arc<Waiters>,
    max_len: usize,
    deadline: std::time::Instant,
    ticket: Option<Ticket>,
    /// The last wait ended with a wake-up (not a timer): if this request
    /// still finds nothing, the wake-up goes on to the next waiter.
    woken: bool,
}

/// Why a request stops waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// `max_len` requests already wait.
    Full,
    /// Its `max_wait_ms` has passed (or would, before the earliest reset).
    TimedOut,
}

impl Waiting {
    pub fn new(
        capacity: &Capacity,
        config: crate::config::QueueConfig,
        begun: std::time::Instant,
    ) -> Self {
        Self {
            waiters: capacity.waiters.clone(),
            max_len: config.max_len,
            deadline: begun + Duration::from_millis(config.max_wait_ms),
            ticket: None,
            woken: false,
        }
    }

    /// Nothing was free: waits for a slot to be released or for `reset`
    /// (the earliest a limit frees up), whichever comes first; then the
    /// caller tries again. Gives up at once when the deadline would pass
    /// before `reset`.
    pub async fn wait(
        &mut self,
        priority: TaskPriority,
        reset: Option<Duration>,
    ) -> Result<(), GiveUp> {
        let now = std::time::Instant::now();
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() || reset.is_some_and(|r| r > left) {
            return Err(GiveUp::TimedOut);
        }
        if self.ticket.is_none() {
            self.ticket = Some(
                self.waiters
                    .enter(priority, self.max_len)
                    .ok_or(GiveUp::Full)?,
            );
            // Something may have freed up before this request was in the
            // queue to be woken: try once more, now as a waiter.
            return Ok(());
        }
        let Some(ticket) = &self.ticket else {
            return Err(GiveUp::Full);
        };
        if self.woken {
            ticket.pass_on();
        }
        // A limit's reset is a moment, not a wake-up: try just after it.
        let for_ = reset.map_or(left, |r| (r + Duration::from_millis(1)).min(left));
        self.woken = ticket.wait(for_).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_never_gives_more_than_its_cap() {
        let g = Gauge::new(Waiters::new());
        let a = g.try_acquire(2).unwrap();
        let _b = g.try_acquire(2).unwrap();
        assert!(g.try_acquire(2).is_none());
        drop(a);
        assert_eq!(g.current(), 1);
        assert!(g.try_acquire(2).is_some());
    }

    #[tokio::test]
    async fn waiters_are_served_by_priority_then_arrival() {
        let w = Waiters::new();
        let low = w.enter(TaskPriority::Low, 10).unwrap();
        let normal = w.enter(TaskPriority::Normal, 10).unwrap();
        let critical = w.enter(TaskPriority::Critical, 10).unwrap();
        assert!(w.enter(TaskPriority::High, 3).is_none(), "full");
        assert!(critical.is_first());
        w.wake_first();
        assert!(critical.wait(Duration::from_millis(100)).await);
        assert!(!normal.wait(Duration::from_millis(10)).await);
        // The critical one could not use it: the next in line gets it.
        critical.pass_on();
        assert!(normal.wait(Duration::from_millis(100)).await);
        drop(critical);
        drop(normal);
        assert!(low.is_first());
        // Leaving wakes the next: a wake-up is never lost.
        assert!(low.wait(Duration::from_millis(100)).await);
        assert_eq!(w.len(), 1);
    }

    #[tokio::test]
    async fn a_slot_given_back_quietly_wakes_no_one() {
        let w = Waiters::new();
        let g = Gauge::new(w.clone());
        let t = w.enter(TaskPriority::Normal, 10).unwrap();
        g.try_acquire(1).unwrap().give_back_quietly();
        assert_eq!(g.current(), 0);
        assert!(
            !t.wait(Duration::from_millis(30)).await,
            "no self wake-up to spin on"
        );
    }

    #[tokio::test]
    async fn a_first_wait_returns_at_once_to_try_again_as_a_waiter() {
        let capacity = Capacity::default();
        let config = crate::config::QueueConfig {
            max_len: 4,
            max_wait_ms: 500,
        };
        let mut waiting = Waiting::new(&capacity, config, std::time::Instant::now());
        let started = std::time::Instant::now();
        assert_eq!(waiting.wait(TaskPriority::Normal, None).await, Ok(()));
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(capacity.waiters.len(), 1);
        // Then it waits until its deadline, and gives up.
        assert_eq!(waiting.wait(TaskPriority::Normal, None).await, Ok(()));
        assert_eq!(
            waiting.wait(TaskPriority::Normal, None).await,
            Err(GiveUp::TimedOut)
        );
        // A reset past the deadline: no wait at all.
        let mut other = Waiting::new(&capacity, config, std::time::Instant::now());
        assert_eq!(
            other
                .wait(TaskPriority::Normal, Some(Duration::from_secs(5)))
                .await,
            Err(GiveUp::TimedOut)
        );
    }

    #[tokio::test]
    async fn a_released_slot_wakes_the_first_waiter() {
        let w = Waiters::new();
        let g = Gauge::new(w.clone());
        let slot = g.try_acquire(1).unwrap();
        let t = w.enter(TaskPriority::Normal, 10).unwrap();
        let waiting = tokio::spawn(async move { t.wait(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(slot);
        assert!(waiting.await.unwrap());
    }
}
