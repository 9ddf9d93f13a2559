//! The use cases as the server calls them: one method per kind of request,
//! each taking the request's [`RequestContext`]. Access has been checked
//! before any of them runs ([`Services::authorize`]); here the context
//! gives the deadline of long reads. Heavy requests reserve their memory
//! with admission control before they start.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use neurocube_core::meta::{Channel, Dataset};
use neurocube_core::{Box3, ChannelName, DType, DatasetName};
use serde_json::Value;

use crate::body::{self, BodyLimit};
use crate::catalog::{ChannelRecord, Created, ResolvedChannel};
use crate::context::{Access, RequestContext};
use crate::encoding::{self, Encoded, Encoding};
use crate::error::{Result, ServiceError};
use crate::jobs::{JobRecord, TaskRecord, TaskSpec};
use crate::pyramid::LevelStatus;
use crate::slice::{self, Plane, RenderOptions};
use crate::tiles::{Tile, TileRequest};
use crate::volume::{CutoutStream, Target, WriteSummary};
use crate::{Services, volume};

mod annotations;
mod auth;
mod cave;
mod graph;
mod objects;

pub use auth::WhoAmI;

pub use annotations::{IdList, SynapseQuery, TableView};
pub use cave::{CaveAnswer, DatasetPatch};
pub use objects::{ObjectView, VoxelsBody};

/// A chunk stream (`GET .../chunks/...`).
pub struct ChunksResponse {
    /// Voxel type.
    pub dtype: DType,
    /// Chunk size `[x, y, z]`.
    pub chunk_size: [u64; 3],
    /// Shape of the box `[x, y, z]`.
    pub shape: [u64; 3],
    /// The level is stale (being recomputed).
    pub stale: bool,
    /// Header, records, trailer.
    pub body: futures::stream::BoxStream<'static, Result<Bytes>>,
}

/// A box of one level of one channel, as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeBox {
    /// The dataset.
    pub dataset: DatasetName,
    /// The channel.
    pub channel: ChannelName,
    /// The resolution level.
    pub level: u8,
    /// The box, in that level's voxels.
    pub bbox: Box3,
}

/// A cutout on its way out.
pub struct CutoutResponse {
    /// Voxel type.
    pub dtype: DType,
    /// Shape `[x, y, z]`.
    pub shape: [u64; 3],
    /// The level is out of date in this box (a write awaits downsampling).
    pub stale: bool,
    /// The encoded body (holds its memory reservation until sent).
    pub body: Encoded,
}

/// A rendered slice.
pub struct SliceResponse {
    /// The image.
    pub image: Bytes,
    /// The level is out of date in this box.
    pub stale: bool,
}

/// Room for an npy header (at most 64 KiB) or Blosc overhead around a body.
const BODY_SLACK: u64 = 1 << 16;
/// Slabs a streamed read holds at once (fetching, decoding, sending).
const SLABS_HELD: u64 = 3;

impl Services {
    async fn target(&self, b: &VolumeBox) -> Result<Target> {
        self.volumes
            .target(&b.dataset, &b.channel, b.level, b.bbox)
            .await
    }

    /// Read a cutout (npy and raw stream slab by slab; Blosc is compressed
    /// in parts as the slabs arrive and sent once whole).
    pub async fn read_cutout(
        &self,
        ctx: &RequestContext,
        b: &VolumeBox,
        enc: Encoding,
    ) -> Result<CutoutResponse> {
        let t = self.target(b).await?;
        let len = t.bytes();
        let reserve = match enc {
            // The compressed frame (at most the box), and the slabs and
            // parts on their way to it.
            Encoding::Blosc => len.saturating_add(
                len.min((SLABS_HELD + 2) * t.slab_bytes() + encoding::BLOSC_PARTS_HELD),
            ),
            Encoding::Npy | Encoding::Raw => len.min(SLABS_HELD * t.slab_bytes()),
        };
        let permit = self.admission.admit(reserve)?;
        let stale = self.pyramid.is_stale(&t).await?;
        let dtype = t.dtype();
        let deadline = ctx.deadline().zip(ctx.timeout);
        let stream = first_slab_read(self.volumes.read(t, deadline)).await?;
        let mut body = encoding::encode(enc, stream).await?;
        // The reservation ends when the body has been sent (or dropped).
        let inner = std::mem::replace(&mut body.body, futures::stream::empty().boxed());
        body.body = inner
            .map(move |item| {
                let _held = &permit;
                item
            })
            .boxed();
        Ok(CutoutResponse {
            dtype,
            shape: b.bbox.shape(),
            stale,
            body,
        })
    }

    /// A box's stored chunks as they are, framed as a chunk stream
    /// (`neurocube_core::chunkstream`): no decode on the server. Its memory
    /// is reserved as for a raw cutout (a few chunk layers).
    pub async fn read_chunks(&self, ctx: &RequestContext, b: &VolumeBox) -> Result<ChunksResponse> {
        use neurocube_core::chunkstream;
        let t = self.target(b).await?;
        let permit = self
            .admission
            .admit(t.bytes().min(SLABS_HELD * t.slab_bytes()))?;
        let stale = self.pyramid.is_stale(&t).await?;
        let (dtype, chunk) = (t.dtype(), t.rc.channel.meta.chunk_size);
        let head = serde_json::json!({
            "version": chunkstream::VERSION,
            "dtype": dtype.name(),
            "chunk_size": chunk,
            "box": [[b.bbox.start[0], b.bbox.end[0]], [b.bbox.start[1], b.bbox.end[1]], [b.bbox.start[2], b.bbox.end[2]]],
            "level": b.level,
            "codec": "blosc",
        });
        let deadline = ctx.deadline().zip(ctx.timeout);
        let layers = self.volumes.read_chunks(t, deadline);
        let first = futures::stream::iter([Ok(Bytes::from(chunkstream::header(
            head.to_string().as_bytes(),
        )))]);
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = count.clone();
        // Each record is its head and the stored frame itself: no copy.
        let records = layers
            .map(move |layer| {
                let _held = &permit;
                let items: Vec<Result<Bytes>> = match layer {
                    Err(e) => vec![Err(e)],
                    Ok(layer) => {
                        counted.fetch_add(layer.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        layer
                            .into_iter()
                            .flat_map(|(idx, frame)| {
                                let head = chunkstream::record_head(idx, frame.len());
                                [Ok(Bytes::copy_from_slice(&head)), Ok(frame)]
                            })
                            .collect()
                    }
                };
                futures::stream::iter(items)
            })
            .flatten();
        let end = futures::stream::once(async move {
            Ok(Bytes::copy_from_slice(&chunkstream::trailer(
                count.load(std::sync::atomic::Ordering::Relaxed),
            )))
        });
        Ok(ChunksResponse {
            dtype,
            chunk_size: chunk,
            shape: b.bbox.shape(),
            stale,
            body: first.chain(records).chain(end).boxed(),
        })
    }

    /// Write a cutout from a request body (`declared`: its Content-Length).
    /// The body is checked against the box before it is read, and its
    /// memory reserved; nothing is stored unless all of it fits the box.
    pub async fn write_cutout<S, E>(
        &self,
        _ctx: &RequestContext,
        b: &VolumeBox,
        enc: Encoding,
        declared: Option<u64>,
        body: S,
    ) -> Result<WriteSummary>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let t = self.target(b).await?;
        let len = t.bytes();
        let limit = BodyLimit {
            bytes: len + BODY_SLACK,
            source: format!(
                "box {} holds {len} bytes of {}, plus at most {BODY_SLACK} bytes of npy header or Blosc overhead",
                t.bbox,
                t.dtype()
            ),
            advice: "send a body that matches the box",
            idle: self.config.body_idle_timeout,
        };
        let reserve = match enc {
            Encoding::Blosc => len.saturating_mul(2),
            Encoding::Npy | Encoding::Raw => len,
        };
        // Refuse an oversized body before reserving memory for it.
        body::check_declared(declared, &limit)?;
        let _permit = self.admission.admit(reserve)?;
        let bytes = body::read(declared, body, &limit).await?;
        let voxels = encoding::decode(enc, bytes, &t).await?;
        self.volumes.write(t, voxels).await
    }

    /// Render a slice.
    pub async fn read_slice(
        &self,
        _ctx: &RequestContext,
        b: &VolumeBox,
        plane: Plane,
        opts: RenderOptions,
    ) -> Result<SliceResponse> {
        let t = self.target(b).await?;
        slice::image_dims(plane, &t)?;
        let _permit = self.admission.admit(t.bytes())?;
        let stale = self.pyramid.is_stale(&t).await?;
        // Slices that fit share the tiles' decoded chunks (a slab's chunks
        // are read and decoded once for all its slices and tiles); larger
        // ones, and boxes under label writes the flusher has not stored yet
        // (which the cache does not show), are read from the store.
        let data = if self.tiles.fits(&t) && !self.volumes.has_pending(&t) {
            self.tiles.voxels(&t).await?
        } else {
            self.volumes.read_all(t.clone()).await?
        };
        let image = slice::render_slice(plane, &t, data, opts).await?;
        Ok(SliceResponse { image, stale })
    }

    /// A tile (cached; small, so not admitted).
    pub async fn tile(&self, _ctx: &RequestContext, r: &TileRequest) -> Result<Arc<Tile>> {
        self.tiles.tile(r).await
    }

    /// Every dataset the caller may read.
    pub async fn list_datasets(&self, ctx: &RequestContext) -> Result<Vec<Dataset>> {
        let mut visible = Vec::new();
        for d in self.catalog.datasets().await? {
            if self.auth.can_read(ctx, &d.name).await? {
                visible.push(d);
            }
        }
        Ok(visible)
    }

    /// One dataset.
    pub async fn get_dataset(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
    ) -> Result<Arc<Dataset>> {
        self.catalog.dataset(ds).await
    }

    /// Create a dataset (idempotent); a user who creates one administers it.
    pub async fn create_dataset(&self, ctx: &RequestContext, ds: Dataset) -> Result<Created> {
        let name =
            DatasetName::parse(&ds.name).map_err(|e| ServiceError::field("name", e.to_string()))?;
        self.check_created_settings(&ds).await?;
        let created = self.catalog.create_dataset(ds).await?;
        if created == Created::New {
            self.auth.dataset_created(ctx, &name).await?;
        }
        Ok(created)
    }

    /// Delete a dataset (with its channels if `recursive`); their chunks
    /// are purged in the background.
    pub async fn delete_dataset(
        &self,
        _ctx: &RequestContext,
        name: &DatasetName,
        recursive: bool,
    ) -> Result<()> {
        let ds = self.catalog.dataset(name).await?;
        if recursive {
            for rec in self.catalog.channel_records(name).await? {
                self.purger.enqueue(&ds, &rec).await?;
            }
        }
        self.catalog.delete_dataset(name, recursive).await?;
        self.auth.dataset_deleted(name).await?;
        self.purger.wake();
        Ok(())
    }

    /// Every channel of a dataset.
    pub async fn list_channels(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
    ) -> Result<Vec<ChannelRecord>> {
        self.catalog.dataset(ds).await?;
        self.catalog.channel_records(ds).await
    }

    /// One channel, with the state of each of its levels.
    pub async fn get_channel(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        ch: &ChannelName,
    ) -> Result<(ResolvedChannel, Vec<LevelStatus>)> {
        let rc = self.catalog.channel(ds, ch).await?;
        let status = self.pyramid.status(&rc).await?;
        Ok((rc, status))
    }

    /// Create a channel (idempotent).
    pub async fn create_channel(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        ch: Channel,
    ) -> Result<Created> {
        self.catalog.create_channel(ds, ch).await
    }

    /// Delete a channel: its record now, its chunks in the background.
    pub async fn delete_channel(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        ch: &ChannelName,
    ) -> Result<()> {
        let rc = self.catalog.channel(ds, ch).await?;
        self.purger.enqueue(&rc.dataset, &rc.channel).await?;
        self.catalog.delete_channel(ds, ch).await?;
        self.purger.wake();
        Ok(())
    }

    /// The jobs of the datasets the caller may read (and those of no
    /// dataset), newest first.
    pub async fn list_jobs(&self, ctx: &RequestContext) -> Result<Vec<JobRecord>> {
        let mut visible = Vec::new();
        for j in self.jobs.list().await? {
            let readable = match job_dataset(&j.params) {
                Some(ds) => self.auth.can_read(ctx, ds).await?,
                None => true,
            };
            if readable {
                visible.push(j);
            }
        }
        Ok(visible)
    }

    /// A job the caller may see (to read, `write = false`) or act on: a
    /// job of a dataset it cannot read is as good as unknown.
    async fn job_for(&self, ctx: &RequestContext, id: &str, write: bool) -> Result<JobRecord> {
        let job = self.jobs.get(id).await?;
        self.job_access(ctx, &job.params, write)
            .await
            .map_err(|e| match e {
                ServiceError::UnknownDataset { .. } => ServiceError::UnknownJob { id: id.into() },
                e => e,
            })?;
        Ok(job)
    }

    /// The access a job's parameters need: read or write on its dataset.
    async fn job_access(&self, ctx: &RequestContext, params: &Value, write: bool) -> Result<()> {
        let Some(ds) = job_dataset(params) else {
            return Ok(());
        };
        let name =
            DatasetName::parse(ds).map_err(|e| ServiceError::field("dataset", e.to_string()))?;
        let access = if write {
            Access::Write(name)
        } else {
            Access::Read(name)
        };
        self.auth.check(ctx, &access).await
    }

    /// One job, with its tasks if asked.
    pub async fn get_job(
        &self,
        ctx: &RequestContext,
        id: &str,
        with_tasks: bool,
    ) -> Result<(JobRecord, Option<Vec<TaskRecord>>)> {
        let job = self.job_for(ctx, id, false).await?;
        let tasks = if with_tasks {
            Some(
                self.jobs
                    .tasks(id, None)
                    .await?
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect(),
            )
        } else {
            None
        };
        Ok((job, tasks))
    }

    /// Cancel a job.
    pub async fn cancel_job(&self, ctx: &RequestContext, id: &str) -> Result<JobRecord> {
        self.job_for(ctx, id, true).await?;
        self.jobs.cancel(id).await
    }

    /// Start (or return the running) downsample job of a channel.
    pub async fn start_downsample(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        ch: &ChannelName,
    ) -> Result<(JobRecord, bool)> {
        self.pyramid.start_downsample(ds, ch).await
    }

    /// Create a client-run job (the ingest command), or return the one made for its key.
    pub async fn create_client_job(
        &self,
        ctx: &RequestContext,
        key: &str,
        kind: &str,
        params: Value,
        unit: &str,
        tasks: Vec<TaskSpec>,
    ) -> Result<(JobRecord, bool)> {
        self.job_access(ctx, &params, true).await?;
        self.jobs
            .create_external(key, kind, params, unit, tasks)
            .await
    }

    /// A client finished a task of its job.
    pub async fn complete_task(
        &self,
        ctx: &RequestContext,
        id: &str,
        task: &str,
    ) -> Result<JobRecord> {
        self.job_for(ctx, id, true).await?;
        self.jobs.complete_task(id, task).await
    }

    /// A client stopped its job on an error.
    pub async fn fail_job(
        &self,
        ctx: &RequestContext,
        id: &str,
        error: String,
    ) -> Result<JobRecord> {
        self.job_for(ctx, id, true).await?;
        self.jobs.fail(id, error).await
    }

    /// The settings of the cutout path (for the API's own limits).
    #[must_use]
    pub fn volume_limits(&self) -> volume::VolumeLimits {
        self.volumes.limits()
    }
}

/// The dataset a job works on (`params.dataset`), if it names one.
fn job_dataset(params: &Value) -> Option<&str> {
    params.get("dataset")?.as_str()
}

/// Read the first slab before the response starts, so a store that is
/// down answers 503 (with Retry-After) instead of a 200 whose connection is
/// then cut. A failure after the first slab still ends the body early.
async fn first_slab_read(mut s: CutoutStream) -> Result<CutoutStream> {
    if let Some(first) = s.body.next().await {
        let first = first?;
        s.body = futures::stream::once(async move { Ok(first) })
            .chain(s.body)
            .boxed();
    }
    Ok(s)
}
