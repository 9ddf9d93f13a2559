//! Datasets and channels: validated, persisted in the `meta` table, cached
//! for a few seconds (so several server instances see each other's changes
//! quickly), created with compare-and-set so two creators never both win.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use neurocube_core::meta::{Channel, Dataset};
use neurocube_store::{SortRange, Store, Table};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::keys;

/// A channel as stored: its metadata and the uid its chunks are keyed by.
/// A channel deleted and created again gets a new uid, so old chunks can
/// never reappear.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// User-visible metadata.
    #[serde(flatten)]
    pub meta: Channel,
    /// Key prefix of the channel's chunks.
    pub uid: u64,
}

/// A channel with its dataset, ready for cutouts.
#[derive(Clone, Debug)]
pub struct ResolvedChannel {
    /// The dataset.
    pub dataset: Arc<Dataset>,
    /// The channel.
    pub channel: Arc<ChannelRecord>,
}

/// Outcome of an idempotent create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// Newly stored.
    New,
    /// Already stored with identical metadata.
    Unchanged,
}

/// The catalog of datasets and channels.
pub struct Catalog {
    store: Arc<dyn Store>,
    channels: moka::sync::Cache<(String, String), ResolvedChannel>,
}

fn json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn corrupt(what: &str, e: &serde_json::Error) -> ServiceError {
    ServiceError::CorruptChunk {
        key: what.to_string(),
        reason: e.to_string(),
    }
}

impl Catalog {
    /// A catalog over a store.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            channels: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
        }
    }

    /// Create a dataset; identical re-creation is a no-op, a different one a conflict.
    pub async fn create_dataset(&self, ds: Dataset) -> Result<Created> {
        ds.validate().map_err(ServiceError::InvalidRequest)?;
        let key = keys::dataset(&ds.name);
        if self
            .store
            .compare_and_set(Table::Meta, key, None, Some(json(&ds)))
            .await?
        {
            return Ok(Created::New);
        }
        let existing = self.dataset(&ds.name).await?;
        if *existing == ds {
            Ok(Created::Unchanged)
        } else {
            Err(ServiceError::Conflict(format!(
                "dataset '{}' already exists with different metadata; DELETE /v1/datasets/{} first (this deletes its data) or use another name",
                ds.name, ds.name
            )))
        }
    }

    /// A dataset by name.
    pub async fn dataset(&self, name: &str) -> Result<Arc<Dataset>> {
        let got = self
            .store
            .get_many(Table::Meta, &[keys::dataset(name)])
            .await?
            .remove(0);
        let bytes = got.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "dataset '{name}' does not exist; GET /v1/datasets lists the datasets"
            ))
        })?;
        serde_json::from_slice(&bytes)
            .map(Arc::new)
            .map_err(|e| corrupt(&format!("dataset {name}"), &e))
    }

    /// All datasets, by name.
    pub async fn datasets(&self) -> Result<Vec<Dataset>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .store
                .scan(Table::Meta, keys::DATASETS, SortRange::all(), token, 1000)
                .await?;
            for (k, v) in page.rows {
                out.push(
                    serde_json::from_slice(&v)
                        .map_err(|e| corrupt(&String::from_utf8_lossy(&k.sort), &e))?,
                );
            }
            token = page.next;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Delete a dataset; with channels only if `recursive`. Returns the
    /// deleted channel records so their chunks can be purged.
    pub async fn delete_dataset(&self, name: &str, recursive: bool) -> Result<Vec<ChannelRecord>> {
        self.dataset(name).await?;
        let channels = self.channel_records(name).await?;
        if !channels.is_empty() && !recursive {
            let names: Vec<_> = channels.iter().map(|c| c.meta.name.as_str()).collect();
            return Err(ServiceError::Conflict(format!(
                "dataset '{name}' still has channels ({}); delete them first or add ?recursive=true",
                names.join(", ")
            )));
        }
        for c in &channels {
            self.store
                .delete_many(Table::Meta, &[keys::channel(name, &c.meta.name)])
                .await?;
            self.channels
                .invalidate(&(name.to_string(), c.meta.name.clone()));
        }
        self.store
            .delete_many(Table::Meta, &[keys::dataset(name)])
            .await?;
        Ok(channels)
    }

    /// Create a channel; identical re-creation is a no-op, a different one a conflict.
    pub async fn create_channel(&self, dataset: &str, ch: Channel) -> Result<Created> {
        let ds = self.dataset(dataset).await?;
        ch.validate(&ds).map_err(ServiceError::InvalidRequest)?;
        let uid = uuid::Uuid::new_v4().as_u64_pair().0;
        let rec = ChannelRecord {
            meta: ch.clone(),
            uid,
        };
        if self
            .store
            .compare_and_set(
                Table::Meta,
                keys::channel(dataset, &ch.name),
                None,
                Some(json(&rec)),
            )
            .await?
        {
            return Ok(Created::New);
        }
        let existing = self.channel(dataset, &ch.name).await?;
        if existing.channel.meta == ch {
            Ok(Created::Unchanged)
        } else {
            Err(ServiceError::Conflict(format!(
                "channel '{}' of dataset '{dataset}' already exists with different metadata; DELETE it first (this deletes its data) or use another name",
                ch.name
            )))
        }
    }

    /// A channel and its dataset (cached for a few seconds).
    pub async fn channel(&self, dataset: &str, name: &str) -> Result<ResolvedChannel> {
        let cache_key = (dataset.to_string(), name.to_string());
        if let Some(hit) = self.channels.get(&cache_key) {
            return Ok(hit);
        }
        let ds = self.dataset(dataset).await?;
        let got = self
            .store
            .get_many(Table::Meta, &[keys::channel(dataset, name)])
            .await?
            .remove(0);
        let bytes = got.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "channel '{name}' does not exist in dataset '{dataset}'; GET /v1/datasets/{dataset}/channels lists them"
            ))
        })?;
        let rec: ChannelRecord = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&format!("channel {dataset}/{name}"), &e))?;
        let resolved = ResolvedChannel {
            dataset: ds,
            channel: Arc::new(rec),
        };
        self.channels.insert(cache_key, resolved.clone());
        Ok(resolved)
    }

    /// All channel records of a dataset.
    pub async fn channel_records(&self, dataset: &str) -> Result<Vec<ChannelRecord>> {
        let mut out = Vec::new();
        let mut token = None;
        let partition = keys::channels_partition(dataset);
        loop {
            let page = self
                .store
                .scan(Table::Meta, &partition, SortRange::all(), token, 1000)
                .await?;
            for (k, v) in page.rows {
                out.push(
                    serde_json::from_slice(&v)
                        .map_err(|e| corrupt(&String::from_utf8_lossy(&k.sort), &e))?,
                );
            }
            token = page.next;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Delete a channel's record; returns it so its chunks can be purged.
    pub async fn delete_channel(&self, dataset: &str, name: &str) -> Result<ChannelRecord> {
        let rc = self.channel(dataset, name).await?;
        self.store
            .delete_many(Table::Meta, &[keys::channel(dataset, name)])
            .await?;
        self.channels
            .invalidate(&(dataset.to_string(), name.to_string()));
        Ok((*rc.channel).clone())
    }
}
