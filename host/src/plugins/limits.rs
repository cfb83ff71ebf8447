//! Bounds on what one plugin can take from the gateway: memory and table
//! space per instance ([`PluginLimiter`]), log volume per plugin
//! ([`LogGate`]) and host-held counters per plugin ([`Counters`]).
//!
//! A plugin is untrusted code sharing the gateway's process: without these a
//! buggy or hostile plugin could grow its memory until the host is killed,
//! flood the log until the disk fills, or create counters until the host runs
//! out of memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

/// Elements per table. A componentize-py plugin's main table has ~5,700
/// entries; each element costs the host a pointer.
pub const DEFAULT_TABLE_ELEMENTS: usize = 100_000;
/// Core instances per store. One component instance is several core
/// instances: a Rust plugin 1–5, a componentize-py plugin 14 (its shared
/// libraries are separate modules); this leaves room for bigger runtimes.
pub const DEFAULT_INSTANCES: usize = 64;
/// Tables per store (a Python plugin defines two).
pub const DEFAULT_TABLES: usize = 16;
/// Linear memories per store (plugins built today define one).
pub const DEFAULT_MEMORIES: usize = 16;

/// A growth the limiter refused. Kept by [`PluginLimiter`] and, when it
/// traps, also the error of the trap (`err.downcast_ref::<Exhausted>()`), so
/// the caller knows an out-of-memory from the text of no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// The store's linear memories would total `requested` bytes.
    Memory { requested: usize, limit: usize },
    /// A table would hold `requested` elements.
    TableElements { requested: usize, limit: usize },
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exhausted::Memory { requested, limit } => write!(
                f,
                "plugin memory limit reached: {requested} bytes requested, limit {limit} bytes"
            ),
            Exhausted::TableElements { requested, limit } => write!(
                f,
                "plugin table limit reached: {requested} elements requested, limit {limit}"
            ),
        }
    }
}

impl std::error::Error for Exhausted {}

/// The resource limiter of one plugin instance's store.
///
/// Memory is capped in total across the store's memories, not per memory: a
/// component may define several, and what the gateway cares about is what
/// the plugin holds. The counts of instances, tables and memories are read
/// by wasmtime once, when the limiter is installed with `Store::limiter`.
///
/// A refusal traps by default ([`with_trap_on_refusal`]): a guest that gets
/// `-1` from `memory.grow` usually aborts, and that trap looks like any
/// other bug. Either way the refusal is recorded in [`exhausted`].
///
/// A growth the limiter allowed but wasmtime then failed (the system could
/// not map the memory) stays counted: wasmtime also reports failures it never
/// asked the limiter about, so undoing "the last growth" could undo one that
/// succeeded, and repeated, let a guest creep past the cap. The cap errs on
/// the strict side instead.
///
/// [`with_trap_on_refusal`]: PluginLimiter::with_trap_on_refusal
/// [`exhausted`]: PluginLimiter::exhausted
#[derive(Clone, Debug)]
pub struct PluginLimiter {
    memory_limit: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    trap: bool,
    /// Bytes of linear memory granted so far, across all memories.
    memory_in_use: usize,
    exhausted: Option<Exhausted>,
}

impl PluginLimiter {
    /// A limiter capping the store's linear memory at `memory_bytes` in
    /// total, with the default caps for the rest.
    pub fn new(memory_bytes: usize) -> Self {
        Self {
            memory_limit: memory_bytes,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            instances: DEFAULT_INSTANCES,
            tables: DEFAULT_TABLES,
            memories: DEFAULT_MEMORIES,
            trap: true,
            memory_in_use: 0,
            exhausted: None,
        }
    }

    /// Caps the elements of each table.
    pub fn with_table_elements(mut self, elements: usize) -> Self {
        self.table_elements = elements;
        self
    }

    /// Caps the core instances the store may create.
    pub fn with_instances(mut self, instances: usize) -> Self {
        self.instances = instances;
        self
    }

    /// Caps the tables the store may create.
    pub fn with_tables(mut self, tables: usize) -> Self {
        self.tables = tables;
        self
    }

    /// Caps the linear memories the store may create.
    pub fn with_memories(mut self, memories: usize) -> Self {
        self.memories = memories;
        self
    }

    /// `true` (the default): a refused growth traps, with [`Exhausted`] as
    /// the error. `false`: it fails the way WebAssembly defines (`-1` from
    /// `memory.grow` and `table.grow`, an error from instantiation), for a
    /// guest that handles it.
    pub fn with_trap_on_refusal(mut self, trap: bool) -> Self {
        self.trap = trap;
        self
    }

    /// The last growth this limiter refused, if any.
    pub fn exhausted(&self) -> Option<Exhausted> {
        self.exhausted
    }

    /// Returns and forgets the last refusal: for a store that stays in use
    /// after its guest handled a failed growth.
    pub fn take_exhausted(&mut self) -> Option<Exhausted> {
        self.exhausted.take()
    }

    /// Bytes of linear memory granted so far, across the store's memories.
    pub fn memory_in_use(&self) -> usize {
        self.memory_in_use
    }

    /// The memory cap in bytes.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    fn refuse(&mut self, exhausted: Exhausted) -> wasmtime::Result<bool> {
        self.exhausted = Some(exhausted);
        if self.trap {
            Err(wasmtime::Error::new(exhausted))
        } else {
            Ok(false)
        }
    }
}

impl wasmtime::ResourceLimiter for PluginLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own declared maximum: the growth fails as the
        // WebAssembly spec says, and it is not the host's limit.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self
            .memory_in_use
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_limit {
            return self.refuse(Exhausted::Memory {
                requested: total,
                limit: self.memory_limit,
            });
        }
        self.memory_in_use = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        if desired > self.table_elements {
            return self.refuse(Exhausted::TableElements {
                requested: desired,
                limit: self.table_elements,
            });
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

/// Longest log message written as is.
pub const DEFAULT_MAX_LOG_BYTES: usize = 4096;
/// Log lines per second a plugin may write in the long run.
pub const DEFAULT_LOG_LINES_PER_SEC: u32 = 20;
/// Log lines a plugin may write at once after a quiet spell.
pub const DEFAULT_LOG_BURST: u32 = 100;

/// The cost of one line in the bucket's units: at `r` lines a second, each
/// elapsed nanosecond adds `r` units, so a line is earned every `1/r` s.
const LINE: u64 = 1_000_000_000;

/// A log line the gate lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admit<'a> {
    /// The message, truncated if it was too long (borrowed otherwise).
    pub message: Cow<'a, str>,
    /// Lines of this plugin dropped since the previous admitted line, to be
    /// reported with this one so a gap in the log is never silent.
    pub dropped_before: u64,
}

/// Source of time for the token bucket; injectable so tests need not sleep.
pub type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

/// Decides, for each log line of one plugin (all its instances share one
/// gate), whether it is written: a token bucket bounds the rate, so a plugin
/// logging in a loop costs the gateway a few lines a second rather than its
/// disk, and long messages are cut.
pub struct LogGate {
    lines_per_sec: u32,
    burst: u32,
    max_bytes: usize,
    clock: Clock,
    bucket: Mutex<Bucket>,
}

/// Credit is counted in line-nanoseconds (a line costs [`LINE`]), so the
/// refill is exact integer arithmetic: no rounding drift at the boundaries.
struct Bucket {
    credit: u64,
    refilled_at: Instant,
    dropped_since_admit: u64,
    dropped_total: u64,
}

impl fmt::Debug for LogGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogGate")
            .field("lines_per_sec", &self.lines_per_sec)
            .field("burst", &self.burst)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl Default for LogGate {
    fn default() -> Self {
        Self::new(DEFAULT_LOG_LINES_PER_SEC, DEFAULT_LOG_BURST)
    }
}

impl LogGate {
    /// A gate admitting `lines_per_sec` lines a second on average and up to
    /// `burst` at once; it starts full.
    pub fn new(lines_per_sec: u32, burst: u32) -> Self {
        Self::with_clock(lines_per_sec, burst, Box::new(Instant::now))
    }

    /// Same as [`LogGate::new`] with another source of time.
    pub fn with_clock(lines_per_sec: u32, burst: u32, clock: Clock) -> Self {
        let now = clock();
        Self {
            lines_per_sec,
            burst,
            max_bytes: DEFAULT_MAX_LOG_BYTES,
            clock,
            bucket: Mutex::new(Bucket {
                credit: u64::from(burst).saturating_mul(LINE),
                refilled_at: now,
                dropped_since_admit: 0,
                dropped_total: 0,
            }),
        }
    }

    /// Messages longer than `max_bytes` are cut (at a character boundary).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Whether `message` is written, and as what. A dropped line costs a lock
    /// and a clock read; an admitted short line allocates nothing.
    pub fn admit<'a>(&self, message: &'a str) -> Option<Admit<'a>> {
        let now = (self.clock)();
        let dropped_before = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let elapsed = now.saturating_duration_since(bucket.refilled_at);
            let elapsed_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            let refill = elapsed_ns.saturating_mul(u64::from(self.lines_per_sec));
            bucket.credit = bucket
                .credit
                .saturating_add(refill)
                .min(u64::from(self.burst).saturating_mul(LINE));
            bucket.refilled_at = bucket.refilled_at.max(now);
            if bucket.credit < LINE {
                bucket.dropped_since_admit += 1;
                bucket.dropped_total += 1;
                return None;
            }
            bucket.credit -= LINE;
            std::mem::take(&mut bucket.dropped_since_admit)
        };
        Some(Admit {
            message: truncate(message, self.max_bytes),
            dropped_before,
        })
    }

    /// Lines dropped since the gate was made, for metrics.
    pub fn dropped_total(&self) -> u64 {
        self.bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dropped_total
    }
}

/// `message` cut to at most `max_bytes` (at a character boundary), with a
/// marker saying how much was cut.
fn truncate(message: &str, max_bytes: usize) -> Cow<'_, str> {
    if message.len() <= max_bytes {
        return Cow::Borrowed(message);
    }
    let mut cut = max_bytes;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!(
        "{}… [truncated {} bytes]",
        &message[..cut],
        message.len() - cut
    ))
}

/// Most counters one plugin may have.
pub const MAX_COUNTERS: usize = 64;
/// Longest counter name, in bytes.
pub const MAX_COUNTER_NAME_BYTES: usize = 64;

/// The host-held counters of one plugin (`counter-next` in the WIT). The
/// registry keeps one per plugin id in an `Arc`, shared by all instances and
/// versions, so they survive instance reuse, traps and hot reload. Capped,
/// because every name a plugin invents would otherwise stay in the host's
/// memory for the life of the process.
#[derive(Debug, Default)]
pub struct Counters {
    map: Mutex<HashMap<Box<str>, u64>>,
}

impl Counters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Increments counter `name` (created at 0) and returns its previous
    /// value; wraps at `u64::MAX`. Concurrent calls get distinct values.
    pub fn next(&self, name: &str) -> Result<u64, String> {
        if name.len() > MAX_COUNTER_NAME_BYTES {
            return Err(format!(
                "counter name is {} bytes, longer than the limit of {MAX_COUNTER_NAME_BYTES} bytes",
                name.len()
            ));
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(value) = map.get_mut(name) {
            let previous = *value;
            *value = previous.wrapping_add(1);
            return Ok(previous);
        }
        if map.len() >= MAX_COUNTERS {
            return Err(format!(
                "cannot create counter {name:?}: a plugin may have at most {MAX_COUNTERS} counters"
            ));
        }
        map.insert(name.into(), 1);
        Ok(0)
    }

    /// How many counters exist.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
