//! With Redis, every replica's budget reservations count everywhere.
//!
//! A replica's admission sees the others' spend and their requests in
//! flight as of its last sync: after each admission and each settled
//! request it publishes what it holds in reserve on each budget window and
//! reads back what the others hold and what all have spent (one script,
//! off the request path). Syncs never pile up: while one runs, later
//! triggers make it run once more. So a hard stop can be overrun by at most
//! the requests admitted within one sync's round trip, plus those already
//! in flight, on any replica. A replica that dies stops renewing its
//! reservations: they stop counting after a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use super::{Budgets, Tally};

/// Whether a sync runs, and whether another was asked for meanwhile.
#[derive(Default)]
pub(super) struct SyncState {
    running: AtomicBool,
    again: AtomicBool,
}

impl Budgets {
    /// Publishes this replica's reservations and reads the others' (see
    /// the module's doc); does nothing without Redis or a runtime.
    pub(super) fn sync_shared(&self) {
        let Some(shared) = self.shared.load_full() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let state = self.sync.clone();
        state.again.store(true, SeqCst);
        if state.running.swap(true, SeqCst) {
            return;
        }
        let tallies = self.tallies.clone();
        rt.spawn(async move {
            loop {
                state.again.store(false, SeqCst);
                let holds = holds(&tallies);
                let keys: Vec<(String, f64)> = holds
                    .iter()
                    .map(|(name, window, amount)| (format!("{name}:{window}"), *amount))
                    .collect();
                if let Some(figures) = shared.hold_budgets(&keys).await {
                    let mut tallies = tallies.lock().unwrap_or_else(|p| p.into_inner());
                    for ((name, window, _), (others, spent)) in holds.iter().zip(figures) {
                        if let Some(t) = tallies.get_mut(name).filter(|t| t.window == *window) {
                            t.others = others;
                            // Never lower: a Redis that lost its data must
                            // not forget this replica's own spend.
                            t.spent = t.spent.max(spent);
                        }
                    }
                }
                state.running.store(false, SeqCst);
                // Asked again while it ran (and no one else took over).
                if !state.again.load(SeqCst) || state.running.swap(true, SeqCst) {
                    break;
                }
            }
        });
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
