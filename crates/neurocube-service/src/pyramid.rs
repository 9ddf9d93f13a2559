//! The resolution pyramid: coarser levels computed from finer ones (average
//! for images, mode for segmentation), kept up to date incrementally.
//!
//! Every write marks the chunks it affects at every coarser level *stale*
//! (rows in the `meta` table, `stale/{uid}/{level}` → Morton code → a
//! generation) before the write is acknowledged, so the
//! marks survive restarts. Reads of a stale chunk say so
//! ([`Pyramid::is_stale`]; the server adds `X-Neurocube-Level-Stale: true`),
//! and channel metadata lists each level's state. A `downsample` job
//! recomputes the stale chunks level by level (one job phase per level,
//! tasks of up to 4×4×4 chunks) and clears each mark by compare-and-set on
//! its generation, so a write that lands meanwhile leaves its mark in place.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt, stream};
use neurocube_core::downsample::{Kernel, downsample, source_box};
use neurocube_core::meta::{ChannelType, Dataset};
use neurocube_core::{Box3, morton};
use neurocube_store::{Key, SortRange, Store, Table};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::catalog::{Catalog, ResolvedChannel};
use crate::error::{Result, ServiceError};
use crate::jobs::{JobHandler, JobRecord, Jobs, TaskRecord, TaskSpec, now_ms};
use crate::volume::{Target, Volumes, WriteEvent, WriteListener};

/// Kind name of downsample jobs.
pub const KIND: &str = "downsample";
/// Morton bits per task: 6 bits = 4×4×4 chunks.
const TASK_BITS: u32 = 6;
/// Chunks recomputed at once per task.
const IN_FLIGHT: usize = 3;
const DIRTY: &[u8] = b"stale-channels";

fn stale_partition(uid: u64, level: u8) -> Vec<u8> {
    format!("stale/{uid:016x}/{level:02}").into_bytes()
}

fn stale_key(uid: u64, level: u8, code: u64) -> Key {
    Key::new(stale_partition(uid, level), code.to_be_bytes().to_vec())
}

fn dirty_key(uid: u64) -> Key {
    Key::new(DIRTY.to_vec(), format!("{uid:016x}").into_bytes())
}

/// A channel with stale chunks, for automatic downsampling.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Dirty {
    dataset: String,
    channel: String,
    uid: u64,
    at_ms: u64,
}

/// State of one level of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelStatus {
    /// Level.
    pub level: u8,
    /// `current` or `stale` (some chunks are out of date or not yet computed).
    pub state: String,
    /// Chunks out of date (counted up to 100 000).
    pub stale_chunks: u64,
}

/// The box of level `to` whose voxels depend on `b` of level `from` (< `to`).
#[must_use]
pub fn affected(ds: &Dataset, from: u8, to: u8, b: &Box3) -> Option<Box3> {
    let (ff, ft) = (ds.level(from).factor, ds.level(to).factor);
    let mut out = Box3 {
        start: [0; 3],
        end: [0; 3],
    };
    for a in 0..3 {
        let r = ft[a] / ff[a];
        out.start[a] = b.start[a] / r;
        out.end[a] = b.end[a].div_ceil(r);
    }
    out.overlap(&ds.level(to).bounds())
}

/// Stale marks for a write: every chunk of every coarser level it affects.
fn marks_for(rc: &ResolvedChannel, level: u8, b: &Box3, generation: u64) -> Vec<(Key, Bytes)> {
    let grid = rc.channel.meta.grid();
    let g = Bytes::from(generation.to_be_bytes().to_vec());
    let mut rows = Vec::new();
    for m in level + 1..rc.dataset.levels {
        if let Some(a) = affected(&rc.dataset, level, m, b) {
            for idx in grid.chunks_in(&a) {
                rows.push((stale_key(rc.channel.uid, m, morton::encode(idx)), g.clone()));
            }
        }
    }
    rows
}

async fn mark(store: &Arc<dyn Store>, catalog: &Catalog, ev: &WriteEvent) -> Result<()> {
    let rc = catalog.channel(&ev.dataset, &ev.channel).await?;
    if rc.channel.uid != ev.channel_uid || ev.level + 1 >= rc.dataset.levels {
        return Ok(());
    }
    let generation = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut rows = marks_for(&rc, ev.level, &ev.bbox, generation);
    let d = Dirty {
        dataset: ev.dataset.clone(),
        channel: ev.channel.clone(),
        uid: ev.channel_uid,
        at_ms: now_ms(),
    };
    rows.push((
        dirty_key(ev.channel_uid),
        Bytes::from(serde_json::to_vec(&d).unwrap_or_default()),
    ));
    store.put_many(Table::Meta, rows).await?;
    Ok(())
}

/// Marks coarser levels stale on every write, stored before the write is
/// acknowledged; if the marks cannot be stored the write fails and the
/// client retries, so a coarser level is never stale without saying so.
struct StaleListener {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
}

#[async_trait::async_trait]
impl WriteListener for StaleListener {
    async fn written(&self, event: &WriteEvent) -> Result<()> {
        mark(&self.store, &self.catalog, event).await
    }
}

/// Pyramid maintenance over the volumes.
pub struct Pyramid {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    volumes: Arc<Volumes>,
    jobs: Arc<Jobs>,
}

impl Pyramid {
    /// Build, register the write listener and the `downsample` job kind.
    pub fn install(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        volumes: Arc<Volumes>,
        jobs: Arc<Jobs>,
    ) -> Arc<Self> {
        volumes.on_write(Arc::new(StaleListener {
            store: store.clone(),
            catalog: catalog.clone(),
        }));
        let p = Arc::new(Self {
            store,
            catalog,
            volumes,
            jobs: jobs.clone(),
        });
        jobs.register(KIND, Arc::new(Handler(Arc::downgrade(&p))));
        p
    }

    /// True if any chunk of the target's box at its level is out of date.
    pub async fn is_stale(&self, t: &Target) -> Result<bool> {
        if t.level.level == 0 {
            return Ok(false);
        }
        let keys: Vec<Key> =
            t.rc.channel
                .meta
                .grid()
                .chunks_in(&t.bbox)
                .into_iter()
                .map(|i| stale_key(t.rc.channel.uid, t.level.level, morton::encode(i)))
                .collect();
        Ok(self
            .store
            .get_many(Table::Meta, &keys)
            .await?
            .iter()
            .any(Option::is_some))
    }

    async fn count_stale(&self, uid: u64, level: u8, cap: u64) -> Result<u64> {
        let (mut n, mut token) = (0u64, None);
        loop {
            let page = self
                .store
                .scan(
                    Table::Meta,
                    &stale_partition(uid, level),
                    SortRange::all(),
                    token,
                    10_000,
                )
                .await?;
            n += page.rows.len() as u64;
            token = page.next;
            if token.is_none() || n >= cap {
                return Ok(n.min(cap));
            }
        }
    }

    /// State of every level of a channel (level 0 is always current).
    pub async fn status(&self, rc: &ResolvedChannel) -> Result<Vec<LevelStatus>> {
        let mut out = vec![LevelStatus {
            level: 0,
            state: "current".into(),
            stale_chunks: 0,
        }];
        for l in 1..rc.dataset.levels {
            let n = self.count_stale(rc.channel.uid, l, 100_000).await?;
            out.push(LevelStatus {
                level: l,
                state: if n == 0 { "current" } else { "stale" }.into(),
                stale_chunks: n,
            });
        }
        Ok(out)
    }

    /// Start (or return the running) downsample job of a channel: every
    /// stale chunk of every coarser level is recomputed.
    pub async fn start_downsample(
        &self,
        dataset: &str,
        channel: &str,
    ) -> Result<(JobRecord, bool)> {
        let rc = self.catalog.channel(dataset, channel).await?;
        let mut total = 0;
        for l in 1..rc.dataset.levels {
            total += self.count_stale(rc.channel.uid, l, u64::MAX).await?;
        }
        self.jobs
            .create(
                KIND,
                json!({"dataset": dataset, "channel": channel, "uid": rc.channel.uid}),
                total,
                "chunks",
                Some(&format!("{KIND}/{:016x}", rc.channel.uid)),
                false,
            )
            .await
    }

    /// Start downsample jobs for channels written more than `quiet_ms` ago
    /// that still have stale chunks (automatic mode).
    pub async fn auto_tick(&self, quiet_ms: u64) -> Result<()> {
        let page = self
            .store
            .scan(Table::Meta, DIRTY, SortRange::all(), None, 1000)
            .await?;
        let now = now_ms();
        for (k, v) in page.rows {
            let Ok(d) = serde_json::from_slice::<Dirty>(&v) else {
                continue;
            };
            if now.saturating_sub(d.at_ms) < quiet_ms {
                continue;
            }
            match self.catalog.channel(&d.dataset, &d.channel).await {
                Ok(rc) if rc.channel.uid == d.uid => {
                    let (j, new) = self.start_downsample(&d.dataset, &d.channel).await?;
                    if new {
                        tracing::info!(job = %j.id, dataset = %d.dataset, channel = %d.channel,
                            "started automatic downsampling");
                    }
                }
                Ok(_) | Err(ServiceError::NotFound(_)) => {
                    self.store.delete_many(Table::Meta, &[k]).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn params(job: &JobRecord) -> Result<(String, String, u64)> {
        let p = &job.params;
        match (
            p["dataset"].as_str(),
            p["channel"].as_str(),
            p["uid"].as_u64(),
        ) {
            (Some(d), Some(c), Some(u)) => Ok((d.to_string(), c.to_string(), u)),
            _ => Err(ServiceError::InvalidRequest(format!(
                "job {} has bad parameters {p}",
                job.id
            ))),
        }
    }

    async fn resolve(&self, job: &JobRecord) -> Result<ResolvedChannel> {
        let (d, c, uid) = Self::params(job)?;
        let rc = self.catalog.channel(&d, &c).await?;
        if rc.channel.uid != uid {
            return Err(ServiceError::Conflict(format!(
                "channel {d}/{c} was deleted and created again since job {} started",
                job.id
            )));
        }
        Ok(rc)
    }

    async fn plan(&self, job: &JobRecord, phase: u32) -> Result<Option<Vec<TaskSpec>>> {
        let rc = self.resolve(job).await?;
        let level = phase + 1;
        if level >= u32::from(rc.dataset.levels) {
            return Ok(None);
        }
        let level = level as u8;
        let mut groups: Vec<(u64, u64)> = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .store
                .scan(
                    Table::Meta,
                    &stale_partition(rc.channel.uid, level),
                    SortRange::all(),
                    token,
                    10_000,
                )
                .await?;
            for (k, _) in &page.rows {
                let code = u64::from_be_bytes(k.sort[..8].try_into().unwrap_or([0; 8]));
                let g = code >> TASK_BITS;
                match groups.last_mut() {
                    Some((lg, n)) if *lg == g => *n += 1,
                    _ => groups.push((g, 1)),
                }
            }
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        Ok(Some(
            groups
                .into_iter()
                .map(|(g, n)| TaskSpec {
                    name: format!("{g:016x}"),
                    units: n,
                    spec: json!({"level": level, "group": g}),
                })
                .collect(),
        ))
    }

    async fn run_task(&self, job: &JobRecord, task: &TaskRecord) -> Result<u64> {
        let rc = self.resolve(job).await?;
        let (Some(level), Some(group)) = (task.spec["level"].as_u64(), task.spec["group"].as_u64())
        else {
            return Err(ServiceError::InvalidRequest(format!(
                "task {} has a bad spec {}",
                task.name, task.spec
            )));
        };
        let level = level as u8;
        let lo = group << TASK_BITS;
        let hi = (group + 1) << TASK_BITS;
        let page = self
            .store
            .scan(
                Table::Meta,
                &stale_partition(rc.channel.uid, level),
                SortRange {
                    start: Some(Bytes::from(lo.to_be_bytes().to_vec())),
                    end: Some(Bytes::from(hi.to_be_bytes().to_vec())),
                },
                None,
                1 << TASK_BITS,
            )
            .await?;
        let rc = Arc::new(rc);
        let n = page.rows.len() as u64;
        stream::iter(page.rows)
            .map(|(k, generation)| {
                let rc = rc.clone();
                async move {
                    let code = u64::from_be_bytes(k.sort[..8].try_into().unwrap_or([0; 8]));
                    self.recompute(&rc, level, morton::decode(code)).await?;
                    // Clear the mark unless a write re-marked it meanwhile.
                    self.store
                        .compare_and_set(Table::Meta, k, Some(generation), None)
                        .await?;
                    Ok::<_, ServiceError>(())
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(n)
    }

    /// Recompute one chunk of `level` from `level - 1`.
    pub async fn recompute(&self, rc: &ResolvedChannel, level: u8, idx: [u64; 3]) -> Result<()> {
        let ds = &rc.dataset;
        let meta = &rc.channel.meta;
        let Some(dst) = meta
            .grid()
            .chunk_box(idx)
            .overlap(&ds.level(level).bounds())
        else {
            return Ok(());
        };
        let step = ds.step(level);
        let Some(src) = source_box(&dst, step, &ds.level(level - 1).bounds()) else {
            return Ok(());
        };
        let t = self
            .volumes
            .target(&ds.name, &meta.name, level - 1, src)
            .await?;
        let data = self.volumes.read_all(t).await?;
        let kernel = match meta.kind {
            ChannelType::Image => Kernel::Average,
            ChannelType::Segmentation => Kernel::Mode,
        };
        let dtype = meta.dtype;
        let out =
            tokio::task::spawn_blocking(move || downsample(kernel, dtype, &data, &src, &dst, step))
                .await?;
        let t = self
            .volumes
            .target(&ds.name, &meta.name, level, dst)
            .await?;
        self.volumes.write(t, Bytes::from(out)).await?;
        Ok(())
    }

    async fn finish(&self, job: &JobRecord) -> Result<()> {
        let (_, _, uid) = Self::params(job)?;
        let key = dirty_key(uid);
        let old = self
            .store
            .get_many(Table::Meta, std::slice::from_ref(&key))
            .await?
            .remove(0);
        let Some(old) = old else { return Ok(()) };
        self.store
            .delete_many(Table::Meta, std::slice::from_ref(&key))
            .await?;
        // A write that marked chunks meanwhile keeps the channel on the list.
        let levels = self.resolve(job).await.map_or(0, |rc| rc.dataset.levels);
        for l in 1..levels {
            if self.count_stale(uid, l, 1).await? > 0 {
                self.store
                    .compare_and_set(Table::Meta, key, None, Some(old))
                    .await?;
                break;
            }
        }
        Ok(())
    }
}

/// The `downsample` kind; weak, so the pyramid and the jobs do not keep each other alive.
struct Handler(std::sync::Weak<Pyramid>);

impl Handler {
    fn get(&self) -> Result<Arc<Pyramid>> {
        self.0
            .upgrade()
            .ok_or_else(|| ServiceError::Task("the services are shutting down".into()))
    }
}

impl JobHandler for Handler {
    fn plan<'a>(
        &'a self,
        job: &'a JobRecord,
        phase: u32,
    ) -> BoxFuture<'a, Result<Option<Vec<TaskSpec>>>> {
        Box::pin(async move { self.get()?.plan(job, phase).await })
    }

    fn run<'a>(&'a self, job: &'a JobRecord, task: &'a TaskRecord) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.get()?.run_task(job, task).await })
    }

    fn finish<'a>(&'a self, job: &'a JobRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.get()?.finish(job).await })
    }
}
