//! Cutouts: read any box of a level as a stream of z-slabs, write any box
//! with read-patch-write of partly covered chunks. Missing chunks read as
//! zeros; all-zero chunks are deleted, never stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use neurocube_core::blosc::{self, Blosc};
use neurocube_core::cutout::{copy_region, is_zero};
use neurocube_core::labels;
use neurocube_core::meta::Level;
use neurocube_core::{Box3, ChannelName, ChunkGrid, ChunkIndex, DType, DatasetName};
use neurocube_store::{Key, Store, Table};
use rayon::prelude::*;

use crate::catalog::{Catalog, ResolvedChannel};
use crate::error::{Result, ServiceError};
use crate::keys;
use crate::locks::ChunkLocks;
use crate::metrics::Metrics;
use crate::objects::pending::{Patch, PendingLabels};

mod slabs;
mod write;

use slabs::{assemble_into, fetch_slab, patched, read_slab};

/// Longest a cutout write waits for pending label writes under its box to
/// be stored (then 503).
const LABEL_FLUSH_WAIT: Duration = Duration::from_secs(60);

/// Chunks written per store batch.
const WRITE_BATCH: usize = 64;
/// Chunks of pending label writes stored per batch (one sync each).
const LABEL_BATCH: usize = 64;

/// A chunk of label patches after a flush: stored (true), deleted (false,
/// all zero) or failed, with its patches for the next try.
type LabelOutcome = (ChunkIndex, Vec<Patch>, Result<bool>);
/// Slabs or batches in flight per request: one fetching while one decodes.
const PIPELINE: usize = 2;

/// A cutout being read: what it is, and its voxels as z-slabs in order.
pub struct CutoutStream {
    /// Voxel type.
    pub dtype: DType,
    /// The box.
    pub bbox: Box3,
    /// Total bytes the stream yields.
    pub len: u64,
    /// C-ordered voxel bytes, one z-slab per item.
    pub body: BoxStream<'static, Result<Bytes>>,
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Chunks stored.
    pub chunks_written: usize,
    /// Chunks deleted (all zero after the write).
    pub chunks_deleted: usize,
}

/// Limits of cutouts.
#[derive(Clone, Copy, Debug)]
pub struct VolumeLimits {
    /// Largest cutout (decoded bytes) one request may read or write.
    pub max_cutout_bytes: u64,
    /// Compare-and-set attempts on one chunk before a write gives up (503).
    pub max_cas_attempts: u32,
}

impl Default for VolumeLimits {
    fn default() -> Self {
        Self {
            max_cutout_bytes: 1 << 30,
            max_cas_attempts: 64,
        }
    }
}

/// A completed write, as listeners see it.
#[derive(Clone, Debug)]
pub struct WriteEvent {
    /// Dataset name.
    pub dataset: DatasetName,
    /// Channel name.
    pub channel: ChannelName,
    /// Uid of the channel's chunks.
    pub channel_uid: u64,
    /// Level written.
    pub level: u8,
    /// Box written.
    pub bbox: Box3,
}

/// Something that must react to writes before they are acknowledged (tile
/// cache invalidation, marking coarser levels out of date).
#[async_trait::async_trait]
pub trait WriteListener: Send + Sync {
    /// Called after the chunks are stored, before the write returns. An error
    /// fails the write (the chunks are stored; the client retries the write).
    async fn written(&self, event: &WriteEvent) -> Result<()>;

    /// Many writes at once (a flush of pending label writes: one event per
    /// chunk). By default each in turn; listeners that store something
    /// override it to store once.
    async fn written_many(&self, events: &[WriteEvent]) -> Result<()> {
        let mut first_error = None;
        for e in events {
            if let Err(err) = self.written(e).await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Cutout reads and writes over a store.
pub struct Volumes {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    metrics: Metrics,
    locks: ChunkLocks,
    limits: VolumeLimits,
    listeners: std::sync::RwLock<Vec<Arc<dyn WriteListener>>>,
    /// Label writes acknowledged but not yet in their chunks (NeuroBlaze);
    /// every read applies them.
    labels: Arc<PendingLabels>,
}

/// A checked cutout target.
#[derive(Clone, Debug)]
pub struct Target {
    /// Channel and dataset.
    pub rc: ResolvedChannel,
    /// Level geometry.
    pub level: Level,
    /// The box.
    pub bbox: Box3,
}

impl Target {
    /// Voxel type of the channel.
    #[must_use]
    pub fn dtype(&self) -> DType {
        self.rc.channel.meta.dtype
    }

    /// Bytes the box holds (checked against the limit when the target was made).
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bbox.voxels() * self.dtype().size() as u64
    }

    /// Bytes of one z-slab (one chunk layer) of the box, at most.
    #[must_use]
    pub fn slab_bytes(&self) -> u64 {
        let s = self.bbox.shape();
        s[0] * s[1] * s[2].min(self.grid().chunk[2]) * self.dtype().size() as u64
    }

    fn grid(&self) -> ChunkGrid {
        self.rc.channel.meta.grid()
    }

    fn key(&self, idx: ChunkIndex) -> Key {
        keys::chunk(self.rc.channel.uid, self.level.level, idx)
    }

    pub(crate) fn chunk_bytes(&self) -> usize {
        self.grid().chunk_voxels() * self.dtype().size()
    }
}

impl Volumes {
    /// Cutouts over a store and catalog.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        metrics: Metrics,
        limits: VolumeLimits,
        labels: Arc<PendingLabels>,
    ) -> Self {
        Self {
            store,
            catalog,
            metrics,
            locks: ChunkLocks::default(),
            limits,
            listeners: std::sync::RwLock::default(),
            labels,
        }
    }

    /// The pending label writes every read applies.
    #[must_use]
    pub fn labels(&self) -> &Arc<PendingLabels> {
        &self.labels
    }

    /// Register a listener awaited after every write, before it is
    /// acknowledged (the services wire them up in one place, `Services::new`).
    pub fn on_write(&self, l: Arc<dyn WriteListener>) {
        self.listeners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(l);
    }

    async fn notify(&self, t: &Target) -> Result<()> {
        self.notify_boxes(t, &[t.bbox]).await
    }

    async fn notify_boxes(&self, t: &Target, boxes: &[Box3]) -> Result<()> {
        let events: Vec<WriteEvent> = boxes
            .iter()
            .map(|b| WriteEvent {
                dataset: t.rc.dataset_name.clone(),
                channel: t.rc.channel_name.clone(),
                channel_uid: t.rc.channel.uid,
                level: t.level.level,
                bbox: *b,
            })
            .collect();
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut first_error = None;
        for l in listeners {
            let r = if let [one] = events.as_slice() {
                l.written(one).await
            } else {
                l.written_many(&events).await
            };
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The configured limits.
    #[must_use]
    pub fn limits(&self) -> VolumeLimits {
        self.limits
    }

    /// Resolve and check a cutout: the level exists, the box lies inside it,
    /// and it is within the size limit (checked arithmetic: a box whose byte
    /// count does not fit in 64 bits is too large, never wrapped around).
    pub async fn target(
        &self,
        dataset: &DatasetName,
        channel: &ChannelName,
        level: u8,
        bbox: Box3,
    ) -> Result<Target> {
        let rc = self.catalog.channel(dataset, channel).await?;
        if level >= rc.dataset.levels {
            return Err(ServiceError::UnknownLevel {
                dataset: dataset.to_string(),
                level,
                last: rc.dataset.levels - 1,
            });
        }
        let lv = rc.dataset.level(level);
        let bounds = lv.bounds();
        if !bounds.contains(&bbox) {
            return Err(ServiceError::BoxOutsideLevel {
                dataset: dataset.to_string(),
                level,
                bbox,
                bounds,
            });
        }
        let bytes = bbox.checked_bytes(rc.channel.meta.dtype.size());
        let limit = self.limits.max_cutout_bytes;
        if bytes.is_none_or(|b| b > limit) {
            return Err(ServiceError::TooLarge {
                what: "cutout",
                bytes,
                limit,
                limit_source: "server setting limits.max_cutout_bytes".into(),
                advice: "request smaller boxes",
            });
        }
        Ok(Target {
            rc,
            level: lv,
            bbox,
        })
    }

    /// Read a box as a stream of z-slabs (one chunk layer each): memory stays
    /// bounded by two slabs however large the cutout. Past `deadline` the
    /// stream ends with [`ServiceError::DeadlineExceeded`].
    pub fn read(&self, t: Target, deadline: Option<(Instant, Duration)>) -> CutoutStream {
        let b = t.bbox;
        let slabs = z_slabs(&t);
        let src = self.source();
        src.metrics
            .cutout_bytes
            .with_label_values(&["read"])
            .inc_by(t.bytes());
        let (dtype, len) = (t.dtype(), t.bytes());
        let t = Arc::new(t);
        let body = stream::iter(slabs)
            .map(move |slab| {
                let (src, t) = (src.clone(), t.clone());
                async move {
                    check_deadline(deadline)?;
                    read_slab(src, t, slab).await
                }
            })
            .buffered(PIPELINE)
            .boxed();
        CutoutStream {
            dtype,
            bbox: b,
            len,
            body,
        }
    }

    /// The stored chunks overlapping a box, as stored (Blosc frames, never
    /// decoded), one chunk layer per item with their grid indices; chunks
    /// never written are left out. Past `deadline` the stream ends with
    /// [`ServiceError::DeadlineExceeded`].
    pub fn read_chunks(
        &self,
        t: Target,
        deadline: Option<(Instant, Duration)>,
    ) -> BoxStream<'static, Result<Vec<(ChunkIndex, Bytes)>>> {
        let slabs = z_slabs(&t);
        let src = self.source();
        let t = Arc::new(t);
        stream::iter(slabs)
            .map(move |slab| {
                let (src, t) = (src.clone(), t.clone());
                async move {
                    check_deadline(deadline)?;
                    let (idxs, stored) = fetch_slab(&src, &t, slab).await?;
                    Ok(idxs
                        .into_iter()
                        .zip(stored)
                        .filter_map(|(i, s)| s.map(|b| (i, b)))
                        .collect())
                }
            })
            .buffered(PIPELINE)
            .boxed()
    }

    /// Read a box into one buffer.
    pub async fn read_all(&self, t: Target) -> Result<Vec<u8>> {
        let started = Instant::now();
        self.metrics
            .cutout_bytes
            .with_label_values(&["read"])
            .inc_by(t.bytes());
        let t = Arc::new(t);
        let slabs = z_slabs(&t);
        // One buffer, filled slab by slab in place; the next slab's chunks are
        // fetched while the current one decodes.
        let mut out = vec![0u8; t.bytes() as usize];
        let plane = (t.bbox.shape()[0] * t.bbox.shape()[1]) as usize * t.dtype().size();
        let src = self.source();
        let mut fetched = fetch_slab(&src, &t, slabs[0]).await?;
        for (i, slab) in slabs.iter().enumerate() {
            let offset = (slab.start[2] - t.bbox.start[2]) as usize * plane;
            let len = slab.shape()[2] as usize * plane;
            let (tt, s, (idxs, stored)) = (t.clone(), *slab, fetched);
            let decode = tokio::task::spawn_blocking(move || {
                let r = assemble_into(&tt, s, &idxs, &stored, &mut out[offset..offset + len]);
                r.map(|()| out)
            });
            let next = async {
                match slabs.get(i + 1) {
                    Some(n) => fetch_slab(&src, &t, *n).await.map(Some),
                    None => Ok(None),
                }
            };
            let (decoded, next) = tokio::join!(decode, next);
            out = decoded??;
            match next? {
                Some(n) => fetched = n,
                None => break,
            }
        }
        self.metrics
            .cutout_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Whether label writes under the target's box still wait for the
    /// flusher (the store and the decoded-chunk cache do not show them yet).
    pub(crate) fn has_pending(&self, t: &Target) -> bool {
        let idxs = t.grid().chunks_in(&t.bbox);
        self.labels
            .overlay(t.rc.channel.uid, t.level.level, &idxs)
            .is_some_and(|v| v.iter().any(|p| !p.is_empty()))
    }

    /// Read and decode one chunk of a target's channel and level (`None`:
    /// not stored, all zero). The tile path caches what this returns.
    pub(crate) async fn load_chunk(&self, t: &Target, idx: ChunkIndex) -> Result<Option<Vec<u8>>> {
        let key = t.key(idx);
        // Pending patches are taken before the store is read: a flush in
        // between stores them, and applying them again changes nothing.
        let patches = self
            .labels
            .overlay(t.rc.channel.uid, t.level.level, &[idx])
            .and_then(|mut v| v.pop());
        let started = Instant::now();
        let stored = self
            .store
            .get_many(Table::Chunks, std::slice::from_ref(&key))
            .await?
            .pop()
            .flatten();
        self.metrics
            .store_seconds
            .with_label_values(&["get_many"])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.chunk_reads.inc();
        if stored.is_none() && patches.is_none() {
            return Ok(None);
        }
        let t = t.clone();
        tokio::task::spawn_blocking(move || {
            let mut d = vec![0u8; t.chunk_bytes()];
            if let Some(bytes) = &stored {
                decode_chunk(&t, idx, bytes, &mut d)?;
            }
            for p in patches.iter().flatten() {
                labels::apply_runs(&mut d, t.dtype().size(), p.label, &p.runs);
            }
            Ok(if is_zero(&d) { None } else { Some(d) })
        })
        .await?
    }
}

/// Build the new content of a chunk from the cutout (over the old content
/// for partial chunks) and compress it; `None` if it is all zero.
fn encode_chunk(
    t: &Target,
    data: &[u8],
    idx: ChunkIndex,
    old: Option<&Bytes>,
) -> Result<Option<Bytes>> {
    let grid = t.grid();
    let elem = t.dtype().size();
    let cb = grid.chunk_box(idx);
    let mut chunk = vec![0u8; t.chunk_bytes()];
    if let Some(old) = old {
        decode_chunk(t, idx, old, &mut chunk)?;
    }
    if let Some(region) = cb.overlap(&t.bbox) {
        copy_region(data, &t.bbox, &mut chunk, &cb, &region, elem);
    }
    compress_chunk(t, &chunk)
}

/// Compress a decoded chunk; `None` if it is all zero.
fn compress_chunk(t: &Target, chunk: &[u8]) -> Result<Option<Bytes>> {
    let elem = t.dtype().size();
    if is_zero(chunk) {
        return Ok(None);
    }
    let internal = |e: neurocube_core::error::BloscError| ServiceError::Internal {
        during: "compressing a chunk",
        reason: e.to_string(),
    };
    let codec =
        Blosc::new(t.rc.channel.meta.compression.compressor(), 5, elem).map_err(internal)?;
    let z = codec.compress(chunk).map_err(internal)?;
    Ok(Some(Bytes::from(z)))
}

fn decode_chunk(t: &Target, idx: ChunkIndex, stored: &[u8], out: &mut [u8]) -> Result<()> {
    blosc::decompress_into(stored, out).map_err(|e| ServiceError::Corrupt {
        what: "chunk",
        key: format!(
            "{}/{} level {} chunk {:?}",
            t.rc.dataset.name, t.rc.channel.meta.name, t.level.level, idx
        ),
        reason: e.to_string(),
    })
}

/// Past the deadline (the time, and the timeout it came from): the error.
fn check_deadline(deadline: Option<(Instant, Duration)>) -> Result<()> {
    match deadline {
        Some((at, after)) if Instant::now() > at => Err(ServiceError::DeadlineExceeded { after }),
        _ => Ok(()),
    }
}

/// The z-slabs (one chunk layer thick) of a target's box.
fn z_slabs(t: &Target) -> Vec<Box3> {
    let chunk_z = t.grid().chunk[2];
    let b = t.bbox;
    let mut slabs = Vec::new();
    let mut z = b.start[2];
    while z < b.end[2] {
        let z1 = ((z / chunk_z + 1) * chunk_z).min(b.end[2]);
        slabs.push(Box3 {
            start: [b.start[0], b.start[1], z],
            end: [b.end[0], b.end[1], z1],
        });
        z = z1;
    }
    slabs
}
