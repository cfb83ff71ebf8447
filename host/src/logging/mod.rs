//! The log writer: lines are gathered in memory and written by one
//! background thread in batches.
//!
//! Why not a write per line: at one connection a request's single `info` line
//! cost the gateway a thread wake-up, a `write` system call and, when the log
//! file sits in a watched folder, an inotify event — ~40 µs of CPU per request
//! on the project's machine, more than the plugins. Here a line is a copy
//! into a shared buffer under a mutex; the first line after a quiet spell
//! wakes the writer, which lingers [`LINGER`] for more before one `write`.
//! When idle, nothing runs (no timer): the writer sleeps until a line comes.
//!
//! Not lossy while the output takes lines: when the buffer holds
//! [`HIGH_WATER`] bytes the writer is woken at once, and at [`CAP`] a logging
//! thread waits for room, so a flood slows requests rather than dropping
//! lines. An output that takes nothing for [`STALL`] (a full pipe, a stuck
//! log collector) must not stop the gateway, whose requests may all run on
//! one thread: lines are then dropped and counted, without waiting, until
//! the writer's next write completes, and a warning in the log says how many
//! were lost. Lines reach the output at most [`LINGER`] late; [`LogGuard`]
//! writes the rest when dropped (normal exit).

pub mod line;

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// A gate for a warning that a failing dependency would otherwise repeat on
/// every request: open at most once per `every` (lock-free; the first call
/// opens it).
#[derive(Debug)]
pub struct Every {
    every_ms: u64,
    /// Milliseconds since the epoch it last opened, plus one (0: never).
    last: std::sync::atomic::AtomicU64,
}

impl Every {
    pub const fn new(every: Duration) -> Self {
        Self {
            every_ms: every.as_millis() as u64,
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether the caller should warn now.
    pub fn due(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = crate::pipeline::outcome::now_ms().max(0) as u64 + 1;
        let last = self.last.load(Relaxed);
        (last == 0 || now >= last + self.every_ms)
            && self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

/// How long the writer waits for more lines after the first of a batch.
pub const LINGER: Duration = Duration::from_millis(5);
/// Buffered bytes that cut the linger short.
pub const HIGH_WATER: usize = 256 * 1024;
/// Buffered bytes at which logging waits for the writer.
pub const CAP: usize = 4 * 1024 * 1024;
/// How long a logger waits for room before the output counts as stalled.
pub const STALL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer has been told a batch is coming (or is writing one).
    scheduled: bool,
    closed: bool,
    /// No room came within [`STALL`]: lines are dropped until the writer's
    /// next write completes.
    stalled: bool,
    /// Lines dropped since the last notice.
    dropped: u64,
}

struct Shared {
    /// [`STALL`], but for tests.
    stall: Duration,
    state: Mutex<State>,
    /// Wakes the writer: a batch started, the high-water mark was reached,
    /// or the log is closing.
    wake: Condvar,
    /// Wakes loggers waiting for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a byte buffer, still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle loggers write through (a `tracing_subscriber` `MakeWriter`).
#[derive(Clone)]
pub struct BatchedLog {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the writer when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`.
pub fn batched<W: Write + Send + 'static>(out: W) -> std::io::Result<(BatchedLog, LogGuard)> {
    batched_with(out, STALL)
}

fn batched_with<W: Write + Send + 'static>(
    out: W,
    stall: Duration,
) -> std::io::Result<(BatchedLog, LogGuard)> {
    let shared = Arc::new(Shared {
        stall,
        state: Mutex::default(),
        wake: Condvar::new(),
        room: Condvar::new(),
    });
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            crate::background::batch_thread();
            run(&writer, out)
        })?;
    Ok((
        BatchedLog {
            shared: shared.clone(),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while !state.scheduled && !state.closed {
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if !state.closed && state.buf.len() < HIGH_WATER {
            state = shared
                .wake
                .wait_timeout_while(state, LINGER, |s| !s.closed && s.buf.len() < HIGH_WATER)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::swap(&mut batch, &mut state.buf);
        state.scheduled = false;
        let closed = state.closed;
        let dropped = std::mem::take(&mut state.dropped);
        drop(state);
        if dropped > 0 {
            let notice = line::notice(&format!(
                "{dropped} log lines dropped: the log output took nothing for {} ms",
                shared.stall.as_millis()
            ));
            batch.splice(0..0, notice.into_bytes());
        }
        shared.room.notify_all();
        if !batch.is_empty() {
            // Nowhere to report a failed log write; carry on serving.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if batch.capacity() > CAP {
                batch = Vec::new();
            }
        }
        // The output took a batch (or failed at once): loggers may wait again.
        shared.lock().stalled = false;
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

impl Write for BatchedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        if state.buf.len() >= CAP && !state.closed && !state.stalled {
            let (waited, timeout) = self
                .shared
                .room
                .wait_timeout_while(state, self.shared.stall, |s| {
                    s.buf.len() >= CAP && !s.closed
                })
                .unwrap_or_else(|p| p.into_inner());
            state = waited;
            if timeout.timed_out() {
                state.stalled = true;
            }
        }
        if state.buf.len() >= CAP && !state.closed {
            state.dropped += 1;
            return Ok(bytes.len());
        }
        state.buf.extend_from_slice(bytes);
        let wake = if !state.scheduled {
            state.scheduled = true;
            true
        } else {
            state.buf.len() >= HIGH_WATER && state.buf.len() - bytes.len() < HIGH_WATER
        };
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedLog {
    type Writer = BatchedLog;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(b);
            *self.writes.lock().unwrap() += 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_written_close_together_leave_in_one_write_and_in_order() {
        let sink = Sink::default();
        let (mut log, guard) = batched(sink.clone()).unwrap();
        for i in 0..100 {
            log.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.bytes.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        assert!(*sink.writes.lock().unwrap() < 100, "batched");
        drop(guard);
    }

    #[test]
    fn nothing_is_lost_under_a_flood_from_many_threads_and_the_rest_is_written_on_drop() {
        let sink = Sink::default();
        // An output that keeps up is never counted as stalled, however
        // loaded the machine running the test.
        let (log, guard) = batched_with(sink.clone(), Duration::from_secs(60)).unwrap();
        let mut line = vec![b'x'; 999];
        line.push(b'\n');
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let mut log = log.clone();
                let line = line.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        log.write_all(&line).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let bytes = sink.bytes.lock().unwrap();
        assert_eq!(bytes.len(), 4 * 5_000 * 1_000);
        assert!(
            bytes
                .split(|b| *b == b'\n')
                .all(|l| l.is_empty() || l == &line[..999])
        );
        assert!(*sink.writes.lock().unwrap() < 4 * 5_000, "batched");
    }

    /// An output whose writes block until the test lets them through.
    #[derive(Clone)]
    struct Stuck {
        open: Arc<(Mutex<bool>, Condvar)>,
        bytes: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (open, turn) = &*self.open;
            let mut open = open.lock().unwrap();
            while !*open {
                open = turn.wait(open).unwrap();
            }
            self.bytes.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_stopping_loggers_and_says_how_many() {
        let sink = Stuck {
            open: Arc::default(),
            bytes: Arc::default(),
        };
        let (mut log, guard) = batched_with(sink.clone(), Duration::from_millis(50)).unwrap();
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        // The writer takes the first batch and blocks in the output; the
        // buffer then fills to the cap.
        log.write_all(&line).unwrap();
        std::thread::sleep(LINGER * 4);
        for _ in 0..CAP / line.len() {
            log.write_all(&line).unwrap();
        }
        // Past the cap: one wait of the stall time, then no waiting at all.
        let started = Instant::now();
        for _ in 0..1_000 {
            log.write_all(&line).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        {
            let (open, turn) = &*sink.open;
            *open.lock().unwrap() = true;
            turn.notify_all();
        }
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        let notice = text
            .lines()
            .find(|l| l.contains("log lines dropped"))
            .unwrap_or_else(|| panic!("no notice among {} bytes", text.len()));
        assert!(
            notice.contains("WARN switchyard::logging: 1000 log lines dropped"),
            "{notice}"
        );
        let kept = text.lines().filter(|l| l.starts_with('x')).count();
        assert_eq!(kept, 1 + CAP / line.len());
    }

    #[test]
    fn an_idle_log_writes_nothing_and_a_late_line_still_arrives() {
        let sink = Sink::default();
        let (mut log, guard) = batched(sink.clone()).unwrap();
        std::thread::sleep(LINGER * 4);
        assert_eq!(*sink.writes.lock().unwrap(), 0);
        log.write_all(b"late\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.bytes.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*sink.bytes.lock().unwrap(), b"late\n");
        drop(guard);
    }
}
