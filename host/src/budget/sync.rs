//! With Redis, every replica's budget reservations count everywhere.
//!
//! A replica's admission sees the others' spend and their requests in
//! flight as of its last sync: after each admission and each settled
//! request (and every [`RENEW`] while it holds a reservation) one task
//! publishes what this replica holds in reserve on each budget window and
//! reads back what the others hold and what all have spent (one script,
//! off the request path). Triggers never pile up: a burst of them makes one
//! sync, and syncs are at least [`GAP`] apart. So a hard stop can be
//! overrun by at most the requests admitted within one sync, plus those
//! already in flight, on any replica.
//!
//! What the others hold counts only while it is fresh ([`FRESH`]): with
//! Redis gone, a replica goes back to its own view rather than refusing on
//! an old figure. A replica that dies stops renewing its reservations: they
//! stop counting a minute later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::{Budgets, Tally};
use crate::ratelimit::shared::Shared;

/// How often a replica holding reservations renews them.
const RENEW: Duration = Duration::from_secs(20);
/// The least time between two syncs.
const GAP: Duration = Duration::from_millis(5);
/// How long the others' reservations count after a sync read them.
pub(super) const FRESH: Duration = Duration::from_secs(10);

/// The sync task's wake-up, started with the first trigger.
#[derive(Default)]
pub(super) struct SyncState {
    wake: tokio::sync::Notify,
    started: AtomicBool,
}

impl Budgets {
    /// Asks for a sync (see the module's doc); nothing without Redis or a
    /// runtime.
    pub(super) fn sync_shared(&self) {
        if self.shared.load().is_none() {
            return;
        }
        if !self.sync.started.swap(true, SeqCst) {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                self.sync.started.store(false, SeqCst);
                return;
            };
            rt.spawn(run(
                self.sync.clone(),
                Arc::downgrade(&self.tallies),
                self.shared.clone(),
            ));
        }
        self.sync.wake.notify_one();
    }
}

/// The sync task: lives as long as the budgets do (a reload's new Redis
/// settings are read at each sync).
async fn run(
    state: Arc<SyncState>,
    tallies: Weak<Mutex<HashMap<String, Tally>>>,
    shared: Arc<ArcSwapOption<Shared>>,
) {
    loop {
        let holding = tallies
            .upgrade()
            .is_some_and(|t| holds(&t).iter().any(|(_, _, amount)| *amount > 0.0));
        if holding {
            let _ = tokio::time::timeout(RENEW, state.wake.notified()).await;
        } else {
            state.wake.notified().await;
        }
        let Some(tallies) = tallies.upgrade() else {
            return;
        };
        let Some(shared) = shared.load_full() else {
            continue;
        };
        let holds = holds(&tallies);
        let keys: Vec<(String, f64)> = holds
            .iter()
            .map(|(name, window, amount)| (format!("{name}:{window}"), *amount))
            .collect();
        if let Some(figures) = shared.hold_budgets(&keys).await {
            let now = Instant::now();
            let mut tallies = tallies.lock().unwrap_or_else(|p| p.into_inner());
            for ((name, window, _), (others, spent)) in holds.iter().zip(figures) {
                if let Some(t) = tallies.get_mut(name).filter(|t| t.window == *window) {
                    t.others = others;
                    t.others_at = Some(now);
                    // Never lower: a Redis that lost its data must not
                    // forget this replica's own spend.
                    t.spent = t.spent.max(spent);
                }
            }
        }
        drop(tallies);
        tokio::time::sleep(GAP).await;
    }
}

/// Each budget window this replica tallies, and what it holds in reserve.
fn holds(tallies: &Mutex<HashMap<String, Tally>>) -> Vec<(String, i64, f64)> {
    let tallies = tallies.lock().unwrap_or_else(|p| p.into_inner());
    tallies
        .iter()
        .map(|(name, t)| (name.clone(), t.window, t.reserved))
        .collect()
}
