//! The v0.2 candidate list, lowered into the guest in two passes.
//!
//! wasmtime's derived lowering writes a record field by field, and every
//! field looks the instance's memory up again: a candidate has 37 fields, so
//! eight candidates cost ~300 lookups, about half of a strategy call. Here
//! [`Lowered`] has the same component type as the bindings' `candidate` (its
//! type check is theirs) but lowers a list of them in two passes: first a
//! guest allocation for each name (an allocation may grow and move memory),
//! then the names' bytes and every field of every candidate through one view
//! of memory. Anything else (a single candidate, flat lowering, a guest
//! whose strings are not UTF-8) takes the derived path.
//!
//! The offsets come from the bindings' own ABI constants, walked in the
//! record's field order as the canonical ABI lays them out; the unit test
//! below checks them against the record's size, and `tests/e2e` strategies
//! read every field back.

use std::mem::MaybeUninit;
use std::sync::LazyLock;

use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

use super::strategy;
use crate::domain;

/// A host candidate as the guest's `candidate` record. Transparent, so a
/// slice of candidates is a slice of these ([`Lowered::all`]) without a copy.
#[repr(transparent)]
pub struct Lowered(domain::Candidate);

impl Lowered {
    pub fn all(candidates: &[domain::Candidate]) -> &[Lowered] {
        // SAFETY: `Lowered` is `repr(transparent)` over `domain::Candidate`.
        #[allow(unsafe_code)]
        unsafe {
            &*(candidates as *const [domain::Candidate] as *const [Lowered])
        }
    }
}

type Wit = strategy::Candidate<'static>;

/// Where each field of a `candidate` (and of its `recent` and their
/// `errors`) sits, in bytes from the record's start.
struct Layout {
    size: usize,
    deployment: usize,
    adapter: usize,
    healthy: usize,
    headroom: usize,
    in_flight: usize,
    error_rate: usize,
    latency_ms: usize,
    input_cost: usize,
    output_cost: usize,
    cached_input_cost: usize,
    priority: usize,
    weight: usize,
    quality: usize,
    supports: usize,
    /// `recent`: attempts, then the eight f32 figures in WIT order.
    attempts: usize,
    figures: [usize; 8],
    /// `recent.errors`: the shares in WIT order (see [`shares`]).
    errors: [usize; SHARES],
}

/// Fields of `error-shares`.
const SHARES: usize = 11;

fn layout() -> &'static Layout {
    static LAYOUT: LazyLock<Layout> = LazyLock::new(|| {
        let s = <&str as ComponentType>::ABI;
        let b = <bool as ComponentType>::ABI;
        let f = <f32 as ComponentType>::ABI;
        let u = <u32 as ComponentType>::ABI;
        let d = <f64 as ComponentType>::ABI;
        let mut o = 0;
        let mut at = |abi: &CanonicalAbiInfo| abi.next_field32_size(&mut o);
        let deployment = at(&s);
        let adapter = at(&s);
        let healthy = at(&b);
        let headroom = at(&f);
        let in_flight = at(&u);
        let error_rate = at(&f);
        let latency_ms = at(&f);
        let input_cost = at(&d);
        let output_cost = at(&d);
        let cached_input_cost = at(&d);
        let priority = at(&u);
        let weight = at(&u);
        let quality = at(&f);
        let supports = at(&<strategy::Capabilities as ComponentType>::ABI);
        let recent = at(&<strategy::WindowStats as ComponentType>::ABI);
        // Inside `recent`, then inside its `errors`.
        let mut o = 0;
        let mut at = |abi: &CanonicalAbiInfo| recent + abi.next_field32_size(&mut o);
        let attempts = at(&u);
        let figures = std::array::from_fn(|_| at(&f));
        let errors = at(&<strategy::ErrorShares as ComponentType>::ABI);
        let mut o = 0;
        let shares = std::array::from_fn(|_| errors + f.next_field32_size(&mut o));
        Layout {
            size: Wit::SIZE32,
            deployment,
            adapter,
            healthy,
            headroom,
            in_flight,
            error_rate,
            latency_ms,
            input_cost,
            output_cost,
            cached_input_cost,
            priority,
            weight,
            quality,
            supports,
            attempts,
            figures,
            errors: shares,
        }
    });
    &LAYOUT
}

/// The monitor's failure shares in `error-shares` field order; classes the
/// record does not name add up in `other` (the last).
pub(super) fn shares(errors: &[(&'static str, f32)]) -> [f32; SHARES] {
    const NAMED: [&str; SHARES - 1] = [
        "rate_limited",
        "overloaded",
        "timeout",
        "connect",
        "transport",
        "auth",
        "context_length_exceeded",
        "content_filtered",
        "permanent",
        "plugin",
    ];
    let mut out = [0.0; SHARES];
    for (class, share) in errors {
        let i = NAMED.iter().position(|n| n == class).unwrap_or(SHARES - 1);
        out[i] += share;
    }
    out
}

// SAFETY: the component type is the bindings' `candidate` (same `Lower`
// representation, ABI and type check); the lowering below writes exactly
// that layout.
#[allow(unsafe_code)]
unsafe impl ComponentType for Lowered {
    type Lower = <Wit as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <Wit as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Wit as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: single values go through the bindings' derived lowering; lists
// write the same bytes (see the module comment).
#[allow(unsafe_code)]
unsafe impl Lower for Lowered {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        strategy::Candidate::from(&self.0).linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        strategy::Candidate::from(&self.0).linear_lower_to_memory(cx, ty, offset)
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        // Names are copied as they are only into a UTF-8 guest (all of ours);
        // any other takes the derived path, which transcodes.
        if cx.options().string_encoding != StringEncoding::Utf8 {
            for (i, item) in items.iter().enumerate() {
                item.linear_lower_to_memory(cx, ty, offset + i * Self::SIZE32)?;
            }
            return Ok(());
        }
        let l = layout();
        // Pass 1: a guest allocation per name (it may grow and move memory).
        let mut names = Vec::with_capacity(items.len());
        for item in items {
            let c = &item.0;
            let mut place = |name: &str| {
                if name.len() > MAX_NAME {
                    wasmtime::bail!("a name of {} bytes is too long for a plugin", name.len());
                }
                cx.realloc(0, 0, 1, name.len())
            };
            names.push([place(&c.deployment)?, place(&c.adapter)?]);
        }
        // Pass 2: the names' bytes, and every field, through one view.
        let memory = cx.as_slice_mut();
        let end = offset + items.len() * l.size;
        let Some(records) = memory.get_mut(offset..end) else {
            wasmtime::bail!("candidate list out of bounds of the guest's memory");
        };
        for ((item, rec), [d, a]) in items
            .iter()
            .zip(records.chunks_exact_mut(l.size))
            .zip(&names)
        {
            let c = &item.0;
            write_name(rec, l.deployment, *d, &c.deployment);
            write_name(rec, l.adapter, *a, &c.adapter);
            write_numbers(l, c, rec);
        }
        for (item, [d, a]) in items.iter().zip(names) {
            let c = &item.0;
            // In bounds: `realloc` checked each allocation against memory.
            memory[d..d + c.deployment.len()].copy_from_slice(c.deployment.as_bytes());
            memory[a..a + c.adapter.len()].copy_from_slice(c.adapter.as_bytes());
        }
        Ok(())
    }
}

/// The canonical ABI's limit on a string's length.
const MAX_NAME: usize = (1 << 31) - 1;

/// A string field: its guest address and length.
fn write_name(rec: &mut [u8], at: usize, ptr: usize, name: &str) {
    rec[at..at + 4].copy_from_slice(&(ptr as u32).to_le_bytes());
    rec[at + 4..at + 8].copy_from_slice(&(name.len() as u32).to_le_bytes());
}

/// Capabilities as the WIT `flags`: one bit per flag in declaration order.
fn flag_bits(c: domain::Capabilities) -> u8 {
    [
        domain::Capabilities::TOOLS,
        domain::Capabilities::JSON_MODE,
        domain::Capabilities::VISION,
        domain::Capabilities::STREAMING,
    ]
    .iter()
    .enumerate()
    .fold(
        0,
        |bits, (i, f)| if c.contains(*f) { bits | 1 << i } else { bits },
    )
}

fn write_numbers(l: &Layout, c: &domain::Candidate, rec: &mut [u8]) {
    fn put<const N: usize>(rec: &mut [u8], at: usize, bytes: [u8; N]) {
        rec[at..at + N].copy_from_slice(&bytes);
    }
    let r = &*c.recent;
    rec[l.healthy] = u8::from(c.healthy);
    rec[l.supports] = flag_bits(c.supports);
    put(rec, l.headroom, c.headroom.to_le_bytes());
    put(rec, l.in_flight, c.in_flight.to_le_bytes());
    put(rec, l.error_rate, c.error_rate.to_le_bytes());
    put(rec, l.latency_ms, c.latency_ms.to_le_bytes());
    put(rec, l.input_cost, c.input_cost_per_1m.to_le_bytes());
    put(rec, l.output_cost, c.output_cost_per_1m.to_le_bytes());
    put(
        rec,
        l.cached_input_cost,
        c.cached_input_cost_per_1m.to_le_bytes(),
    );
    put(rec, l.priority, c.priority.to_le_bytes());
    put(rec, l.weight, c.weight.to_le_bytes());
    put(rec, l.quality, c.quality.to_le_bytes());
    put(rec, l.attempts, r.attempts.to_le_bytes());
    let figures = [
        r.requests_per_minute,
        r.success_rate,
        r.latency_p50_ms,
        r.latency_p95_ms,
        r.latency_p99_ms,
        r.ttft_p50_ms,
        r.ttft_p95_ms,
        r.output_tokens_per_second,
    ];
    for (at, v) in l.figures.iter().zip(figures) {
        put(rec, *at, v.to_le_bytes());
    }
    for (at, v) in l.errors.iter().zip(shares(&r.errors)) {
        put(rec, *at, v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_fills_the_record() {
        let l = layout();
        // The last field ends where the record (padded to its alignment) does.
        let last = l.errors[SHARES - 1] + 4;
        let align = <Wit as ComponentType>::ALIGN32 as usize;
        assert_eq!(last.next_multiple_of(align), l.size);
        // Every field is distinct and in order.
        let mut all = vec![
            l.deployment,
            l.adapter,
            l.healthy,
            l.headroom,
            l.in_flight,
            l.error_rate,
            l.latency_ms,
            l.input_cost,
            l.output_cost,
            l.cached_input_cost,
            l.priority,
            l.weight,
            l.quality,
            l.supports,
            l.attempts,
        ];
        all.extend(l.figures);
        all.extend(l.errors);
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
        // Four flags are one byte, written whole.
        assert_eq!(<strategy::Capabilities as ComponentType>::SIZE32, 1);
    }

    #[test]
    fn unnamed_classes_add_up_in_other() {
        let s = shares(&[("overloaded", 0.5), ("diverged", 0.1), ("at_capacity", 0.2)]);
        assert_eq!(s[1], 0.5);
        assert!((s[SHARES - 1] - 0.3).abs() < 1e-6);
        assert_eq!(s.iter().sum::<f32>(), 0.8);
    }
}
