//! One limit's sliding window: 60 sub-buckets and the current one.

use super::Kind;

/// Sub-buckets a window is divided into.
pub(super) const BUCKETS: usize = 60;
/// Buckets kept: the window's 60 and the current one, which is partly
/// outside it until it fills.
pub(super) const RING: usize = BUCKETS + 1;

/// One limit's window.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) kind: Kind,
    pub(super) limit: u64,
    /// Width of one bucket, in microseconds.
    pub(super) width_us: u64,
    /// `(slot, used)`: the slot (`µs / width_us`) a bucket holds.
    pub(super) buckets: [(u64, u64); RING],
    /// The window number (`µs / window`) in which the warning and the
    /// at-limit event last fired.
    pub(super) warned: Option<u64>,
    pub(super) hit: Option<u64>,
}

impl Window {
    pub(super) fn new(kind: Kind, limit: u64, window_us: u64) -> Self {
        Self {
            kind,
            limit,
            // Rounded up: the buckets never cover less than the window.
            width_us: window_us.div_ceil(BUCKETS as u64).max(1),
            buckets: [(u64::MAX, 0); RING],
            warned: None,
            hit: None,
        }
    }

    pub(super) fn slot(&self, us: u64) -> u64 {
        us / self.width_us
    }

    /// The number of the whole window `us` falls in (events: once per window).
    pub(super) fn number(&self, us: u64) -> u64 {
        us / (self.width_us * BUCKETS as u64)
    }

    /// Whether bucket `slot` counts at slot `now`: the current bucket and
    /// the 60 before it (the oldest counts whole though part of it is
    /// older than the window: never more than the limit in any window).
    pub(super) fn live(&self, slot: u64, now: u64) -> bool {
        slot != u64::MAX && slot <= now && now - slot <= BUCKETS as u64
    }

    /// What the window holds at slot `now`.
    pub(super) fn used(&self, now: u64) -> u64 {
        self.buckets
            .iter()
            .filter(|(slot, _)| self.live(*slot, now))
            .map(|(_, used)| used)
            .sum()
    }

    pub(super) fn fits(&self, now: u64, n: u64) -> bool {
        let used = self.used(now);
        used == 0 || used.saturating_add(n) <= self.limit
    }

    pub(super) fn add(&mut self, now: u64, n: u64) {
        let b = &mut self.buckets[(now % RING as u64) as usize];
        if b.0 != now {
            *b = (now, 0);
        }
        b.1 = b.1.saturating_add(n);
    }

    /// Corrects what was added at `slot` by `delta`, if it is still inside.
    pub(super) fn adjust(&mut self, slot: u64, now: u64, delta: i64) {
        if !self.live(slot, now.max(slot)) {
            return;
        }
        let b = &mut self.buckets[(slot % RING as u64) as usize];
        if b.0 == slot {
            b.1 = b.1.saturating_add_signed(delta);
        }
    }

    /// Microseconds from `us` until `n` more would fit.
    pub(super) fn wait_us(&self, us: u64, n: u64) -> u64 {
        let now = self.slot(us);
        let mut used = self.used(now);
        let mut live: Vec<(u64, u64)> = self
            .buckets
            .iter()
            .copied()
            .filter(|(slot, _)| self.live(*slot, now))
            .collect();
        live.sort_unstable();
        for (slot, u) in live {
            // This bucket leaves the window when `now` reaches slot + 61.
            used -= u;
            if used == 0 || used + n <= self.limit {
                return ((slot + RING as u64) * self.width_us).saturating_sub(us);
            }
        }
        0
    }

    pub(super) fn headroom(&self, now: u64) -> f32 {
        1.0 - (self.used(now) as f64 / self.limit.max(1) as f64).min(1.0) as f32
    }
}
