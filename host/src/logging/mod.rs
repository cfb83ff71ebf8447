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
//! one thread: the writer writes in [`CHUNK`]s and counts each, and a logger
//! that waited [`STALL`] without one completing drops its line, as do the
//! loggers after it without waiting, until the next chunk completes; a
//! warning after the lines kept says how many were lost. A slow output that
//! still takes chunks is waited for. Lines reach the output at most
//! [`LINGER`] late; [`LogGuard`] writes the rest when dropped (normal exit).

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
/// How long a logger waits with no chunk written before the output counts
/// as stalled.
pub const STALL: Duration = Duration::from_millis(100);
/// The writer's unit of progress: a stall is a chunk not taken in [`STALL`].
pub const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer has been told a batch is coming (or is writing one).
    scheduled: bool,
    closed: bool,
    /// The writer's chunk count at which a logger waited [`STALL`] for
    /// nothing: while the count stays there, lines are dropped.
    stalled_at: Option<u64>,
    /// Lines dropped since the last notice.
    dropped: u64,
}

struct Shared {
    /// [`STALL`], but for tests.
    stall: Duration,
    /// Chunks the writer has finished writing (or failed to write).
    chunks: std::sync::atomic::AtomicU64,
    /// Writes that took some bytes: the exit's measure of progress, finer
    /// than a chunk (an output may take a chunk a few KiB a write).
    progress: std::sync::atomic::AtomicU64,
    /// The log is closing: the writer writes the rest in [`EXIT_PIECE`]s,
    /// so that an output slower than a [`CHUNK`] a stall time still shows
    /// progress to the exit's wait.
    closing: std::sync::atomic::AtomicBool,
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
        chunks: std::sync::atomic::AtomicU64::new(0),
        progress: std::sync::atomic::AtomicU64::new(0),
        closing: std::sync::atomic::AtomicBool::new(false),
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
            // They were dropped after every line of this batch was taken.
            batch.extend_from_slice(
                line::notice(&format!(
                    "{dropped} log lines dropped: the log output took nothing for {} ms",
                    shared.stall.as_millis()
                ))
                .as_bytes(),
            );
        }
        shared.room.notify_all();
        if !batch.is_empty() {
            let mut rest = &batch[..];
            while !rest.is_empty() {
                let closing = shared.closing.load(std::sync::atomic::Ordering::Acquire);
                let piece = if closing { EXIT_PIECE } else { CHUNK };
                let (now, later) = rest.split_at(piece.min(rest.len()));
                // Nowhere to report a failed log write; carry on serving.
                let _ = write_counted(&mut out, now, &shared.progress);
                shared
                    .chunks
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
                rest = later;
            }
            let _ = out.flush();
            batch.clear();
            if batch.capacity() > CAP {
                batch = Vec::new();
            }
        }
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

/// `write_all`, counting each write that takes some bytes in `progress`.
fn write_counted<W: Write>(
    out: &mut W,
    mut bytes: &[u8],
    progress: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                progress.fetch_add(1, std::sync::atomic::Ordering::Release);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Write for BatchedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering::Acquire;
        let mut state = self.shared.lock();
        let full = |s: &State| s.buf.len() >= CAP && !s.closed;
        if full(&state) && state.stalled_at != Some(self.shared.chunks.load(Acquire)) {
            // Waits while the writer makes progress, however slowly.
            let mut seen = self.shared.chunks.load(Acquire);
            loop {
                let (waited, timeout) = self
                    .shared
                    .room
                    .wait_timeout_while(state, self.shared.stall, |s| full(s))
                    .unwrap_or_else(|p| p.into_inner());
                state = waited;
                if !timeout.timed_out() {
                    break;
                }
                let now = self.shared.chunks.load(Acquire);
                if now == seen {
                    state.stalled_at = Some(now);
                    break;
                }
                seen = now;
            }
        }
        if full(&state) {
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

/// How many [`STALL`] times the exit waits for an output that takes no
/// piece before it leaves without the rest of the lines.
const EXIT_STALLS: u32 = 10;
/// The writer's unit of progress while the log closes: a pipe's atomic
/// write size, so an output that takes 4 KiB a second is still waited for.
const EXIT_PIECE: usize = 4096;

impl Drop for LogGuard {
    /// Writes what is left, as long as the output keeps taking bytes (each
    /// write that takes some counts; the rest goes in [`EXIT_PIECE`]s): an
    /// output that takes nothing for [`EXIT_STALLS`] stall times (a log
    /// collector that stopped reading a full pipe) must not keep a stopping
    /// gateway from exiting, so its writer is then left behind, still
    /// blocked, with the lines it holds.
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::{Acquire, Release};
        self.shared.closing.store(true, Release);
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let patience = self.shared.stall * EXIT_STALLS;
        let mut seen = self.shared.progress.load(Acquire);
        let mut since = std::time::Instant::now();
        while !thread.is_finished() {
            let now = self.shared.progress.load(Acquire);
            if now != seen {
                (seen, since) = (now, std::time::Instant::now());
            } else if since.elapsed() >= patience {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = thread.join();
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

    /// A flag one thread raises and others wait for.
    #[derive(Clone, Default)]
    struct Flag(Arc<(Mutex<bool>, Condvar)>);

    impl Flag {
        fn raise(&self) {
            *self.0.0.lock().unwrap() = true;
            self.0.1.notify_all();
        }
        fn wait(&self) {
            let mut up = self.0.0.lock().unwrap();
            while !*up {
                up = self.0.1.wait(up).unwrap();
            }
        }
    }

    /// An output whose writes block until the test lets them through.
    #[derive(Clone, Default)]
    struct Stuck {
        open: Flag,
        entered: Flag,
        bytes: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.entered.raise();
            self.open.wait();
            self.bytes.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_stopping_loggers_and_says_how_many() {
        let sink = Stuck::default();
        let (mut log, guard) = batched_with(sink.clone(), Duration::from_millis(50)).unwrap();
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        // The writer takes the first batch and blocks in the output; the
        // buffer then fills to the cap.
        log.write_all(&line).unwrap();
        sink.entered.wait();
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
        sink.open.raise();
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
    fn an_output_that_takes_nothing_does_not_keep_the_process_from_exiting() {
        let sink = Stuck::default();
        let stall = Duration::from_millis(20);
        let (mut log, guard) = batched_with(sink.clone(), stall).unwrap();
        log.write_all(b"first\n").unwrap();
        sink.entered.wait();
        log.write_all(b"second\n").unwrap();
        let started = Instant::now();
        drop(guard);
        let waited = started.elapsed();
        assert!(waited >= stall * EXIT_STALLS, "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // The writer was left blocked; let it go so the thread ends.
        sink.open.raise();
    }

    /// An output that takes 4 KiB a write and 100 ms a write.
    #[derive(Clone, Default)]
    struct Drip {
        bytes: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Drip {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(100));
            let b = &b[..b.len().min(4096)];
            self.bytes.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn at_exit_an_output_slower_than_a_chunk_a_stall_time_still_gets_every_line() {
        let sink = Drip::default();
        // The exit waits 200 ms without progress; 40 KiB take this output
        // a second, 100 ms a piece.
        let (mut log, guard) = batched_with(sink.clone(), Duration::from_millis(20)).unwrap();
        let mut line = vec![b'z'; 1023];
        line.push(b'\n');
        for _ in 0..40 {
            log.write_all(&line).unwrap();
        }
        drop(guard);
        assert_eq!(sink.bytes.lock().unwrap().len(), 40 * line.len());
    }

    /// An output that takes every write, slowly.
    #[derive(Clone, Default)]
    struct Slow {
        bytes: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            // As a pipe does: at most 64 KiB a write, 10 ms for each 64 KiB.
            let b = &b[..b.len().min(64 * 1024)];
            std::thread::sleep(Duration::from_micros(b.len() as u64 * 10_000 / 65_536));
            self.bytes.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_output_that_takes_chunks_is_waited_for() {
        let sink = Slow::default();
        // A 4 MiB batch takes this output 64 chunks of 10 ms: far longer
        // than the stall time, but never a stall time without a chunk.
        let (mut log, guard) = batched_with(sink.clone(), Duration::from_millis(50)).unwrap();
        let mut line = vec![b'y'; 1023];
        line.push(b'\n');
        let lines = 3 * CAP / line.len();
        for _ in 0..lines {
            log.write_all(&line).unwrap();
        }
        drop(guard);
        let bytes = sink.bytes.lock().unwrap();
        assert_eq!(bytes.len(), lines * line.len(), "lines were dropped");
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
