//! The decoded-chunk cache: chunks as the tile path reads them, decoded
//! once and shared by every tile (and plane) that crosses them.

use std::sync::Arc;

use neurocube_core::{Box3, ChunkIndex};

use super::metrics::TileMetrics;
use super::{Epochs, InitError};
use crate::volume::{Target, Volumes};

/// A chunk of one level of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ChunkKey {
    uid: u64,
    level: u8,
    idx: ChunkIndex,
}

/// A decoded chunk; `None` for a chunk that is not stored (all zero).
#[derive(Clone)]
pub(crate) struct ChunkEntry {
    pub(crate) data: Option<Arc<Vec<u8>>>,
    pub(crate) bbox: Box3,
}

/// Decoded chunks under a byte budget.
pub(crate) struct ChunkCache {
    cache: moka::future::Cache<ChunkKey, ChunkEntry>,
    metrics: TileMetrics,
    epoch: Arc<Epochs>,
}

impl ChunkCache {
    pub(crate) fn new(
        bytes: u64,
        max_age: Option<std::time::Duration>,
        metrics: TileMetrics,
        epoch: Arc<Epochs>,
    ) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(bytes)
            .weigher(|_k: &ChunkKey, v: &ChunkEntry| {
                // Absent chunks still cost their key and bookkeeping.
                v.data
                    .as_ref()
                    .map_or(64, |d| u32::try_from(d.len()).unwrap_or(u32::MAX))
            })
            .support_invalidation_closures();
        let cache = match max_age {
            Some(age) => cache.time_to_live(age),
            None => cache,
        }
        .build();
        Self {
            cache,
            metrics,
            epoch,
        }
    }

    /// One chunk of a target's channel and level: from the cache, or read and
    /// decoded once however many tiles ask for it at the same time.
    pub(crate) async fn get(
        &self,
        volumes: &Volumes,
        t: &Target,
        idx: ChunkIndex,
    ) -> std::result::Result<ChunkEntry, InitError> {
        let key = ChunkKey {
            uid: t.rc.channel.uid,
            level: t.level.level,
            idx,
        };
        if let Some(e) = self.cache.get(&key).await {
            self.metrics.chunk_hits.inc();
            return Ok(e);
        }
        self.metrics.chunk_misses.inc();
        let bbox = t.rc.channel.meta.grid().chunk_box(idx);
        self.cache
            .try_get_with(key, async {
                let epoch = self.epoch.get(key.uid, key.level);
                let data = volumes.load_chunk(t, idx).await?;
                if self.epoch.get(key.uid, key.level) != epoch {
                    // A write ran meanwhile: the chunk may be stale; retry.
                    return Err(InitError::Stale);
                }
                Ok(ChunkEntry {
                    data: data.map(Arc::new),
                    bbox,
                })
            })
            .await
            .map_err(super::unwrap_init)
    }

    /// Forget the chunks of a channel level that overlap a box.
    pub(crate) fn invalidate(&self, uid: u64, level: u8, bbox: Box3) {
        if let Err(e) = self.cache.invalidate_entries_if(move |k, v| {
            k.uid == uid && k.level == level && v.bbox.overlap(&bbox).is_some()
        }) {
            tracing::warn!(error = %e, "chunk cache invalidation failed; clearing it");
            self.cache.invalidate_all();
        }
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }
}
