//! Tile cache metrics, registered in the service registry (`/metrics`).

use prometheus::{IntCounter, IntGauge, Registry};

/// Counters of the tile and chunk caches and of the prefetcher.
#[derive(Clone)]
pub struct TileMetrics {
    /// Tiles served from the cache.
    pub hits: IntCounter,
    /// Tiles not in the cache when asked for (rendered, or joined a rendering).
    pub misses: IntCounter,
    /// Decoded chunks found in the chunk cache.
    pub chunk_hits: IntCounter,
    /// Decoded chunks read and decoded.
    pub chunk_misses: IntCounter,
    /// Tiles the prefetcher rendered.
    pub prefetch_issued: IntCounter,
    /// Prefetched tiles later asked for.
    pub prefetch_used: IntCounter,
    /// Prefetched tiles evicted or invalidated before anyone asked for them.
    pub prefetch_wasted: IntCounter,
    /// Predictions dropped because the queue was full.
    pub prefetch_dropped: IntCounter,
    /// Bytes held by the tile cache.
    pub tile_bytes: IntGauge,
    /// Bytes held by the chunk cache.
    pub chunk_bytes: IntGauge,
}

impl TileMetrics {
    /// Register the counters.
    ///
    /// # Panics
    /// If they are registered twice in the same registry.
    #[must_use]
    #[allow(clippy::expect_used)] // startup: static metric names
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        Self {
            hits: counter(
                "neurocube_tile_hits_total",
                "Tiles served from the tile cache",
            ),
            misses: counter(
                "neurocube_tile_misses_total",
                "Tiles not in the tile cache when requested",
            ),
            chunk_hits: counter(
                "neurocube_tile_chunk_hits_total",
                "Decoded chunks found in the chunk cache by the tile path",
            ),
            chunk_misses: counter(
                "neurocube_tile_chunk_misses_total",
                "Chunks read and decoded by the tile path",
            ),
            prefetch_issued: counter(
                "neurocube_tile_prefetch_issued_total",
                "Tiles rendered ahead of demand by the prefetcher",
            ),
            prefetch_used: counter(
                "neurocube_tile_prefetch_used_total",
                "Prefetched tiles that were later requested",
            ),
            prefetch_wasted: counter(
                "neurocube_tile_prefetch_wasted_total",
                "Prefetched tiles evicted or invalidated before any request",
            ),
            prefetch_dropped: counter(
                "neurocube_tile_prefetch_dropped_total",
                "Prefetch predictions dropped because the queue was full",
            ),
            tile_bytes: gauge("neurocube_tile_cache_bytes", "Bytes held by the tile cache"),
            chunk_bytes: gauge(
                "neurocube_tile_chunk_cache_bytes",
                "Bytes held by the decoded-chunk cache",
            ),
        }
    }
}
