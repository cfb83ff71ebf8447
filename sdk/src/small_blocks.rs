//! A cache of small freed blocks in front of the guest's allocator.
//!
//! A plugin call allocates and frees dozens of small blocks: the strings and
//! lists the host copies in (each through `cabi_realloc`), the parsed JSON,
//! the answer it builds, all freed before the next call. The standard
//! library's allocator on wasm (dlmalloc) spends 100–150 instructions on each
//! of those operations; in the adapter benchmark that was one seventh of a
//! whole request-and-answer pair. [`SmallBlocks`] keeps freed blocks of up
//! to 512 bytes on one list per 16-byte size class, so the next call's
//! blocks of that size are a list pop away. Larger blocks, and blocks
//! aligned beyond two words (8 bytes on wasm32), go straight to the inner
//! allocator.
//!
//! Memory stays bounded: a class keeps at most [`CACHE_BYTES`] of freed
//! blocks (1 MiB over all classes) and returns the rest to the inner
//! allocator, so a burst of small blocks cannot pin memory that large ones
//! need later.
//!
//! The cache is only sound where there is one thread: single-threaded
//! WebAssembly, which is what every plugin is. Elsewhere (a plugin's native
//! unit tests) the type forwards every call to the inner allocator, small
//! blocks still rounded up to their class.
//!
//! ```ignore
//! switchyard_sdk::small_block_allocator!();
//! ```

use core::alloc::{GlobalAlloc, Layout};

/// Size classes are multiples of this.
const GRAIN: usize = 16;
/// The alignment of every block: the inner allocator's own (dlmalloc aligns
/// to two words), so taking a block never goes through its aligned path,
/// which splits off slivers no class can reuse. Layouts aligned further go
/// straight to the inner allocator.
const ALIGN: usize = 2 * core::mem::size_of::<usize>();
/// Classes of 16, 32, ... 512 bytes.
const CLASSES: usize = 32;
/// The largest block the cache keeps.
pub const MAX_SMALL: usize = GRAIN * CLASSES;
/// Freed bytes one class keeps before it gives blocks back.
pub const CACHE_BYTES: usize = 32 << 10;
/// Freed blocks each class keeps, at most.
const KEEP: [usize; CLASSES] = {
    let mut keep = [0; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        keep[c] = CACHE_BYTES / ((c + 1) * GRAIN);
        c += 1;
    }
    keep
};

/// Installs [`SmallBlocks`] over the standard allocator as the plugin's
/// global allocator. Invoke it once, at the crate root of a plugin built
/// with the standard library.
#[macro_export]
macro_rules! small_block_allocator {
    () => {
        #[global_allocator]
        static SWITCHYARD_SMALL_BLOCKS: $crate::SmallBlocks<::std::alloc::System> =
            $crate::SmallBlocks::new(::std::alloc::System);
    };
}

/// A [`GlobalAlloc`] that serves blocks of up to [`MAX_SMALL`] bytes from
/// per-size free lists, over `A` (see the [module docs](self)).
pub struct SmallBlocks<A> {
    inner: A,
    /// Whether the lists are used: on single-threaded wasm only (and in
    /// this module's tests, from one thread).
    caching: bool,
    lists: core::cell::UnsafeCell<[FreeList; CLASSES]>,
}

/// Whether this target has one thread, so the cache is sound.
const ONE_THREAD: bool = cfg!(all(target_family = "wasm", not(target_feature = "atomics")));

/// Freed blocks of one class, linked through their first word.
#[derive(Clone, Copy)]
struct FreeList {
    head: *mut u8,
    len: usize,
}

// SAFETY: the lists are touched only when `caching`, which `new` sets on
// single-threaded wasm alone, where no second thread exists; elsewhere this
// is `A`'s own `Sync`. (The tests' caching instance is not shared.)
unsafe impl<A: Sync> Sync for SmallBlocks<A> {}

impl<A> SmallBlocks<A> {
    /// The cache over `inner`, empty.
    pub const fn new(inner: A) -> Self {
        Self::with_caching(inner, ONE_THREAD)
    }

    const fn with_caching(inner: A, caching: bool) -> Self {
        SmallBlocks {
            inner,
            caching,
            lists: core::cell::UnsafeCell::new(
                [FreeList {
                    head: core::ptr::null_mut(),
                    len: 0,
                }; CLASSES],
            ),
        }
    }
}

/// The class of a block the cache may keep, if `layout` fits one.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    Some(layout.size().saturating_sub(1) / GRAIN)
}

/// The layout every block of `class` has in the inner allocator.
#[inline]
fn block(class: usize) -> Layout {
    // SAFETY: a non-zero multiple of 16 no larger than 512; `ALIGN` is a
    // power of two.
    unsafe { Layout::from_size_align_unchecked((class + 1) * GRAIN, ALIGN) }
}

impl<A: GlobalAlloc> SmallBlocks<A> {
    /// The free list of `class`.
    ///
    /// # Safety
    /// `caching` (one thread), and no other reference to the lists alive
    /// (the allocator is not reentrant: the inner one never calls back).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn list(&self, class: usize) -> &mut FreeList {
        // SAFETY: as the caller promised.
        unsafe { &mut (*self.lists.get())[class] }
    }
}

// SAFETY: every block handed out is either the inner allocator's for the
// caller's own layout, or one of its `block(class)` blocks, whose size and
// alignment cover every layout of that class. A block is on at most one list
// (it is pushed only when freed, popped when handed out), and goes back to
// the inner allocator with the layout it was taken with.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SmallBlocks<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's layout, as given.
            return unsafe { self.inner.alloc(layout) };
        };
        if self.caching {
            // SAFETY: single-threaded; no other reference to the lists.
            let list = unsafe { self.list(class) };
            if !list.head.is_null() {
                let p = list.head;
                // SAFETY: a freed block of this class holds the next one.
                list.head = unsafe { p.cast::<*mut u8>().read() };
                list.len -= 1;
                return p;
            }
        }
        // SAFETY: a valid non-zero layout.
        unsafe { self.inner.alloc(block(class)) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: allocated by the inner allocator with this layout.
            return unsafe { self.inner.dealloc(ptr, layout) };
        };
        if self.caching {
            // SAFETY: single-threaded; no other reference to the lists.
            let list = unsafe { self.list(class) };
            if list.len < KEEP[class] {
                // SAFETY: the block is at least 16 bytes, aligned for a
                // pointer, and no longer the caller's.
                unsafe { ptr.cast::<*mut u8>().write(list.head) };
                list.head = ptr;
                list.len += 1;
                return;
            }
        }
        // SAFETY: taken from the inner allocator as `block(class)`.
        unsafe { self.inner.dealloc(ptr, block(class)) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(layout).is_none() {
            // SAFETY: the caller's layout, as given.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        // SAFETY: as `alloc`; a reused block is dirty, so it is cleared.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                core::ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the
        // alignment, does not overflow `isize`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new)) {
            // SAFETY: the inner allocator's block, resized by it.
            (None, None) => unsafe { self.inner.realloc(ptr, layout, new_size) },
            // The block already has room.
            (Some(a), Some(b)) if a == b => ptr,
            _ => {
                // SAFETY: a fresh block for `new`, the old contents copied
                // and the old block freed with its own layout.
                unsafe {
                    let q = self.alloc(new);
                    if !q.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    q
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::vec::Vec;

    /// The system allocator, checking that every block comes back with the
    /// layout it was taken with (the system's `free` would not notice).
    #[derive(Default)]
    struct Checked {
        live: Mutex<HashMap<usize, Layout>>,
    }

    impl Checked {
        fn give_back(&self, ptr: *mut u8, layout: Layout) {
            let taken = self.live.lock().unwrap().remove(&(ptr as usize));
            assert_eq!(
                taken,
                Some(layout),
                "block {ptr:?} freed with another layout"
            );
        }
    }

    unsafe impl GlobalAlloc for Checked {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            assert_eq!(p as usize % layout.align(), 0);
            self.live.lock().unwrap().insert(p as usize, layout);
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.give_back(ptr, layout);
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            self.give_back(ptr, layout);
            let q = unsafe { System.realloc(ptr, layout, new_size) };
            let new = Layout::from_size_align(new_size, layout.align()).unwrap();
            self.live.lock().unwrap().insert(q as usize, new);
            q
        }
    }

    #[test]
    fn caches_only_where_one_thread_runs() {
        assert_eq!(SmallBlocks::new(System).caching, ONE_THREAD);
        const { assert!(!ONE_THREAD, "native tests run threads") };
    }

    fn l(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_cover_their_layouts() {
        assert_eq!(class_of(l(1, 1)), Some(0));
        assert_eq!(class_of(l(16, 8)), Some(0));
        assert_eq!(class_of(l(17, 1)), Some(1));
        assert_eq!(class_of(l(512, 8)), Some(CLASSES - 1));
        assert_eq!(class_of(l(513, 1)), None);
        assert_eq!(class_of(l(8, 2 * ALIGN)), None);
        for size in 1..=MAX_SMALL {
            for align in [1, 2, 4, 8, 16].into_iter().filter(|&a| a <= ALIGN) {
                let c = class_of(l(size, align)).unwrap();
                assert!(block(c).size() >= size && block(c).align() >= align);
                assert!(block(c).size() - size < GRAIN, "{size}: wasteful class");
            }
        }
    }

    #[test]
    fn a_freed_block_serves_the_next_of_its_class() {
        let a = SmallBlocks::with_caching(System, true);
        unsafe {
            let p = a.alloc(l(20, 1));
            a.dealloc(p, l(20, 1));
            // Same class (17..=32 bytes), another size and alignment.
            let q = a.alloc(l(32, 8));
            assert_eq!(p, q);
            // Another class does not get it.
            a.dealloc(q, l(32, 8));
            let r = a.alloc(l(48, 1));
            assert_ne!(r, q);
            a.dealloc(r, l(48, 1));
        }
    }

    #[test]
    fn a_class_keeps_at_most_its_share() {
        let a = SmallBlocks::with_caching(System, true);
        let n = CACHE_BYTES / 64 + 10;
        unsafe {
            let blocks: Vec<*mut u8> = (0..n).map(|_| a.alloc(l(64, 8))).collect();
            for &p in &blocks {
                a.dealloc(p, l(64, 8));
            }
            assert_eq!(a.list(3).len, CACHE_BYTES / 64);
        }
    }

    #[test]
    fn reused_zeroed_blocks_are_zero() {
        let a = SmallBlocks::with_caching(System, true);
        unsafe {
            let p = a.alloc(l(100, 1));
            core::ptr::write_bytes(p, 0xAB, 100);
            a.dealloc(p, l(100, 1));
            let q = a.alloc_zeroed(l(100, 1));
            assert_eq!(p, q);
            assert!(core::slice::from_raw_parts(q, 100).iter().all(|&b| b == 0));
            a.dealloc(q, l(100, 1));
        }
    }

    /// Random allocations, resizes and frees, each block filled with its own
    /// byte and checked before it is resized or freed: no block is handed
    /// out twice and resizing keeps contents, across the small/large line.
    #[test]
    fn random_traffic_keeps_every_block_intact() {
        for caching in [true, false] {
            let a = SmallBlocks::with_caching(Checked::default(), caching);
            let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
            let mut next = move |n: usize| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n as u64) as usize
            };
            let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
            let check = |p: *mut u8, layout: Layout, b: u8| unsafe {
                assert!(
                    core::slice::from_raw_parts(p, layout.size())
                        .iter()
                        .all(|&x| x == b),
                    "block of {} bytes overwritten",
                    layout.size()
                );
            };
            for step in 0..20_000 {
                let tag = (step % 251) as u8;
                let r = next(10);
                match r {
                    0..4 if live.len() < 300 => {
                        let size = 1 + if next(8) == 0 { next(2000) } else { next(600) };
                        let layout = l(size, [1, 4, 8, 16, 32][next(5)]);
                        let p = unsafe { a.alloc(layout) };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % layout.align(), 0);
                        unsafe { core::ptr::write_bytes(p, tag, size) };
                        live.push((p, layout, tag));
                    }
                    4..7 if !live.is_empty() => {
                        let i = next(live.len());
                        let (p, layout, b) = live[i];
                        check(p, layout, b);
                        let size = 1 + next(1200);
                        let q = unsafe { a.realloc(p, layout, size) };
                        assert!(!q.is_null());
                        let kept = layout.size().min(size);
                        unsafe {
                            assert!(core::slice::from_raw_parts(q, kept).iter().all(|&x| x == b));
                            core::ptr::write_bytes(q, tag, size);
                        }
                        live[i] = (q, l(size, layout.align()), tag);
                    }
                    _ if !live.is_empty() => {
                        let (p, layout, b) = live.swap_remove(next(live.len()));
                        check(p, layout, b);
                        unsafe { a.dealloc(p, layout) };
                    }
                    _ => {}
                }
            }
            for (p, layout, b) in live {
                check(p, layout, b);
                unsafe { a.dealloc(p, layout) };
            }
            // All freed: the inner allocator holds exactly the cached blocks.
            let cached: usize = (0..CLASSES).map(|c| unsafe { a.list(c).len }).sum();
            assert_eq!(a.inner.live.lock().unwrap().len(), cached);
        }
    }
}
