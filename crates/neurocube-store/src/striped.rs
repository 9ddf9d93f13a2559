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
    /// never deadlock.
    pub(crate) fn lock_all<K: Hash>(
        &self,
        keys: impl Iterator<Item = K>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = keys.map(|k| self.stripe(&k)).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| self.locks[i].lock()).collect()
    }
}
