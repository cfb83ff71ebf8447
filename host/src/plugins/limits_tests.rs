//! Tests of [`super`] (`limits.rs`), kept apart so the module stays readable.

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

fn grow_instance(limiter: PluginLimiter) -> (Store<PluginLimiter>, wasmtime::TypedFunc<i32, i32>) {
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
    let (mut store, grow) = grow_instance(PluginLimiter::new(2 * PAGE).with_trap_on_refusal(false));
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
            std::thread::spawn(move || (0..1000).map(|_| c.next("rr").unwrap()).collect::<Vec<_>>())
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
