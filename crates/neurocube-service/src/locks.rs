//! Striped async locks over chunk keys: a partial-chunk write holds the
//! stripes of every chunk it patches, so concurrent writers in one process
//! never interleave read-patch-write on a chunk. (Across processes the
//! store's compare-and-set does the same job.)

use std::hash::BuildHasher;
use std::sync::Arc;

use neurocube_store::Key;
use tokio::sync::{Mutex, OwnedMutexGuard};

const STRIPES: usize = 4096;

/// The stripes.
pub struct ChunkLocks {
    stripes: Vec<Arc<Mutex<()>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for ChunkLocks {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect(),
            hasher: Default::default(),
        }
    }
}

impl ChunkLocks {
    /// Lock the stripes of all keys, in ascending stripe order (no deadlock
    /// between two writers), and hold them until the guards drop.
    pub async fn lock(&self, keys: &[Key]) -> Vec<OwnedMutexGuard<()>> {
        let mut idx: Vec<usize> = keys
            .iter()
            .map(|k| (self.hasher.hash_one(k) as usize) % STRIPES)
            .collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripes[i].clone().lock_owned().await);
        }
        guards
    }
}
