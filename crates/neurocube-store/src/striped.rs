//! Striped locks that make compare-and-set linearizable with plain writes in
//! one process: every write to a key holds its stripe.

use std::hash::{BuildHasher, Hash};

use parking_lot::{Mutex, MutexGuard};

const STRIPES: usize = 1024;

pub(crate) struct Stripes {
    locks: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Stripes {
    fn default() -> Self {
        Self {
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }
}

impl Stripes {
    fn stripe<K: Hash>(&self, k: &K) -> usize {
        (self.hasher.hash_one(k) as usize) % STRIPES
    }

    /// Lock the stripes of all keys, in ascending order so that two writers
    /// never deadlock. A large batch covers every stripe after a few
    /// thousand keys: hashing stops there (an upload of 100,000 rows has
    /// 400,000 keys).
    pub(crate) fn lock_all<K: Hash>(
        &self,
        keys: impl Iterator<Item = K>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut marked = [0u64; STRIPES / 64];
        let mut count = 0;
        for k in keys {
            let i = self.stripe(&k);
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            if marked[word] & bit == 0 {
                marked[word] |= bit;
                count += 1;
                if count == STRIPES {
                    break;
                }
            }
        }
        (0..STRIPES)
            .filter(|i| marked[i / 64] & (1 << (i % 64)) != 0)
            .map(|i| self.locks[i].lock())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_keys_stripe_is_held_once_and_a_large_batch_holds_all() {
        let s = Stripes::default();
        let keys: Vec<u64> = (0..5).collect();
        let mut want: Vec<usize> = keys.iter().map(|k| s.stripe(k)).collect();
        want.sort_unstable();
        want.dedup();
        {
            let held = s.lock_all(keys.iter().chain(keys.iter()));
            assert_eq!(held.len(), want.len());
            for i in 0..STRIPES {
                assert_eq!(s.locks[i].is_locked(), want.contains(&i), "stripe {i}");
            }
        }
        assert!(s.locks.iter().all(|l| !l.is_locked()));
        let held = s.lock_all(0..100_000u64);
        assert_eq!(held.len(), STRIPES);
    }
}
