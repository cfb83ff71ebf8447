//! Tests that measure latency run alone.
//!
//! End-to-end tests run in parallel on a two-core machine; a test that
//! compares latencies across two windows would measure its neighbours.
//! Every [`Gateway`](crate::harness::Gateway) holds a share of this gate for
//! its life; [`alone`] waits until none is held and keeps new ones out (a
//! waiting solo test goes before new shares, so it is never starved).

use std::cell::Cell;
use std::sync::{Condvar, Mutex};

struct State {
    shares: usize,
    solo_waiting: usize,
    solo: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    shares: 0,
    solo_waiting: 0,
    solo: false,
});
static CHANGED: Condvar = Condvar::new();

thread_local! {
    /// Shares and solo guards held by this thread: a test that already holds
    /// one (a second gateway, or its own gateway inside [`alone`]) never
    /// waits for the gate again, or it would wait for itself.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// A share of the gate, held by a running gateway.
pub struct Share(());

/// The gate held alone.
pub struct Alone(());

/// Takes a share, waiting while a solo test runs or waits.
pub fn share() -> Share {
    let mut state = STATE.lock().unwrap();
    if HELD.get() == 0 {
        while state.solo || state.solo_waiting > 0 {
            state = CHANGED.wait(state).unwrap();
        }
    }
    state.shares += 1;
    HELD.set(HELD.get() + 1);
    Share(())
}

/// Waits until no other test runs a gateway; holds them off until dropped.
pub fn alone() -> Alone {
    assert_eq!(
        HELD.get(),
        0,
        "alone() before this test starts its gateways"
    );
    let mut state = STATE.lock().unwrap();
    state.solo_waiting += 1;
    while state.solo || state.shares > 0 {
        state = CHANGED.wait(state).unwrap();
    }
    state.solo_waiting -= 1;
    state.solo = true;
    HELD.set(1);
    Alone(())
}

impl Drop for Share {
    fn drop(&mut self) {
        STATE.lock().unwrap().shares -= 1;
        HELD.set(HELD.get().saturating_sub(1));
        CHANGED.notify_all();
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        STATE.lock().unwrap().solo = false;
        HELD.set(HELD.get().saturating_sub(1));
        CHANGED.notify_all();
    }
}
