//! TileCache: square tiles of the xy, xz and yz planes at every level,
//! encoded once and served from memory at video rate.
//!
//! Two moka caches under byte budgets: encoded tiles, and the decoded
//! chunks the tiles are cut from (so the 16 xy tiles of one chunk slab
//! decode its chunks once). Concurrent misses of one key share one
//! computation (`try_get_with`). After each tile served, a prefetcher
//! predicts the next ones (the rest of the chunk slab, the next slab in
//! the direction the client moves, the four neighbours, the next coarser
//! level) and renders them with background workers from a bounded queue;
//! demand requests never wait behind it. Writes invalidate the chunks and
//! tiles of the box written, through [`TileCache::listener`], before they
//! are acknowledged.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::Notify;

use bytes::Bytes;
use neurocube_core::Box3;
use neurocube_core::cutout::copy_region;
use neurocube_core::meta::ChannelType;
use neurocube_core::render::{self, Shading, Slice};

use crate::catalog::Catalog;
use crate::error::{Result, ServiceError};
use crate::slice::Plane;
use crate::volume::{Target, Volumes, WriteEvent, WriteListener};

pub(crate) mod chunks;
pub mod metrics;
mod prefetch;
mod request;

pub use metrics::TileMetrics;
pub use prefetch::PrefetchWorker;
pub use request::{
    CATMAID_TILE_SIZE, JPEG_QUALITY, SliceSpace, TILE_SIZES, Tile, TileConfig, TileFormat,
    TileRequest,
};
use request::{TileKey, axes, locate};

/// Why a shared computation produced nothing to cache.
#[derive(Debug)]
pub(crate) enum InitError {
    /// A write happened while it ran: its result may be stale.
    Stale,
    /// It failed.
    Failed(ServiceError),
}

impl From<ServiceError> for InitError {
    fn from(e: ServiceError) -> Self {
        InitError::Failed(e)
    }
}

impl From<InitError> for ServiceError {
    fn from(e: InitError) -> Self {
        match e {
            InitError::Failed(e) => e,
            InitError::Stale => ServiceError::Contended {
                what: "the tile's voxels".into(),
                attempts: 1,
            },
        }
    }
}

fn unwrap_init(e: Arc<InitError>) -> InitError {
    match Arc::try_unwrap(e) {
        Ok(e) => e,
        Err(shared) => match &*shared {
            InitError::Stale => InitError::Stale,
            InitError::Failed(se) => InitError::Failed(se.duplicate()),
        },
    }
}

/// Write counters, striped by channel uid and level: a rendering that saw
/// the counter of its channel level change may hold stale voxels.
pub(crate) struct Epochs([AtomicU64; 64]);

impl Epochs {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn slot(&self, uid: u64, level: u8) -> &AtomicU64 {
        let i = (uid.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(level)) % 64;
        &self.0[i as usize]
    }

    pub(crate) fn get(&self, uid: u64, level: u8) -> u64 {
        self.slot(uid, level).load(Ordering::SeqCst)
    }

    fn bump(&self, uid: u64, level: u8) {
        self.slot(uid, level).fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ViewKey {
    uid: u64,
    level: u8,
    plane: Plane,
    size: u32,
    row: u64,
    col: u64,
}

pub(crate) struct Inner {
    volumes: Arc<Volumes>,
    catalog: Arc<Catalog>,
    tiles: moka::future::Cache<TileKey, Arc<Tile>>,
    chunks: chunks::ChunkCache,
    metrics: TileMetrics,
    /// Bumped by every write; a rendering that saw its one change is not cached.
    epoch: Arc<Epochs>,
    /// Demand renderings in progress.
    demand: AtomicUsize,
    /// Woken when a demand rendering ends (prefetch waits for a free core).
    demand_done: Notify,
    busy_limit: usize,
    /// Byte budget of the decoded-chunk cache.
    chunk_budget: u64,
    /// Last slice and direction per tile column, to predict the next slab.
    motion: moka::sync::Cache<ViewKey, (u64, i8)>,
    pub(crate) queue: Option<prefetch::Queue>,
}

/// Encoded tiles and decoded chunks in memory, with prefetching.
pub struct TileCache {
    inner: Arc<Inner>,
    prefetch_workers: usize,
}

struct Invalidator(Weak<Inner>);

#[async_trait::async_trait]
impl WriteListener for Invalidator {
    async fn written(&self, e: &WriteEvent) -> Result<()> {
        if let Some(inner) = self.0.upgrade() {
            inner.invalidate(e.channel_uid, e.level, e.bbox);
        }
        Ok(())
    }

    async fn written_many(&self, events: &[WriteEvent]) -> Result<()> {
        if let Some(inner) = self.0.upgrade() {
            inner.invalidate_many(events);
        }
        Ok(())
    }
}

struct DemandGuard<'a>(&'a Inner);

impl Drop for DemandGuard<'_> {
    fn drop(&mut self) {
        self.0.demand.fetch_sub(1, Ordering::SeqCst);
        self.0.demand_done.notify_waiters();
    }
}

impl TileCache {
    /// A tile cache over the volumes, with its metrics in `registry`. Its
    /// write listener ([`TileCache::listener`]) and prefetch workers
    /// ([`TileCache::prefetch_workers`]) are started by the services.
    #[must_use]
    pub fn new(
        config: &TileConfig,
        volumes: Arc<Volumes>,
        catalog: Arc<Catalog>,
        registry: &prometheus::Registry,
    ) -> Self {
        let metrics = TileMetrics::register(registry);
        let wasted = metrics.prefetch_wasted.clone();
        let tiles = moka::future::Cache::builder()
            .max_capacity(config.tile_cache_bytes)
            .weigher(|_k: &TileKey, t: &Arc<Tile>| {
                u32::try_from(t.bytes.len() + 256).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_k, t: Arc<Tile>, cause| {
                if cause != moka::notification::RemovalCause::Replaced
                    && t.prefetched.load(Ordering::SeqCst)
                {
                    wasted.inc();
                }
            })
            .support_invalidation_closures();
        let tiles = match config.max_age {
            Some(age) => tiles.time_to_live(age),
            None => tiles,
        }
        .build();
        let epoch = Arc::new(Epochs::new());
        let inner = Arc::new(Inner {
            chunks: chunks::ChunkCache::new(
                config.chunk_cache_bytes,
                config.max_age,
                metrics.clone(),
                epoch.clone(),
            ),
            volumes: volumes.clone(),
            catalog,
            tiles,
            metrics,
            epoch,
            demand: AtomicUsize::new(0),
            demand_done: Notify::new(),
            busy_limit: std::thread::available_parallelism().map_or(2, usize::from),
            chunk_budget: config.chunk_cache_bytes,
            motion: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(std::time::Duration::from_secs(30))
                .build(),
            queue: (config.prefetch && config.prefetch_queue > 0)
                .then(|| prefetch::Queue::new(config.prefetch_queue)),
        });
        Self {
            inner,
            prefetch_workers: config.prefetch_workers.max(1),
        }
    }

    /// The write listener that drops what a write made out of date.
    #[must_use]
    pub fn listener(&self) -> Arc<dyn WriteListener> {
        Arc::new(Invalidator(Arc::downgrade(&self.inner)))
    }

    /// The prefetch workers to run (none when prefetching is off).
    #[must_use]
    pub fn prefetch_workers(&self) -> Vec<PrefetchWorker> {
        if self.inner.queue.is_none() {
            return Vec::new();
        }
        (0..self.prefetch_workers)
            .map(|i| PrefetchWorker::new(Arc::downgrade(&self.inner), i))
            .collect()
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &TileMetrics {
        &self.inner.metrics
    }

    /// A tile: from the cache, or rendered (once, however many ask at the
    /// same time). Then predicts and queues the tiles likely to come next.
    pub async fn tile(&self, req: &TileRequest) -> Result<Arc<Tile>> {
        let inner = &self.inner;
        if !TILE_SIZES.contains(&req.size) {
            return Err(ServiceError::field(
                "size",
                format!(
                    "tile size {} is not offered: use 256, 512 or 1024",
                    req.size
                ),
            ));
        }
        let rc = inner.catalog.channel(&req.dataset, &req.channel).await?;
        let slice = match req.slice_space {
            SliceSpace::Level => req.slice,
            SliceSpace::Full => {
                if req.level >= rc.dataset.levels {
                    req.slice
                } else {
                    let n = axes(req.plane).2;
                    req.slice / rc.dataset.level(req.level).factor[n]
                }
            }
        };
        let (key, target) = locate(
            &rc, req.plane, req.size, req.level, slice, req.row, req.col, req.format,
        )?;
        let tile = inner.demand(key, target.clone()).await?;
        inner.predict(&key, &target);
        inner
            .metrics
            .tile_bytes
            .set(i64::try_from(inner.tiles.weighted_size()).unwrap_or(i64::MAX));
        inner
            .metrics
            .chunk_bytes
            .set(i64::try_from(inner.chunks.weighted_size()).unwrap_or(i64::MAX));
        Ok(tile)
    }

    /// The voxels of a target's box (C order), assembled from the
    /// decoded-chunk cache that the tiles use, so slices and tiles of one
    /// slab decode its chunks once between them. Epoch-checked like a tile:
    /// a box that a write changed meanwhile is assembled again.
    pub(crate) async fn voxels(&self, t: &Target) -> Result<Vec<u8>> {
        let inner = &self.inner;
        let (uid, level) = (t.rc.channel.uid, t.level.level);
        for _ in 0..3 {
            let epoch = inner.epoch.get(uid, level);
            let chunks = match inner.chunks_of(t).await {
                Ok(c) => c,
                Err(InitError::Stale) => continue,
                Err(InitError::Failed(e)) => return Err(e),
            };
            let (bbox, elem) = (t.bbox, t.dtype().size());
            let buf = tokio::task::spawn_blocking(move || assemble(&chunks, &bbox, elem)).await?;
            if inner.epoch.get(uid, level) == epoch {
                return Ok(buf);
            }
        }
        Err(ServiceError::Contended {
            what: "the slice's voxels".into(),
            attempts: 3,
        })
    }

    /// Whether a box's chunks fit the decoded-chunk cache comfortably (a
    /// quarter of it), so reading them through it does not evict the
    /// working set of the viewers.
    pub(crate) fn fits(&self, t: &Target) -> bool {
        let n = t.rc.channel.meta.grid().chunks_in(&t.bbox).len() as u64;
        n.saturating_mul(t.chunk_bytes() as u64) <= self.inner.chunk_budget / 4
    }

    /// One decoded chunk of a target's channel and level, through the
    /// decoded-chunk cache (`None` data: not stored, all zero). Root-id
    /// lookups of annotations read labels this way.
    pub(crate) async fn decoded_chunk(
        &self,
        t: &Target,
        idx: neurocube_core::ChunkIndex,
    ) -> Result<chunks::ChunkEntry> {
        self.inner
            .chunks
            .get(&self.inner.volumes, t, idx)
            .await
            .map_err(ServiceError::from)
    }

    /// Wait until the prefetch queue is empty and nothing is being rendered
    /// (tests and benches), at most `timeout`.
    pub async fn settle(&self, timeout: std::time::Duration) {
        let started = std::time::Instant::now();
        while started.elapsed() < timeout {
            let idle = self.inner.queue.as_ref().is_none_or(prefetch::Queue::idle);
            if idle && self.inner.demand.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Inner {
    fn busy(&self) -> bool {
        self.demand.load(Ordering::SeqCst) >= self.busy_limit
    }

    fn invalidate(&self, uid: u64, level: u8, bbox: Box3) {
        self.epoch.bump(uid, level);
        self.chunks.invalidate(uid, level, bbox);
        if let Err(e) = self.tiles.invalidate_entries_if(move |k, t| {
            k.uid == uid && k.level == level && t.bbox.overlap(&bbox).is_some()
        }) {
            tracing::warn!(error = %e, "tile cache invalidation failed; clearing it");
            self.tiles.invalidate_all();
        }
    }

    /// Drop what many written boxes touched, with one tile predicate.
    fn invalidate_many(&self, events: &[WriteEvent]) {
        let mut boxes: std::collections::HashMap<(u64, u8), Vec<Box3>> =
            std::collections::HashMap::new();
        for e in events {
            self.chunks.invalidate(e.channel_uid, e.level, e.bbox);
            boxes
                .entry((e.channel_uid, e.level))
                .or_default()
                .push(e.bbox);
        }
        for &(uid, level) in boxes.keys() {
            self.epoch.bump(uid, level);
        }
        let boxes = Arc::new(boxes);
        if let Err(e) = self.tiles.invalidate_entries_if(move |k, t| {
            boxes
                .get(&(k.uid, k.level))
                .is_some_and(|v| v.iter().any(|b| t.bbox.overlap(b).is_some()))
        }) {
            tracing::warn!(error = %e, "tile cache invalidation failed; clearing it");
            self.tiles.invalidate_all();
        }
    }

    async fn demand(&self, key: TileKey, target: Target) -> Result<Arc<Tile>> {
        if let Some(tile) = self.tiles.get(&key).await {
            self.metrics.hits.inc();
            if tile.prefetched.swap(false, Ordering::SeqCst) {
                self.metrics.prefetch_used.inc();
            }
            return Ok(tile);
        }
        self.metrics.misses.inc();
        self.demand.fetch_add(1, Ordering::SeqCst);
        let _guard = DemandGuard(self);
        let tile = self.get_or_render(key, target, false).await?;
        if tile.prefetched.swap(false, Ordering::SeqCst) {
            self.metrics.prefetch_used.inc();
        }
        Ok(tile)
    }

    /// Render through the cache; a rendering overtaken by a write is
    /// retried, and after three tries served without caching.
    async fn get_or_render(
        &self,
        key: TileKey,
        target: Target,
        prefetched: bool,
    ) -> Result<Arc<Tile>> {
        for _ in 0..3 {
            let r = self
                .tiles
                .try_get_with(
                    key,
                    self.render(target.clone(), key.plane, key.format, prefetched),
                )
                .await;
            match r.map_err(unwrap_init) {
                Ok(t) => return Ok(t),
                Err(InitError::Stale) => {}
                Err(InitError::Failed(e)) => return Err(e),
            }
        }
        match self.render(target, key.plane, key.format, false).await {
            Ok(t) => Ok(t),
            Err(InitError::Failed(e)) => Err(e),
            Err(InitError::Stale) => Err(ServiceError::Contended {
                what: "the tile's voxels".into(),
                attempts: 4,
            }),
        }
    }

    async fn render(
        &self,
        t: Target,
        plane: Plane,
        format: TileFormat,
        prefetched: bool,
    ) -> std::result::Result<Arc<Tile>, InitError> {
        let (uid, level) = (t.rc.channel.uid, t.level.level);
        let epoch = self.epoch.get(uid, level);
        if prefetched {
            self.metrics.prefetch_issued.inc();
        }
        let chunks = self.chunks_of(&t).await?;
        let (u, v, _) = axes(plane);
        let shape = t.bbox.shape();
        let (width, height) = (shape[u] as u32, shape[v] as u32);
        let dtype = t.dtype();
        let shading = match t.rc.channel.meta.kind {
            ChannelType::Segmentation => Shading::Pseudocolor,
            ChannelType::Image => Shading::Gray { window: None },
        };
        let bbox = t.bbox;
        let image = format.image();
        let bytes = tokio::task::spawn_blocking(move || {
            let buf = assemble(&chunks, &bbox, dtype.size());
            render::render(
                &Slice {
                    data: &buf,
                    dtype,
                    width,
                    height,
                },
                shading,
                image,
            )
        })
        .await
        .map_err(ServiceError::from)?
        .map_err(|e| ServiceError::Internal {
            during: "encoding a tile",
            reason: e.to_string(),
        })?;
        if self.epoch.get(uid, level) != epoch {
            return Err(InitError::Stale);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let etag = format!("\"{:016x}-{:x}\"", h.finish(), bytes.len());
        Ok(Arc::new(Tile {
            bytes: Bytes::from(bytes),
            etag,
            content_type: image.content_type(),
            bbox,
            prefetched: AtomicBool::new(prefetched),
        }))
    }

    /// The decoded chunks under a target's box, read at once through the
    /// cache.
    async fn chunks_of(
        &self,
        t: &Target,
    ) -> std::result::Result<Vec<chunks::ChunkEntry>, InitError> {
        let idxs = t.rc.channel.meta.grid().chunks_in(&t.bbox);
        futures::future::try_join_all(idxs.iter().map(|&i| self.chunks.get(&self.volumes, t, i)))
            .await
    }

    /// Queue the tiles likely to be asked for after `key`.
    fn predict(&self, key: &TileKey, t: &Target) {
        let Some(queue) = &self.queue else { return };
        let view = ViewKey {
            uid: key.uid,
            level: key.level,
            plane: key.plane,
            size: key.size,
            row: key.row,
            col: key.col,
        };
        let dir: i8 = match self.motion.get(&view) {
            Some((last, _)) if key.slice > last => 1,
            Some((last, _)) if key.slice < last => -1,
            Some((_, d)) => d,
            None => 1,
        };
        self.motion.insert(view, (key.slice, dir));
        let rc = &t.rc;
        let (u, v, n) = axes(key.plane);
        let depth = rc.channel.meta.grid().chunk[n];
        let s = key.slice;
        let slab = s / depth * depth;
        let mut wanted: Vec<(u8, u64, u64, u64)> = Vec::new();
        // The rest of this slab, onwards first.
        let ahead: Vec<u64> = (s + 1..slab + depth).collect();
        let behind: Vec<u64> = (slab..s).rev().collect();
        let (first, second) = if dir >= 0 {
            (ahead, behind)
        } else {
            (behind, ahead)
        };
        for z in first.into_iter().chain(second) {
            wanted.push((key.level, z, key.row, key.col));
        }
        // Neighbours in the plane.
        wanted.push((key.level, s, key.row, key.col + 1));
        wanted.push((key.level, s, key.row + 1, key.col));
        if key.col > 0 {
            wanted.push((key.level, s, key.row, key.col - 1));
        }
        if key.row > 0 {
            wanted.push((key.level, s, key.row - 1, key.col));
        }
        // The next coarser level.
        if key.level + 1 < rc.dataset.levels {
            let step = rc.dataset.step(key.level + 1);
            wanted.push((
                key.level + 1,
                s / step[n],
                key.row / step[v],
                key.col / step[u],
            ));
        }
        // The next slab in the direction of motion.
        if dir >= 0 {
            for z in slab + depth..slab + 2 * depth {
                wanted.push((key.level, z, key.row, key.col));
            }
        } else if slab >= depth {
            for z in (slab - depth..slab).rev() {
                wanted.push((key.level, z, key.row, key.col));
            }
        }
        let batch: Vec<prefetch::Job> = wanted
            .into_iter()
            .filter_map(|(level, slice, row, col)| {
                locate(rc, key.plane, key.size, level, slice, row, col, key.format).ok()
            })
            .filter(|(k, _)| !self.tiles.contains_key(k))
            .map(|(key, target)| prefetch::Job { key, target })
            .collect();
        let dropped = queue.push(batch);
        self.metrics.prefetch_dropped.inc_by(dropped as u64);
    }

    /// Render one predicted tile unless it is already there.
    pub(crate) async fn prefetch(&self, job: prefetch::Job) {
        if self.tiles.contains_key(&job.key) {
            return;
        }
        if let Err(e) = self.get_or_render(job.key, job.target, true).await {
            tracing::debug!(error = %e, "prefetching a tile failed");
        }
    }
}

/// Copy the decoded chunks' parts inside `bbox` into a new zeroed buffer.
fn assemble(chunks: &[chunks::ChunkEntry], bbox: &Box3, elem: usize) -> Vec<u8> {
    let mut buf = vec![0u8; bbox.voxels() as usize * elem];
    for c in chunks {
        if let (Some(d), Some(region)) = (&c.data, c.bbox.overlap(bbox)) {
            copy_region(d, &c.bbox, &mut buf, bbox, &region, elem);
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use neurocube_core::DType;
    use neurocube_core::meta::{Channel, Compression};

    use super::*;
    use crate::catalog::{ChannelRecord, ResolvedChannel};

    fn channel() -> ResolvedChannel {
        let mut ds = crate::demo::dataset([1024, 1024, 64]);
        ds.levels = 1;
        ResolvedChannel {
            dataset_name: neurocube_core::DatasetName::parse(&ds.name).unwrap(),
            channel_name: neurocube_core::ChannelName::parse("c").unwrap(),
            dataset: Arc::new(ds),
            channel: Arc::new(ChannelRecord {
                meta: Channel {
                    name: "c".into(),
                    kind: ChannelType::Image,
                    dtype: DType::Uint8,
                    chunk_size: [128, 128, 16],
                    compression: Compression::BloscLz4,
                    description: String::new(),
                },
                uid: 1,
            }),
        }
    }

    fn jobs(rc: &ResolvedChannel, slices: std::ops::Range<u64>) -> Vec<prefetch::Job> {
        slices
            .map(|z| {
                let (key, target) =
                    locate(rc, Plane::Xy, 256, 0, z, 0, 0, TileFormat::Png).unwrap();
                prefetch::Job { key, target }
            })
            .collect()
    }

    #[test]
    fn the_queue_keeps_its_bound_and_the_newest_predictions_first() {
        let rc = channel();
        let q = prefetch::Queue::new(8);
        assert_eq!(q.push(jobs(&rc, 0..5)), 0);
        // A newer batch goes ahead; duplicates are kept once; the oldest fall off.
        assert_eq!(q.push(jobs(&rc, 3..9)), 1);
        let order: Vec<u64> = std::iter::from_fn(|| {
            let j = q.pop()?;
            q.finish();
            Some(j.key.slice)
        })
        .collect();
        assert_eq!(order, vec![3, 4, 5, 6, 7, 8, 0, 1]);
        assert!(q.idle());
        assert_eq!(q.push(jobs(&rc, 0..40)), 32);
    }

    #[test]
    fn tiles_outside_the_level_do_not_exist() {
        let rc = channel();
        let (_, t) = locate(&rc, Plane::Xz, 1024, 0, 1023, 0, 0, TileFormat::Png).unwrap();
        assert_eq!(t.bbox, Box3::new([0, 1023, 0], [1024, 1024, 64]).unwrap());
        for (plane, slice, row, col) in [
            (Plane::Xy, 64, 0, 0),
            (Plane::Xy, 0, 4, 0),
            (Plane::Yz, 1024, 0, 0),
            (Plane::Xz, 0, 1, 0),
        ] {
            let e = locate(&rc, plane, 256, 0, slice, row, col, TileFormat::Png).unwrap_err();
            assert!(
                matches!(
                    e,
                    ServiceError::SliceOutsideLevel { .. } | ServiceError::TileOutsideLevel { .. }
                ),
                "{e}"
            );
        }
    }
}
