//! neurocube's use cases, with no HTTP: the catalog of datasets and
//! channels, cutout reads and writes, slices, and the metrics they record.
//! One [`Services`] struct owns them; the server's handlers receive it.

use std::sync::Arc;

use neurocube_store::Store;

pub mod catalog;
pub mod demo;
pub mod encoding;
pub mod error;
pub mod jobs;
pub mod keys;
mod locks;
pub mod metrics;
pub mod pyramid;
pub mod slice;
pub mod tiles;
pub mod volume;

pub use error::{Result, ServiceError};

/// Settings of the service layer.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Largest cutout (decoded bytes) one request may read or write.
    pub max_cutout_bytes: u64,
    /// Tile cache and prefetching.
    pub tiles: tiles::TileConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_cutout_bytes: 1 << 30,
            tiles: tiles::TileConfig::default(),
        }
    }
}

/// Everything the handlers need.
pub struct Services {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Datasets and channels.
    pub catalog: Arc<catalog::Catalog>,
    /// Cutouts and slices.
    pub volumes: Arc<volume::Volumes>,
    /// Metrics registry and counters.
    pub metrics: metrics::Metrics,
    /// Encoded tiles, decoded chunks, prefetching.
    pub tiles: Arc<tiles::TileCache>,
    /// Background jobs (downsample, ingest, ...).
    pub jobs: Arc<jobs::Jobs>,
    /// The resolution pyramid: stale levels and downsampling.
    pub pyramid: Arc<pyramid::Pyramid>,
}

impl Services {
    /// Build the services over a store.
    #[must_use]
    pub fn new(config: &ServiceConfig, store: Arc<dyn Store>) -> Self {
        let metrics = metrics::Metrics::new();
        let catalog = Arc::new(catalog::Catalog::new(store.clone()));
        let volumes = Arc::new(volume::Volumes::new(
            store.clone(),
            catalog.clone(),
            metrics.clone(),
            config.max_cutout_bytes,
        ));
        let tiles = Arc::new(tiles::TileCache::new(
            &config.tiles,
            volumes.clone(),
            catalog.clone(),
            &metrics.registry,
        ));
        let jobs = Arc::new(jobs::Jobs::new(store.clone()));
        let pyramid = pyramid::Pyramid::install(
            store.clone(),
            catalog.clone(),
            volumes.clone(),
            jobs.clone(),
        );
        Self {
            store,
            catalog,
            volumes,
            metrics,
            tiles,
            jobs,
            pyramid,
        }
    }

    /// Delete a channel: its record now, its chunks in the background.
    pub async fn delete_channel(&self, dataset: &str, name: &str) -> Result<()> {
        let rc = self.catalog.channel(dataset, name).await?;
        self.catalog.delete_channel(dataset, name).await?;
        self.spawn_purge(rc);
        Ok(())
    }

    /// Delete a dataset (with its channels if `recursive`).
    pub async fn delete_dataset(&self, name: &str, recursive: bool) -> Result<()> {
        let ds = self.catalog.dataset(name).await?;
        for rec in self.catalog.delete_dataset(name, recursive).await? {
            self.spawn_purge(catalog::ResolvedChannel {
                dataset: ds.clone(),
                channel: Arc::new(rec),
            });
        }
        Ok(())
    }

    fn spawn_purge(&self, rc: catalog::ResolvedChannel) {
        let volumes = self.volumes.clone();
        tokio::spawn(async move {
            let name = format!("{}/{}", rc.dataset.name, rc.channel.meta.name);
            match volumes.purge(&rc).await {
                Ok(()) => tracing::info!(channel = %name, "purged chunks of deleted channel"),
                Err(e) => {
                    tracing::warn!(channel = %name, error = %e, "purging chunks of deleted channel failed; they are unreachable but use disk")
                }
            }
        });
    }
}
