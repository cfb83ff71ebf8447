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
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    use wasmtime::{
        Engine, Instance, Memory, MemoryType, Module, ResourceLimiter, Store, Table, TableType,
    };

    const PAGE: usize = 64 * 1024;

    // ---- PluginLimiter: the trait methods directly ----

    #[test]
    fn memory_is_capped_in_total_across_memories() {
        let mut l = PluginLimiter::new(4 * PAGE).with_trap_on_refusal(false);
        // Two new memories of one page, then growth of each.
        assert!(l.memory_growing(0, PAGE, None).unwrap());
        assert!(l.memory_growing(0, PAGE, None).unwrap());
        assert!(l.memory_growing(PAGE, 2 * PAGE, None).unwrap());
        assert_eq!(l.memory_in_use(), 3 * PAGE);
        assert_eq!(l.exhausted(), None);
        // Either memory growing by two more pages would pass 4 pages in total.
        assert!(!l.memory_growing(PAGE, 3 * PAGE, None).unwrap());
        assert_eq!(
            l.exhausted(),
            Some(Exhausted::Memory {
                requested: 5 * PAGE,
                limit: 4 * PAGE
            })
        );
        assert_eq!(l.memory_in_use(), 3 * PAGE, "a refusal grants nothing");
        // Exactly at the limit is fine.
        assert!(l.memory_growing(2 * PAGE, 3 * PAGE, None).unwrap());
        assert_eq!(l.memory_in_use(), 4 * PAGE);
        assert!(l.take_exhausted().is_some());
        assert_eq!(l.exhausted(), None);
    }

    #[test]
    fn growth_past_a_memorys_own_maximum_is_not_the_host_limit() {
        let mut l = PluginLimiter::new(100 * PAGE);
        assert!(!l.memory_growing(PAGE, 3 * PAGE, Some(2 * PAGE)).unwrap());
        assert_eq!(l.exhausted(), None);
        assert_eq!(l.memory_in_use(), 0);
        assert!(!l.table_growing(10, 20, Some(15)).unwrap());
        assert_eq!(l.exhausted(), None);
    }

    #[test]
    fn a_refusal_traps_with_a_typed_error_by_default() {
        let mut l = PluginLimiter::new(PAGE);
        let err = l.memory_growing(0, 2 * PAGE, None).unwrap_err();
        let exhausted = *err.downcast_ref::<Exhausted>().unwrap();
        assert_eq!(
            exhausted,
            Exhausted::Memory {
                requested: 2 * PAGE,
                limit: PAGE
            }
        );
        assert_eq!(l.exhausted(), Some(exhausted));
        assert!(exhausted.to_string().contains("memory limit"));
    }

    #[test]
    fn table_elements_are_capped_per_table() {
        let mut l = PluginLimiter::new(PAGE)
            .with_table_elements(1000)
            .with_trap_on_refusal(false);
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(
            l.table_growing(0, 1000, None).unwrap(),
            "per table, not total"
        );
        assert!(!l.table_growing(1000, 1001, None).unwrap());
        assert_eq!(
            l.exhausted(),
            Some(Exhausted::TableElements {
                requested: 1001,
                limit: 1000
            })
        );
        let mut trapping = PluginLimiter::new(PAGE).with_table_elements(10);
        let err = trapping.table_growing(0, 11, None).unwrap_err();
        assert!(err.downcast_ref::<Exhausted>().is_some());
    }

    #[test]
    fn counts_have_defaults_and_can_be_set() {
        let l = PluginLimiter::new(PAGE);
        assert_eq!(
            (l.instances(), l.tables(), l.memories()),
            (DEFAULT_INSTANCES, DEFAULT_TABLES, DEFAULT_MEMORIES)
        );
        let l = l.with_instances(3).with_tables(2).with_memories(1);
        assert_eq!((l.instances(), l.tables(), l.memories()), (3, 2, 1));
    }

    // ---- PluginLimiter in a real store ----

    fn engine() -> Engine {
        Engine::new(&wasmtime::Config::new()).unwrap()
    }

    /// A core module with one memory of one page and an export
    /// `grow(pages: i32) -> i32` that runs `memory.grow`, in binary form
    /// (the host is built without the text parser).
    const GROW_MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, // type: (i32) -> i32
        0x03, 0x02, 0x01, 0x00, // function 0 has type 0
        0x05, 0x03, 0x01, 0x00, 0x01, // memory: min 1 page, no maximum
        0x07, 0x08, 0x01, 0x04, b'g', b'r', b'o', b'w', 0x00, 0x00, // export "grow"
        0x0a, 0x08, 0x01, 0x06, 0x00, // code: one body, no locals
        0x20, 0x00, 0x40, 0x00, 0x0b, // local.get 0; memory.grow 0; end
    ];

    fn grow_instance(
        limiter: PluginLimiter,
    ) -> (Store<PluginLimiter>, wasmtime::TypedFunc<i32, i32>) {
        let engine = engine();
        let module = Module::new(&engine, GROW_MODULE).unwrap();
        let mut store = Store::new(&engine, limiter);
        store.limiter(|l| l);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let grow = instance
            .get_typed_func::<i32, i32>(&mut store, "grow")
            .unwrap();
        (store, grow)
    }

    #[test]
    fn a_guest_growing_past_the_cap_traps_and_the_cause_is_known() {
        let (mut store, grow) = grow_instance(PluginLimiter::new(3 * PAGE));
        assert_eq!(grow.call(&mut store, 1).unwrap(), 1);
        assert_eq!(store.data().memory_in_use(), 2 * PAGE);
        let err = grow.call(&mut store, 2).unwrap_err();
        assert_eq!(
            err.downcast_ref::<Exhausted>(),
            Some(&Exhausted::Memory {
                requested: 4 * PAGE,
                limit: 3 * PAGE
            }),
            "{err:?}"
        );
        assert!(store.data().exhausted().is_some());
    }

    #[test]
    fn without_trapping_the_guest_sees_minus_one() {
        let (mut store, grow) =
            grow_instance(PluginLimiter::new(2 * PAGE).with_trap_on_refusal(false));
        assert_eq!(grow.call(&mut store, 5).unwrap(), -1);
        assert!(matches!(
            store.data().exhausted(),
            Some(Exhausted::Memory { .. })
        ));
        assert_eq!(grow.call(&mut store, 1).unwrap(), 1, "still usable");
    }

    #[test]
    fn a_module_too_big_for_the_cap_does_not_instantiate() {
        let engine = engine();
        let module = Module::new(&engine, GROW_MODULE).unwrap();
        let mut store = Store::new(&engine, PluginLimiter::new(PAGE / 2));
        store.limiter(|l| l);
        let err = Instance::new(&mut store, &module, &[]).unwrap_err();
        assert!(err.downcast_ref::<Exhausted>().is_some(), "{err:?}");
    }

    #[test]
    fn host_created_memories_and_tables_count_too() {
        let engine = engine();
        let mut store = Store::new(
            &engine,
            PluginLimiter::new(2 * PAGE)
                .with_table_elements(100)
                .with_trap_on_refusal(false),
        );
        store.limiter(|l| l);
        Memory::new(&mut store, MemoryType::new(1, None)).unwrap();
        Memory::new(&mut store, MemoryType::new(1, None)).unwrap();
        assert!(Memory::new(&mut store, MemoryType::new(1, None)).is_err());
        assert!(matches!(
            store.data().exhausted(),
            Some(Exhausted::Memory { .. })
        ));
        let ty = TableType::new(wasmtime::RefType::FUNCREF, 10, None);
        let table = Table::new(&mut store, ty, wasmtime::Ref::Func(None)).unwrap();
        assert!(
            table
                .grow(&mut store, 90, wasmtime::Ref::Func(None))
                .is_ok()
        );
        assert!(
            table
                .grow(&mut store, 1, wasmtime::Ref::Func(None))
                .is_err()
        );
        assert!(matches!(
            store.data().exhausted(),
            Some(Exhausted::TableElements {
                requested: 101,
                limit: 100
            })
        ));
    }

    #[test]
    fn the_instance_count_is_capped() {
        let engine = engine();
        let module = Module::new(&engine, b"\0asm\x01\0\0\0").unwrap();
        let mut store = Store::new(&engine, PluginLimiter::new(PAGE).with_instances(3));
        store.limiter(|l| l);
        for _ in 0..3 {
            Instance::new(&mut store, &module, &[]).unwrap();
        }
        assert!(Instance::new(&mut store, &module, &[]).is_err());
    }

    // ---- LogGate ----

    /// A clock the test moves by hand.
    fn manual_clock() -> (Clock, Arc<AtomicU64>) {
        let start = Instant::now();
        let offset_ms = Arc::new(AtomicU64::new(0));
        let offset = offset_ms.clone();
        let clock: Clock =
            Box::new(move || start + Duration::from_millis(offset.load(Ordering::SeqCst)));
        (clock, offset_ms)
    }

    #[test]
    fn short_lines_pass_borrowed() {
        let gate = LogGate::default();
        let admit = gate.admit("hello").unwrap();
        assert!(matches!(admit.message, Cow::Borrowed("hello")));
        assert_eq!(admit.dropped_before, 0);
    }

    #[test]
    fn long_lines_are_cut_at_a_char_boundary() {
        let gate = LogGate::default();
        let exact = "x".repeat(DEFAULT_MAX_LOG_BYTES);
        assert!(matches!(
            gate.admit(&exact).unwrap().message,
            Cow::Borrowed(_)
        ));

        // 'é' is two bytes: 4095 'a' then 'é' straddles the 4096th byte.
        let long = format!("{}é{}", "a".repeat(4095), "b".repeat(1000));
        let message = gate.admit(&long).unwrap().message.into_owned();
        assert!(message.starts_with(&"a".repeat(4095)));
        assert!(
            message.ends_with("… [truncated 1002 bytes]"),
            "{}",
            &message[4090..]
        );
        assert!(!message.contains('é'));

        let small = LogGate::default().with_max_bytes(3);
        assert_eq!(
            small.admit("αβγ").unwrap().message,
            "α… [truncated 4 bytes]"
        );
    }

    #[test]
    fn the_rate_is_bounded_and_gaps_are_reported() {
        let (clock, offset_ms) = manual_clock();
        let gate = LogGate::with_clock(20, 100, clock);
        // The burst goes through, then lines are dropped.
        for _ in 0..100 {
            assert_eq!(gate.admit("x").unwrap().dropped_before, 0);
        }
        for _ in 0..7 {
            assert!(gate.admit("x").is_none());
        }
        assert_eq!(gate.dropped_total(), 7);
        // 20 lines a second: one line every 50 ms.
        offset_ms.store(49, Ordering::SeqCst);
        assert!(gate.admit("x").is_none());
        offset_ms.store(100, Ordering::SeqCst);
        let admit = gate.admit("after the gap").unwrap();
        assert_eq!(admit.dropped_before, 8);
        assert_eq!(gate.admit("x").unwrap().dropped_before, 0);
        assert!(gate.admit("x").is_none());
        // A long quiet spell refills up to the burst, not beyond.
        offset_ms.store(1_000_000, Ordering::SeqCst);
        let mut admitted = 0;
        while gate.admit("x").is_some() {
            admitted += 1;
        }
        assert_eq!(admitted, 100);
        // 7 + 1 at 49 ms + 1 after the gap + the one that ended the loop.
        assert_eq!(gate.dropped_total(), 10);
    }

    #[test]
    fn the_gate_is_shared_across_threads() {
        let gate = Arc::new(LogGate::new(0, 50));
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (gate, admitted) = (gate.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if gate.admit("x").is_some() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 50);
        assert_eq!(gate.dropped_total(), 350);
    }

    // ---- Counters ----

    #[test]
    fn counters_count_from_zero_per_name() {
        let c = Counters::new();
        assert_eq!(c.next("a"), Ok(0));
        assert_eq!(c.next("a"), Ok(1));
        assert_eq!(c.next("b"), Ok(0));
        assert_eq!(c.next(""), Ok(0));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn concurrent_increments_give_unique_values() {
        let c = Arc::new(Counters::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    (0..1000).map(|_| c.next("rr").unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..8000).collect::<Vec<u64>>());
    }

    #[test]
    fn counter_names_and_count_are_capped() {
        let c = Counters::new();
        let longest = "n".repeat(MAX_COUNTER_NAME_BYTES);
        assert_eq!(c.next(&longest), Ok(0));
        let err = c.next(&"n".repeat(MAX_COUNTER_NAME_BYTES + 1)).unwrap_err();
        assert!(err.contains("64 bytes"), "{err}");

        for i in 1..MAX_COUNTERS {
            c.next(&format!("c{i}")).unwrap();
        }
        assert_eq!(c.len(), MAX_COUNTERS);
        let err = c.next("one-more").unwrap_err();
        assert!(err.contains("at most 64 counters"), "{err}");
        // Existing counters keep working at the cap.
        assert_eq!(c.next("c1"), Ok(1));
        assert_eq!(c.len(), MAX_COUNTERS);
    }
}
