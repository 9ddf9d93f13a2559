//! Datasets and channels: validated, persisted in the `meta` table, cached
//! for a few seconds (so several server instances see each other's changes
//! quickly), created with compare-and-set so two creators never both win.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use neurocube_core::meta::{Channel, Dataset};
use neurocube_core::{ChannelName, DatasetName};
use neurocube_store::{Scan, SortRange, Store, Table};
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
    /// The dataset's name.
    pub dataset_name: DatasetName,
    /// The channel's name.
    pub channel_name: ChannelName,
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
    datasets: moka::sync::Cache<String, Arc<Dataset>>,
}

fn json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Every record of a meta partition, parsed.
async fn records<T: serde::de::DeserializeOwned>(
    store: &Arc<dyn Store>,
    partition: Vec<u8>,
    what: &'static str,
) -> Result<Vec<T>> {
    Scan::partition(store.clone(), Table::Meta, partition, SortRange::all())
        .rows()
        .map(|row| {
            let (k, v) = row?;
            serde_json::from_slice(&v)
                .map_err(|e| ServiceError::corrupt_json(what, String::from_utf8_lossy(&k.sort), &e))
        })
        .try_collect()
        .await
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
            datasets: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
        }
    }

    /// Create a dataset. Re-creating it with the same geometry is a no-op
    /// that changes nothing (the description and the datastack tables
    /// change with [`Catalog::update_dataset`]); another geometry is a
    /// conflict.
    pub async fn create_dataset(&self, ds: Dataset) -> Result<Created> {
        ds.validate()?;
        let key = keys::dataset(&ds.name);
        if self
            .store
            .compare_and_set(Table::Meta, key, None, Some(json(&ds)))
            .await?
        {
            return Ok(Created::New);
        }
        let name =
            DatasetName::parse(&ds.name).map_err(|e| ServiceError::field("name", e.to_string()))?;
        let existing = self.dataset(&name).await?;
        if existing.same_geometry(&ds) {
            Ok(Created::Unchanged)
        } else {
            Err(ServiceError::DatasetExists { name: ds.name })
        }
    }

    /// Change a dataset record with `edit` (compare-and-set on the stored
    /// record, so concurrent edits never undo each other); returns the
    /// record as stored. Other servers see it within their cache's 5 s.
    pub async fn update_dataset(
        &self,
        name: &DatasetName,
        edit: impl Fn(&mut Dataset),
    ) -> Result<Dataset> {
        let key = keys::dataset(name);
        for _ in 0..16 {
            let stored = self
                .store
                .get_many(Table::Meta, std::slice::from_ref(&key))
                .await?
                .remove(0)
                .ok_or_else(|| ServiceError::UnknownDataset {
                    name: name.to_string(),
                })?;
            let mut ds: Dataset = serde_json::from_slice(&stored)
                .map_err(|e| ServiceError::corrupt_json("dataset", name.as_str(), &e))?;
            edit(&mut ds);
            ds.validate()?;
            if self
                .store
                .compare_and_set(Table::Meta, key.clone(), Some(stored), Some(json(&ds)))
                .await?
            {
                self.datasets.invalidate(name.as_str());
                return Ok(ds);
            }
        }
        Err(ServiceError::Internal {
            during: "updating a dataset record",
            reason: "it changed under every one of 16 attempts".into(),
        })
    }

    /// A dataset by name (cached for a few seconds, like channels).
    pub async fn dataset(&self, name: &DatasetName) -> Result<Arc<Dataset>> {
        if let Some(hit) = self.datasets.get(name.as_str()) {
            return Ok(hit);
        }
        let got = self
            .store
            .get_many(Table::Meta, &[keys::dataset(name)])
            .await?
            .remove(0);
        let bytes = got.ok_or_else(|| ServiceError::UnknownDataset {
            name: name.to_string(),
        })?;
        let ds: Arc<Dataset> = serde_json::from_slice(&bytes)
            .map(Arc::new)
            .map_err(|e| ServiceError::corrupt_json("dataset", name.as_str(), &e))?;
        self.datasets.insert(name.to_string(), ds.clone());
        Ok(ds)
    }

    /// All datasets, by name.
    pub async fn datasets(&self) -> Result<Vec<Dataset>> {
        records(&self.store, keys::DATASETS.to_vec(), "dataset").await
    }

    /// Delete a dataset; with channels only if `recursive`. Returns the
    /// deleted channel records so their chunks can be purged.
    pub async fn delete_dataset(
        &self,
        name: &DatasetName,
        recursive: bool,
    ) -> Result<Vec<ChannelRecord>> {
        self.dataset(name).await?;
        let channels = self.channel_records(name).await?;
        if !channels.is_empty() && !recursive {
            return Err(ServiceError::DatasetNotEmpty {
                name: name.to_string(),
                channels: channels.iter().map(|c| c.meta.name.clone()).collect(),
            });
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
        self.datasets.invalidate(name.as_str());
        Ok(channels)
    }

    /// Create a channel; identical re-creation is a no-op, a different one a conflict.
    pub async fn create_channel(&self, dataset: &DatasetName, ch: Channel) -> Result<Created> {
        let ds = self.dataset(dataset).await?;
        ch.validate(&ds)?;
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
        let name =
            ChannelName::parse(&ch.name).map_err(|e| ServiceError::field("name", e.to_string()))?;
        let existing = self.channel(dataset, &name).await?;
        if existing.channel.meta == ch {
            Ok(Created::Unchanged)
        } else {
            Err(ServiceError::ChannelExists {
                dataset: dataset.to_string(),
                name: ch.name,
            })
        }
    }

    /// A channel and its dataset (cached for a few seconds).
    pub async fn channel(
        &self,
        dataset: &DatasetName,
        name: &ChannelName,
    ) -> Result<ResolvedChannel> {
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
        let bytes = got.ok_or_else(|| ServiceError::UnknownChannel {
            dataset: dataset.to_string(),
            name: name.to_string(),
        })?;
        let rec: ChannelRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ServiceError::corrupt_json("channel", format!("{dataset}/{name}"), &e))?;
        let resolved = ResolvedChannel {
            dataset_name: dataset.clone(),
            channel_name: name.clone(),
            dataset: ds,
            channel: Arc::new(rec),
        };
        self.channels.insert(cache_key, resolved.clone());
        Ok(resolved)
    }

    /// All channel records of a dataset.
    pub async fn channel_records(&self, dataset: &DatasetName) -> Result<Vec<ChannelRecord>> {
        records(&self.store, keys::channels_partition(dataset), "channel").await
    }

    /// Delete a channel's record; returns it so its chunks can be purged.
    pub async fn delete_channel(
        &self,
        dataset: &DatasetName,
        name: &ChannelName,
    ) -> Result<ChannelRecord> {
        let rc = self.channel(dataset, name).await?;
        self.store
            .delete_many(Table::Meta, &[keys::channel(dataset, name)])
            .await?;
        self.channels
            .invalidate(&(dataset.to_string(), name.to_string()));
        Ok((*rc.channel).clone())
    }
}
