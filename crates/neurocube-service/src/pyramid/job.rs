//! The `downsample` job: one phase per coarser level, one task per
//! super-block with stale marks; and the worker that starts such jobs by
//! itself once a written channel has been quiet for a while.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt, stream};
use neurocube_core::downsample::{Kernel, downsample, source_box};
use neurocube_core::meta::ChannelType;
use neurocube_core::{ChannelName, DatasetName, morton};
use neurocube_store::Table;
use serde_json::json;

use super::{Pyramid, keys};
use crate::background::{Worker, WorkerState};
use crate::catalog::ResolvedChannel;
use crate::error::{Result, ServiceError};
use crate::jobs::{JobHandler, JobRecord, TaskRecord, TaskSpec};

/// Chunks recomputed at once per task.
const IN_FLIGHT: usize = 3;

/// The names and channel uid in a downsample job's parameters.
fn params(job: &JobRecord) -> Result<(DatasetName, ChannelName, u64)> {
    let p = &job.params;
    let bad = || ServiceError::Corrupt {
        what: "job",
        key: job.id.clone(),
        reason: format!("downsample parameters {p} lack dataset, channel or uid"),
    };
    let ds = p["dataset"]
        .as_str()
        .and_then(|d| DatasetName::parse(d).ok());
    let ch = p["channel"]
        .as_str()
        .and_then(|c| ChannelName::parse(c).ok());
    match (ds, ch, p["uid"].as_u64()) {
        (Some(d), Some(c), Some(u)) => Ok((d, c, u)),
        _ => Err(bad()),
    }
}

impl Pyramid {
    async fn resolve(&self, job: &JobRecord) -> Result<ResolvedChannel> {
        let (d, c, uid) = params(job)?;
        let rc = self.catalog.channel(&d, &c).await?;
        if rc.channel.uid != uid {
            return Err(ServiceError::ChannelReplaced {
                dataset: d.to_string(),
                channel: c.to_string(),
                job: job.id.clone(),
            });
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
        let uid = rc.channel.uid;
        let mut specs = Vec::new();
        for block in self.stale_blocks(uid, level).await? {
            let n = self.marks(uid, level, block).await?.len() as u64;
            specs.push(TaskSpec {
                name: format!("{block:016x}"),
                units: n,
                spec: json!({"level": level, "block": block}),
            });
        }
        Ok(Some(specs))
    }

    async fn run_task(&self, job: &JobRecord, task: &TaskRecord) -> Result<u64> {
        let rc = self.resolve(job).await?;
        let (Some(level), Some(block)) = (task.spec["level"].as_u64(), task.spec["block"].as_u64())
        else {
            return Err(ServiceError::Corrupt {
                what: "task",
                key: format!("{}/{}", job.id, task.name),
                reason: format!("downsample task spec {} lacks level or block", task.spec),
            });
        };
        let level = u8::try_from(level).map_err(|_| ServiceError::Corrupt {
            what: "task",
            key: format!("{}/{}", job.id, task.name),
            reason: format!("level {level} is not a level"),
        })?;
        let uid = rc.channel.uid;
        let marks = self.marks(uid, level, block).await?;
        let n = marks.len() as u64;
        let rc = Arc::new(rc);
        stream::iter(marks)
            .map(|(k, generation)| {
                let rc = rc.clone();
                async move {
                    let Some(code) = keys::morton_of(&k.sort) else {
                        return Ok(());
                    };
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
        self.tidy_index(uid, level, block).await?;
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
        let (dn, cn) = (&rc.dataset_name, &rc.channel_name);
        let t = self.volumes.target(dn, cn, level - 1, src).await?;
        let data = self.volumes.read_all(t).await?;
        let kernel = match meta.kind {
            ChannelType::Image => Kernel::Average,
            ChannelType::Segmentation => Kernel::Mode,
        };
        let dtype = meta.dtype;
        let out =
            tokio::task::spawn_blocking(move || downsample(kernel, dtype, &data, &src, &dst, step))
                .await?;
        let t = self.volumes.target(dn, cn, level, dst).await?;
        self.volumes.write(t, Bytes::from(out)).await?;
        Ok(())
    }

    async fn finish(&self, job: &JobRecord) -> Result<()> {
        let (_, _, uid) = params(job)?;
        let key = keys::dirty(uid);
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

/// The `downsample` kind.
pub(super) struct Handler(pub(super) Weak<Pyramid>);

impl Handler {
    fn get(&self) -> Result<Arc<Pyramid>> {
        self.0.upgrade().ok_or(ServiceError::ShuttingDown)
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

/// Starts downsample jobs for channels that were written and then left
/// alone for `quiet` (`jobs.auto_downsample`).
pub struct AutoDownsample {
    pyramid: Weak<Pyramid>,
    quiet: Duration,
}

/// How often written channels are checked.
const AUTO_INTERVAL: Duration = Duration::from_millis(250);

impl AutoDownsample {
    /// The worker for a pyramid.
    #[must_use]
    pub fn new(pyramid: &Arc<Pyramid>, quiet: Duration) -> Self {
        Self {
            pyramid: Arc::downgrade(pyramid),
            quiet,
        }
    }
}

#[async_trait::async_trait]
impl Worker for AutoDownsample {
    fn name(&self) -> String {
        "auto-downsample".into()
    }

    async fn work(&mut self, stopping: bool) -> Result<WorkerState> {
        let Some(p) = self.pyramid.upgrade().filter(|_| !stopping) else {
            return Ok(WorkerState::Done);
        };
        p.auto_tick(self.quiet.as_millis() as u64).await?;
        Ok(WorkerState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(AUTO_INTERVAL).await;
    }
}
