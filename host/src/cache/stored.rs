//! The keys the store's copy of the cache holds, and until when: a miss
//! costs no read of the database.
//!
//! Expired keys leave as new ones come, a few at a time: every insert looks
//! at the next [`SWEEP_STEP`] keys after a cursor that goes round the whole
//! set. A sweep of every key at once (it ran every 1,024 inserts) held the
//! lock every cache lookup takes for as long as the set took to walk, tens
//! of milliseconds at a few million keys. With a step of four, a full round
//! takes a quarter as many inserts as there are keys, so the set holds at
//! most about a quarter more keys than are live.

use indexmap::IndexMap;

use super::Key;

/// Keys looked at on each insert.
const SWEEP_STEP: usize = 4;

#[derive(Default)]
pub(super) struct StoredKeys {
    /// Each key and its expiry (ms since the epoch).
    keys: IndexMap<Key, i64>,
    /// The next key the sweep looks at.
    cursor: usize,
}

impl StoredKeys {
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// When `key` expires, if the store holds it.
    pub(super) fn get(&self, key: &Key) -> Option<i64> {
        self.keys.get(key).copied()
    }

    pub(super) fn remove(&mut self, key: &Key) {
        self.keys.swap_remove(key);
    }

    /// Records `key` (until `expires`), and drops the expired ones among the
    /// next few.
    pub(super) fn insert(&mut self, key: Key, expires: i64, now: i64) {
        self.keys.insert(key, expires);
        for _ in 0..SWEEP_STEP {
            if self.cursor >= self.keys.len() {
                self.cursor = 0;
                if self.keys.is_empty() {
                    return;
                }
            }
            match self.keys.get_index(self.cursor) {
                // The last key moves into the removed one's place: the
                // cursor stays to look at it.
                Some((_, &e)) if e <= now => {
                    self.keys.swap_remove_index(self.cursor);
                }
                _ => self.cursor += 1,
            }
        }
    }
}

impl FromIterator<(Key, i64)> for StoredKeys {
    fn from_iter<I: IntoIterator<Item = (Key, i64)>>(iter: I) -> Self {
        StoredKeys {
            keys: iter.into_iter().collect(),
            cursor: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k
    }

    #[test]
    fn expired_keys_leave_a_few_at_a_time_as_new_ones_come() {
        // 10,000 keys that expired, then 10,000 live ones: each insert
        // looks at four, so the expired ones are gone after a round.
        let mut keys: StoredKeys = (0..10_000).map(|n| (key(n), 50)).collect();
        for n in 10_000..20_000 {
            keys.insert(key(n), 1_000, 100);
        }
        assert_eq!(keys.len(), 10_000);
        assert!((0..10_000).all(|n| keys.get(&key(n)).is_none()));
        assert!((10_000..20_000).all(|n| keys.get(&key(n)) == Some(1_000)));
    }

    #[test]
    fn live_keys_stay_and_a_removed_key_is_gone() {
        let mut keys = StoredKeys::default();
        for n in 0..100 {
            keys.insert(key(n), 1_000 + i64::from(n), 500);
        }
        // Each insert sweeps a little; nothing has expired.
        for n in 100..200 {
            keys.insert(key(n), 2_000, 999);
        }
        assert_eq!(keys.len(), 200);
        keys.remove(&key(7));
        assert_eq!(keys.get(&key(7)), None);
        assert_eq!(keys.len(), 199);
        // Time passes: the first hundred expire (1000..1099 <= 1100) and
        // leave within a round of inserts.
        for n in 200..300 {
            keys.insert(key(n), 5_000, 1_100);
        }
        assert!((0..100).all(|n| keys.get(&key(n)).is_none()));
        assert_eq!(keys.len(), 200);
    }
}
