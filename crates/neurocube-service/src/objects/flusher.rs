//! The label flusher (a worker of the background runner) and the replay
//! of the label log at start.
//!
//! A flush seals the open epoch, waits for that epoch's writes still in
//! their group commit, stores each touched chunk once (by compare-and-set,
//! `Volumes::store_labels`), then records the next epoch as the log's start
//! and drops the sealed epoch's log partition. Only two epochs can hold
//! unflushed entries at any time: the one being flushed and the open one,
//! so a restart replays exactly those two.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use neurocube_core::labels::{self, LogEntry};
use neurocube_core::{ChannelName, DatasetName, morton};
use neurocube_store::{Scan, SortRange, Table};

use super::Objects;
use super::pending::{ChannelNames, Patch, Sealed};
use crate::background::{Worker, WorkerState};
use crate::error::{Result, ServiceError};
use crate::keys;

/// A chunk and its patches, in order.
type ChunkPatches = (neurocube_core::ChunkIndex, Vec<Patch>);

/// Pause between tries of chunks whose store failed.
const RETRY: Duration = Duration::from_millis(500);

impl Objects {
    /// Store a sealed epoch's chunks, then move the log's start past
    /// `through` and drop the log partitions `drop_epochs`. Chunks of a
    /// channel deleted since are dropped. Chunks that fail are tried again
    /// until they are stored (or, when `stopping`, left to the log: the
    /// next start replays them).
    async fn flush_sealed(
        &self,
        sealed: Sealed,
        through: u64,
        drop_epochs: &[u64],
        stopping: bool,
    ) -> Result<()> {
        let started = Instant::now();
        let mut groups: BTreeMap<(u64, u8), Vec<ChunkPatches>> = BTreeMap::new();
        for ((uid, level, code), patches) in sealed.chunks {
            groups
                .entry((uid, level))
                .or_default()
                .push((morton::decode(code), patches));
        }
        let mut written = 0u64;
        for ((uid, level), mut chunks) in groups {
            let Some(names) = sealed.names.get(&uid) else {
                continue;
            };
            let rc = match self.catalog.channel(&names.dataset, &names.channel).await {
                Ok(rc) if rc.channel.uid == uid => rc,
                Ok(_)
                | Err(ServiceError::UnknownChannel { .. } | ServiceError::UnknownDataset { .. }) => {
                    // The channel was deleted (and maybe made again): its
                    // pending labels go with it.
                    for (idx, _) in &chunks {
                        self.labels.stored((uid, level, morton::encode(*idx)));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut tries = 0;
            loop {
                let (summary, failed, error) = self
                    .volumes
                    .store_labels(rc.clone(), level, chunks, self.config.flush_parallel)
                    .await;
                written += (summary.chunks_written + summary.chunks_deleted) as u64;
                if failed.is_empty() {
                    if let Some(e) = error {
                        // Stored, but a listener failed (stale marks): the
                        // chunks are right; report it.
                        tracing::warn!(error = %e, "a write listener failed after a label flush");
                    }
                    break;
                }
                tries += 1;
                let e = error.unwrap_or(ServiceError::Internal {
                    during: "flushing label writes",
                    reason: "chunks failed".into(),
                });
                if stopping && tries >= 3 {
                    return Err(e);
                }
                tracing::warn!(error = %e, chunks = failed.len(), "label flush failed; trying again");
                tokio::time::sleep(RETRY).await;
                chunks = failed;
            }
        }
        self.metrics.chunk_writes.inc_by(written);
        self.metrics.flushes.inc();
        let name = &self.config.log_name;
        self.store
            .put_many(
                Table::Meta,
                vec![(
                    keys::label_log_start(name),
                    Bytes::from(through.to_be_bytes().to_vec()),
                )],
            )
            .await?;
        for e in drop_epochs {
            self.store
                .delete_partition(Table::Rows, &keys::label_log_partition(name, *e))
                .await?;
        }
        self.labels.epoch_flushed(sealed.epoch);
        self.observe_pending();
        tracing::debug!(
            epoch = sealed.epoch,
            chunks = written,
            ms = started.elapsed().as_millis() as u64,
            "label writes flushed"
        );
        Ok(())
    }

    /// Flush what is pending now (one epoch). False if nothing was.
    pub async fn flush_once(&self, stopping: bool) -> Result<bool> {
        let Some(epoch) = self.labels.seal() else {
            return Ok(false);
        };
        // Writes of the epoch still in their group commit: wait for them;
        // one that failed has withdrawn its patches by then.
        self.labels.settle(epoch).await;
        let sealed = self.labels.sealed(epoch);
        self.flush_sealed(sealed, epoch + 1, &[epoch], stopping)
            .await?;
        Ok(true)
    }

    /// Replay this instance's label log (at start, before requests are
    /// served): every logged write is stored in its chunk, then the log is
    /// emptied. Returns the writes replayed.
    pub async fn recover(&self) -> Result<usize> {
        let name = self.config.log_name.clone();
        let start = self
            .store
            .get_many(Table::Meta, &[keys::label_log_start(&name)])
            .await?
            .remove(0)
            .and_then(|b| Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?)))
            .unwrap_or(0);
        let mut entries = Vec::new();
        for epoch in [start, start + 1] {
            let rows = Scan::partition(
                self.store.clone(),
                Table::Rows,
                keys::label_log_partition(&name, epoch),
                SortRange::all(),
            )
            .collect()
            .await?;
            for (sort, value) in rows {
                let entry = LogEntry::decode(&value).map_err(|e| ServiceError::Corrupt {
                    what: "label log entry",
                    key: format!("{name}/{epoch}/{}", hex(&sort.sort)),
                    reason: e.to_string(),
                })?;
                entries.push(entry);
            }
        }
        let n = entries.len();
        self.labels.set_epoch(start);
        for e in entries {
            let (Ok(dataset), Ok(channel)) = (
                DatasetName::parse(&e.dataset),
                ChannelName::parse(&e.channel_name),
            ) else {
                continue;
            };
            let names = ChannelNames { dataset, channel };
            let adds = e
                .chunks
                .into_iter()
                .map(|(code, p)| (code, p.label, Arc::from(labels::runs(&p.offsets))))
                .collect();
            // The buffer bound does not apply to what was acknowledged.
            let (ep, seq) = self.labels.add_unbounded(&names, e.channel, e.level, adds);
            self.labels.done(ep, seq, true);
        }
        let next = start + 2;
        match self.labels.seal().map(|e| self.labels.sealed(e)) {
            Some(sealed) => {
                self.flush_sealed(
                    sealed,
                    next,
                    &[start.saturating_sub(1), start, start + 1],
                    false,
                )
                .await?;
            }
            None => {
                self.store
                    .put_many(
                        Table::Meta,
                        vec![(
                            keys::label_log_start(&name),
                            Bytes::from(next.to_be_bytes().to_vec()),
                        )],
                    )
                    .await?;
            }
        }
        self.labels.set_epoch(next);
        if n > 0 {
            tracing::info!(writes = n, log = %name, "label log replayed");
        }
        Ok(n)
    }

    /// The flusher worker.
    #[must_use]
    pub fn flusher(self: &Arc<Self>) -> Flusher {
        Flusher(self.clone())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Stores pending label writes in their chunks, `flush_interval` after
/// they arrive (at once when a cutout write waits for them, or when
/// `flush_at_bytes` are pending); at shutdown it flushes everything.
pub struct Flusher(Arc<Objects>);

#[async_trait::async_trait]
impl Worker for Flusher {
    fn name(&self) -> String {
        "label-flusher".into()
    }

    async fn work(&mut self, stopping: bool) -> Result<WorkerState> {
        self.0.labels.urgent.store(false, Ordering::SeqCst);
        if stopping {
            // Everything acknowledged goes to its chunks before the store
            // is closed (what cannot be stored stays in the log).
            while self.0.flush_once(true).await? {}
        } else {
            self.0.flush_once(false).await?;
        }
        // The next flush waits for its interval (`wait_for_work`).
        Ok(WorkerState::Idle)
    }

    async fn wait_for_work(&mut self) {
        let c = &self.0.config;
        self.0
            .labels
            .until_flush_due(c.flush_interval, c.flush_max_delay, c.flush_at_bytes)
            .await;
    }

    fn queue_depth(&self) -> Option<u64> {
        Some(self.0.labels.chunks() as u64)
    }
}
