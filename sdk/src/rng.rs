//! A small generator for strategies, seeded from one host random number
//! ([`crate::random_u64`]).
//!
//! Drawing every number from the host would cost a call across the component
//! boundary each; one host call per request, stretched with SplitMix64, keeps
//! `order` within its budget. The host's stream is seeded (from
//! `SWITCHYARD_PLUGIN_SEED` in tests), so a seeded run still replays.

/// SplitMix64: statistically sound for picks like these, and any seed,
/// including 0 and consecutive ones, gives well-mixed outputs.
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is fixed by `seed` (one host random number).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number of the stream.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0), by multiply-shift: no division, and a
    /// bias below `n / 2^64`, far beneath anything a weight can express.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(0);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[rng.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&s| (850..1150).contains(&s)), "{seen:?}");
        assert_eq!(Rng::new(1).below(1), 0);
        assert!(Rng::new(2).below(u64::MAX) < u64::MAX);
    }
}
