//! The resolution pyramid: coarser levels computed from finer ones (average
//! for images, mode for segmentation), kept up to date incrementally.
//!
//! Every write marks the chunks it affects at every coarser level *stale*
//! before the write is acknowledged, so the marks survive restarts: a row
//! per chunk (partitioned by super-block like the chunks, value: the
//! generation of the write) and an entry per super-block in a sharded
//! index (`keys.rs`), so no partition grows with a level. Reads of a stale chunk say so
//! ([`Pyramid::is_stale`]; the server adds `X-Neurocube-Level-Stale: true`),
//! and channel metadata lists each level's state. A `downsample` job
//! recomputes the stale chunks level by level (one job phase per level, one
//! task per super-block of 4×4×4 chunks) and clears each mark by
//! compare-and-set on its generation, so a write that lands meanwhile leaves
//! its mark in place.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use neurocube_core::meta::Dataset;
use neurocube_core::{Box3, ChannelName, DatasetName, morton};
use neurocube_store::{Key, Scan, SortRange, Store, Table};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, ResolvedChannel};
use crate::error::{Result, ServiceError};
use crate::jobs::{JobHandler, JobRecord, Jobs, now_ms};
use crate::keys;
use crate::volume::{Target, Volumes, WriteEvent, WriteListener};

mod job;

pub use job::AutoDownsample;

/// Kind name of downsample jobs.
pub const KIND: &str = "downsample";

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

/// Stale marks for a write: every chunk of every coarser level it
/// affects, and the index entries of their super-blocks.
fn marks_for(rc: &ResolvedChannel, level: u8, b: &Box3, generation: u64) -> Vec<(Key, Bytes)> {
    let grid = rc.channel.meta.grid();
    let uid = rc.channel.uid;
    let g = Bytes::from(generation.to_be_bytes().to_vec());
    let mut rows = Vec::new();
    let mut blocks = BTreeSet::new();
    for m in level + 1..rc.dataset.levels {
        if let Some(a) = affected(&rc.dataset, level, m, b) {
            for idx in grid.chunks_in(&a) {
                let code = morton::encode(idx);
                rows.push((keys::stale_mark(uid, m, code), g.clone()));
                blocks.insert((m, morton::super_block(code, keys::SUPER_BLOCK_BITS)));
            }
        }
    }
    rows.extend(
        blocks
            .into_iter()
            .map(|(m, block)| (keys::stale_index(uid, m, block), Bytes::new())),
    );
    rows
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
    async fn written(&self, ev: &WriteEvent) -> Result<()> {
        let rc = self.catalog.channel(&ev.dataset, &ev.channel).await?;
        if rc.channel.uid != ev.channel_uid || ev.level + 1 >= rc.dataset.levels {
            return Ok(());
        }
        let generation = uuid::Uuid::new_v4().as_u64_pair().0;
        let mut rows = marks_for(&rc, ev.level, &ev.bbox, generation);
        let d = Dirty {
            dataset: ev.dataset.to_string(),
            channel: ev.channel.to_string(),
            uid: ev.channel_uid,
            at_ms: now_ms(),
        };
        rows.push((keys::dirty(ev.channel_uid), json_bytes(&d)?));
        self.store.put_many(Table::Meta, rows).await?;
        Ok(())
    }

    /// One store write for all the events' marks (a flush of label writes
    /// sends one event per chunk).
    async fn written_many(&self, events: &[WriteEvent]) -> Result<()> {
        let mut rows = std::collections::BTreeMap::new();
        for ev in events {
            let rc = self.catalog.channel(&ev.dataset, &ev.channel).await?;
            if rc.channel.uid != ev.channel_uid || ev.level + 1 >= rc.dataset.levels {
                continue;
            }
            let generation = uuid::Uuid::new_v4().as_u64_pair().0;
            for (k, v) in marks_for(&rc, ev.level, &ev.bbox, generation) {
                rows.insert(k, v);
            }
            let d = Dirty {
                dataset: ev.dataset.to_string(),
                channel: ev.channel.to_string(),
                uid: ev.channel_uid,
                at_ms: now_ms(),
            };
            rows.insert(keys::dirty(ev.channel_uid), json_bytes(&d)?);
        }
        if !rows.is_empty() {
            self.store
                .put_many(Table::Meta, rows.into_iter().collect())
                .await?;
        }
        Ok(())
    }
}

fn json_bytes<T: Serialize>(v: &T) -> Result<Bytes> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| ServiceError::Internal {
            during: "encoding a record",
            reason: e.to_string(),
        })
}

/// Pyramid maintenance over the volumes.
pub struct Pyramid {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    volumes: Arc<Volumes>,
    jobs: Arc<Jobs>,
}

impl Pyramid {
    /// The pyramid over the volumes; [`Pyramid::listener`] and
    /// [`Pyramid::job_handler`] are wired up by `Services::new`.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        volumes: Arc<Volumes>,
        jobs: Arc<Jobs>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            catalog,
            volumes,
            jobs,
        })
    }

    /// The write listener that stores stale marks.
    #[must_use]
    pub fn listener(&self) -> Arc<dyn WriteListener> {
        Arc::new(StaleListener {
            store: self.store.clone(),
            catalog: self.catalog.clone(),
        })
    }

    /// The handler of `downsample` jobs (holding the pyramid weakly, so the
    /// pyramid and the jobs do not keep each other alive).
    #[must_use]
    pub fn job_handler(self: &Arc<Self>) -> Arc<dyn JobHandler> {
        Arc::new(job::Handler(Arc::downgrade(self)))
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
                .map(|i| keys::stale_mark(t.rc.channel.uid, t.level.level, morton::encode(i)))
                .collect();
        Ok(self
            .store
            .get_many(Table::Meta, &keys)
            .await?
            .iter()
            .any(Option::is_some))
    }

    /// The super-blocks of a channel level that may hold stale marks.
    async fn stale_blocks(&self, uid: u64, level: u8) -> Result<Vec<u64>> {
        let mut blocks = Vec::new();
        for shard in 0..keys::STALE_SHARDS {
            let p = keys::stale_index_partition(uid, level, shard);
            let rows = Scan::partition(self.store.clone(), Table::Meta, p, SortRange::all())
                .collect()
                .await?;
            blocks.extend(rows.iter().filter_map(|(k, _)| keys::morton_of(&k.sort)));
        }
        blocks.sort_unstable();
        Ok(blocks)
    }

    /// The stale marks of one super-block.
    async fn marks(&self, uid: u64, level: u8, block: u64) -> Result<Vec<(Key, Bytes)>> {
        Ok(Scan::partition(
            self.store.clone(),
            Table::Meta,
            keys::stale_partition(uid, level, block),
            SortRange::all(),
        )
        .collect()
        .await?)
    }

    /// Stale chunks of a channel level, counted up to `cap`.
    async fn count_stale(&self, uid: u64, level: u8, cap: u64) -> Result<u64> {
        let mut n = 0;
        for block in self.stale_blocks(uid, level).await? {
            if n >= cap {
                break;
            }
            n += Scan::partition(
                self.store.clone(),
                Table::Meta,
                keys::stale_partition(uid, level, block),
                SortRange::all(),
            )
            .count(cap - n)
            .await?;
        }
        Ok(n.min(cap))
    }

    /// Drop a super-block's index entry once its marks are gone. The entry
    /// is deleted first and put back if a mark is found afterwards: a write
    /// stores its mark before its index entry, so no mark is ever left
    /// without one.
    async fn tidy_index(&self, uid: u64, level: u8, block: u64) -> Result<()> {
        let entry = keys::stale_index(uid, level, block);
        self.store
            .delete_many(Table::Meta, std::slice::from_ref(&entry))
            .await?;
        let left = Scan::partition(
            self.store.clone(),
            Table::Meta,
            keys::stale_partition(uid, level, block),
            SortRange::all(),
        )
        .count(1)
        .await?;
        if left > 0 {
            self.store
                .put_many(Table::Meta, vec![(entry, Bytes::new())])
                .await?;
        }
        Ok(())
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
        dataset: &DatasetName,
        channel: &ChannelName,
    ) -> Result<(JobRecord, bool)> {
        let rc = self.catalog.channel(dataset, channel).await?;
        let mut total = 0;
        for l in 1..rc.dataset.levels {
            total += self.count_stale(rc.channel.uid, l, u64::MAX).await?;
        }
        self.jobs
            .create(
                KIND,
                serde_json::json!({"dataset": dataset, "channel": channel, "uid": rc.channel.uid}),
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
        let dirty = Scan::partition(
            self.store.clone(),
            Table::Meta,
            keys::DIRTY.to_vec(),
            SortRange::all(),
        )
        .rows();
        futures::pin_mut!(dirty);
        let now = now_ms();
        while let Some((k, v)) = dirty.try_next().await? {
            let Ok(d) = serde_json::from_slice::<Dirty>(&v) else {
                continue;
            };
            if now.saturating_sub(d.at_ms) < quiet_ms {
                continue;
            }
            let names = DatasetName::parse(&d.dataset)
                .ok()
                .zip(ChannelName::parse(&d.channel).ok());
            let Some((ds, ch)) = names else {
                self.store.delete_many(Table::Meta, &[k]).await?;
                continue;
            };
            match self.catalog.channel(&ds, &ch).await {
                Ok(rc) if rc.channel.uid == d.uid => {
                    let (j, new) = self.start_downsample(&ds, &ch).await?;
                    if new {
                        tracing::info!(job = %j.id, dataset = %d.dataset, channel = %d.channel,
                            "started automatic downsampling");
                    }
                }
                Ok(_)
                | Err(ServiceError::UnknownDataset { .. } | ServiceError::UnknownChannel { .. }) => {
                    self.store.delete_many(Table::Meta, &[k]).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
