//! What is deleted, removed in the background: the chunks of deleted
//! channels, and the rows of deleted annotation tables and of retired
//! table versions.
//!
//! Deleting a
//! channel first stores a purge entry (`purge/{uid}` in the meta table,
//! with the geometry needed to find its chunks), then deletes the channel
//! record, and wakes the purge worker. The worker deletes the chunks and
//! stale marks of every level and then the entry, so a purge cut off by a
//! restart is resumed, never forgotten. An entry whose channel record still
//! exists with the same uid (a delete that has not finished or failed) is
//! left alone.
//!
//! Rows are queued the same way, under `purge-rows/{prefix}`: a table's
//! uid (its live rows, versions, indexes and object chunk lists, queued
//! before its record is deleted, and left alone while a record with that
//! uid exists), or a uid and a version (one version's copy and indexes,
//! queued when the version expires or fails).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use neurocube_core::meta::Dataset;
use neurocube_store::{Scan, SortRange, Store, Table};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::annotations::tables::TableRecord;
use crate::background::{Worker, WorkerState};
use crate::catalog::ChannelRecord;
use crate::error::{Result, ServiceError};
use crate::keys;

/// A deleted channel whose chunks remain.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    dataset: Dataset,
    channel: ChannelRecord,
}

/// Rows under a key prefix, to be deleted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowsEntry {
    /// What they were (for the log).
    pub what: String,
    /// For a deleted table: its dataset, name and uid (a record still there
    /// with that uid, a delete that has not finished, keeps the rows).
    #[serde(default)]
    pub table: Option<(String, String, u64)>,
}

/// How often the worker looks for entries it was not woken for (left by
/// another server instance, or kept because a delete was unfinished).
const RESCAN: Duration = Duration::from_secs(60);

/// Partition keys listed per store call while purging.
const PARTITIONS_PAGE: usize = 1000;

/// The purge queue.
pub struct Purger {
    store: Arc<dyn Store>,
    wake: Notify,
}

impl Purger {
    /// A purge queue over a store.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            wake: Notify::new(),
        }
    }

    /// Record that a channel is being deleted (before its record goes).
    pub async fn enqueue(&self, dataset: &Dataset, channel: &ChannelRecord) -> Result<()> {
        let entry = Entry {
            dataset: dataset.clone(),
            channel: channel.clone(),
        };
        let value = serde_json::to_vec(&entry).map_err(|e| ServiceError::Internal {
            during: "recording a purge",
            reason: e.to_string(),
        })?;
        self.store
            .put_many(
                Table::Meta,
                vec![(keys::purge(channel.uid), Bytes::from(value))],
            )
            .await?;
        Ok(())
    }

    /// Record that the rows under `prefix` (a table uid, or a uid and a
    /// version: [`keys::version_prefix`]) are to be deleted.
    pub async fn enqueue_rows(&self, prefix: &[u8], entry: &RowsEntry) -> Result<()> {
        let value = serde_json::to_vec(entry).map_err(|e| ServiceError::Internal {
            during: "recording a purge",
            reason: e.to_string(),
        })?;
        self.store
            .put_many(
                Table::Meta,
                vec![(keys::purge_rows(prefix), Bytes::from(value))],
            )
            .await?;
        Ok(())
    }

    /// Empty the queue now (what the worker does, one entry a step);
    /// returns the entries purged.
    pub async fn purge_all(&self) -> Result<u64> {
        let mut n = 0;
        while self.purge_next().await? {
            n += 1;
        }
        Ok(n)
    }

    /// Start working on the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Entries waiting.
    pub async fn pending(&self) -> Result<u64> {
        let mut n = 0;
        for queue in [keys::PURGE, keys::PURGE_ROWS] {
            n += Scan::partition(
                self.store.clone(),
                Table::Meta,
                queue.to_vec(),
                SortRange::all(),
            )
            .count(u64::MAX)
            .await?;
        }
        Ok(n)
    }

    /// Purge one entry if its channel is really gone; returns whether one was purged.
    async fn purge_next(&self) -> Result<bool> {
        let entries = self.entries::<Entry>(keys::PURGE);
        futures::pin_mut!(entries);
        while let Some((key, entry)) = entries.try_next().await? {
            if self.still_exists(&entry).await? {
                continue;
            }
            self.purge(&entry).await?;
            self.store.delete_many(Table::Meta, &[key]).await?;
            tracing::info!(
                channel = %format!("{}/{}", entry.dataset.name, entry.channel.meta.name),
                "purged the chunks of a deleted channel"
            );
            return Ok(true);
        }
        self.purge_next_rows().await
    }

    /// Purge one queued set of rows; returns whether one was purged.
    async fn purge_next_rows(&self) -> Result<bool> {
        let entries = self.entries::<RowsEntry>(keys::PURGE_ROWS);
        futures::pin_mut!(entries);
        while let Some((key, entry)) = entries.try_next().await? {
            if let Some((ds, name, uid)) = &entry.table
                && self.table_exists(ds, name, *uid).await?
            {
                continue;
            }
            let prefix = key.sort.clone();
            self.delete_partitions(Table::Rows, &prefix, keys::ROWS_PARTITION_LEN)
                .await?;
            self.delete_partitions(Table::RowIndex, &prefix, keys::INDEX_PARTITION_LEN)
                .await?;
            if let Ok(uid) = <[u8; 8]>::try_from(prefix.as_ref()) {
                // A whole table: its object chunk lists and counters too.
                let uid = u64::from_be_bytes(uid);
                let (objects, len) = keys::object_chunks_prefix(uid);
                self.delete_partitions(Table::RowIndex, &objects, len)
                    .await?;
                self.store
                    .delete_partition(Table::Meta, &keys::table_counts_partition(uid))
                    .await?;
                self.store
                    .delete_many(Table::Meta, &[keys::table_ids(uid)])
                    .await?;
            }
            self.store.delete_many(Table::Meta, &[key]).await?;
            tracing::info!(what = %entry.what, "purged rows");
            return Ok(true);
        }
        Ok(false)
    }

    /// The entries of a purge queue, parsed, in key order.
    fn entries<T: serde::de::DeserializeOwned>(
        &self,
        queue: &[u8],
    ) -> impl futures::Stream<Item = Result<(neurocube_store::Key, T)>> + use<T> {
        Scan::partition(
            self.store.clone(),
            Table::Meta,
            queue.to_vec(),
            SortRange::all(),
        )
        .rows()
        .map(|row| {
            let (key, value) = row?;
            let entry = serde_json::from_slice(&value).map_err(|e| {
                let name =
                    std::str::from_utf8(&key.sort).map_or_else(|_| hex(&key.sort), str::to_string);
                ServiceError::corrupt_json("purge entry", name, &e)
            })?;
            Ok((key, entry))
        })
    }

    async fn table_exists(&self, ds: &str, name: &str, uid: u64) -> Result<bool> {
        let got = self
            .store
            .get_many(Table::Meta, &[keys::table(ds, name)])
            .await?
            .remove(0);
        Ok(got
            .is_some_and(|v| serde_json::from_slice::<TableRecord>(&v).is_ok_and(|r| r.uid == uid)))
    }

    /// Delete every partition of `table` whose key is `len` bytes long and
    /// begins with `prefix` (listed from the store, so the cost is what was
    /// written).
    async fn delete_partitions(&self, table: Table, prefix: &[u8], len: usize) -> Result<()> {
        let mut page = None;
        loop {
            let parts = self
                .store
                .partitions(table, prefix, len, page, PARTITIONS_PAGE)
                .await?;
            for p in &parts.keys {
                self.store.delete_partition(table, p).await?;
            }
            match parts.next {
                Some(t) => page = Some(t),
                None => return Ok(()),
            }
        }
    }

    async fn still_exists(&self, e: &Entry) -> Result<bool> {
        let got = self
            .store
            .get_many(
                Table::Meta,
                &[keys::channel(&e.dataset.name, &e.channel.meta.name)],
            )
            .await?
            .remove(0);
        Ok(match got {
            Some(v) => serde_json::from_slice::<ChannelRecord>(&v)
                .map(|r| r.uid == e.channel.uid)
                .unwrap_or(false),
            None => false,
        })
    }

    /// Delete every chunk and stale mark of a channel at every level: the
    /// chunk partitions that exist (listed from the store, so the cost is
    /// what was written, never the size of the channel's grid).
    async fn purge(&self, e: &Entry) -> Result<()> {
        let (ds, uid) = (&e.dataset, e.channel.uid);
        self.delete_partitions(Table::Chunks, &uid.to_be_bytes(), keys::CHUNK_PARTITION_LEN)
            .await?;
        for level in ds.all_levels() {
            for shard in 0..keys::STALE_SHARDS {
                let index = keys::stale_index_partition(uid, level.level, shard);
                let blocks = Scan::partition(
                    self.store.clone(),
                    Table::Meta,
                    index.clone(),
                    SortRange::all(),
                )
                .collect()
                .await?;
                for (k, _) in blocks {
                    if let Some(block) = keys::morton_of(&k.sort) {
                        let p = keys::stale_partition(uid, level.level, block);
                        self.store.delete_partition(Table::Meta, &p).await?;
                    }
                }
                self.store.delete_partition(Table::Meta, &index).await?;
            }
        }
        self.store
            .delete_many(Table::Meta, &[keys::dirty(uid)])
            .await?;
        Ok(())
    }

    /// The worker that empties the queue.
    #[must_use]
    pub fn worker(self: &Arc<Self>) -> PurgeWorker {
        PurgeWorker(self.clone())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Purges deleted channels and rows, one entry per step.
pub struct PurgeWorker(Arc<Purger>);

#[async_trait::async_trait]
impl Worker for PurgeWorker {
    fn name(&self) -> String {
        "purge".into()
    }

    async fn work(&mut self, stopping: bool) -> Result<WorkerState> {
        if stopping {
            // Entries are in the store: the next start resumes them.
            return Ok(WorkerState::Done);
        }
        Ok(if self.0.purge_next().await? {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        })
    }

    async fn wait_for_work(&mut self) {
        tokio::select! {
            () = self.0.wake.notified() => {}
            () = tokio::time::sleep(RESCAN) => {}
        }
    }
}
