//! The queue between requests and the store's writer.
//!
//! Why not a channel: a blocking channel wakes the writer thread for every
//! row, so each request cost the gateway a thread wake-up and two context
//! switches on its core (measured: 30 % of its throughput at 64
//! connections). Here a row is a push under a mutex; only the first row
//! into an idle queue wakes the writer, which then gathers for up to the
//! batch window (cut short by a full batch or a flush) before taking
//! everything at once.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{BATCH_ROWS, QUEUE_ROWS, Row};

#[derive(Default)]
pub(super) struct Queue {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    rows: Vec<Row>,
    /// The writer waits for a first row and must be woken for it.
    asleep: bool,
    /// A full batch or a flush: take now.
    urgent: bool,
    /// Every handle is gone.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `row`; false (the row dropped) when [`QUEUE_ROWS`] wait already.
    pub(super) fn push(&self, row: Row) -> bool {
        let flush = matches!(row, Row::Flush(_));
        let mut s = self.lock();
        if s.rows.len() >= QUEUE_ROWS && !flush {
            return false;
        }
        s.rows.push(row);
        let full = s.rows.len() == BATCH_ROWS;
        let wake = (s.asleep && s.rows.len() == 1) || flush || full;
        s.urgent |= flush || full;
        drop(s);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// Rows waiting for the writer.
    pub(super) fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// No handle is left: the writer finishes what it has and stops.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// The writer's next batch: waits for a first row (unless `busy`: rows
    /// wait to be retried; with `idle`, at most that long: then no rows),
    /// then up to `linger` for more. Also says whether the queue is closed.
    pub(super) fn take(
        &self,
        linger: Duration,
        busy: bool,
        idle: Option<Duration>,
    ) -> (Vec<Row>, bool) {
        let mut s = self.lock();
        if !busy {
            let until = idle.map(|d| Instant::now() + d);
            while s.rows.is_empty() && !s.closed {
                s.asleep = true;
                s = match until {
                    None => self.wake.wait(s).unwrap_or_else(|p| p.into_inner()),
                    Some(until) => {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        self.wake
                            .wait_timeout(s, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
            }
            s.asleep = false;
            if s.rows.is_empty() && !s.closed {
                return (Vec::new(), false);
            }
        }
        let deadline = Instant::now() + linger;
        while !s.urgent && !s.closed && s.rows.len() < BATCH_ROWS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self
                .wake
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.urgent = false;
        (std::mem::take(&mut s.rows), s.closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_writer_wakes_for_pruning_with_no_rows() {
        let q = Queue::default();
        let started = Instant::now();
        let (rows, closed) = q.take(
            Duration::from_millis(5),
            false,
            Some(Duration::from_millis(30)),
        );
        assert!(rows.is_empty() && !closed);
        assert!(started.elapsed() >= Duration::from_millis(30));
        // A row still ends the wait at once.
        q.push(Row::Event(Default::default()));
        let (rows, _) = q.take(
            Duration::from_millis(1),
            false,
            Some(Duration::from_secs(60)),
        );
        assert_eq!(rows.len(), 1);
    }
}
