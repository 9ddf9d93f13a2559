//! neurocube's use cases, with no HTTP: the catalog of datasets and
//! channels, cutout reads and writes, slices, tiles, the resolution
//! pyramid, background jobs, and the metrics they record.
//!
//! One [`Services`] struct owns them. The server calls its use-case methods
//! (`usecases.rs`), each with the [`context::RequestContext`] of the
//! request; every background task is a [`background::Worker`] run by the
//! one [`background::BackgroundRunner`] that [`Services::start`] fills and
//! [`Services::shutdown`] drains.

use std::sync::Arc;
use std::time::Duration;

use neurocube_store::Store;

pub mod admission;
pub mod annotations;
pub mod auth;
pub mod background;
pub mod body;
pub mod boss;
pub mod catalog;
pub mod cave;
pub mod context;
pub mod demo;
pub mod encoding;
pub mod error;
pub mod graph;
pub mod jobs;
pub mod keys;
mod locks;
mod lowpri;
pub mod metrics;
pub mod objects;
pub mod precomputed;
pub mod precomputed_annotations;
mod precomputed_segments;
pub mod purge;
pub mod pyramid;
pub mod slice;
pub mod tiles;
mod usecases;
pub mod volume;

pub use context::{Access, RequestContext};
pub use error::{Result, ServiceError};
pub use usecases::{
    CaveAnswer, ChunksResponse, CutoutResponse, DatasetPatch, IdList, ObjectView, SliceResponse,
    SynapseQuery, TableView, VolumeBox, VoxelsBody, WhoAmI,
};

/// Settings of the service layer.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Cutout size and compare-and-set limits.
    pub volumes: volume::VolumeLimits,
    /// Decoded bytes that requests in flight may hold at once (beyond: 503).
    pub max_inflight_bytes: u64,
    /// Longest pause inside a request body before it is given up (408).
    pub body_idle_timeout: Duration,
    /// Tile cache and prefetching.
    pub tiles: tiles::TileConfig,
    /// Job workers.
    pub jobs: jobs::JobsConfig,
    /// Downsample written channels after this quiet time (`None`: only on request).
    pub auto_downsample: Option<Duration>,
    /// Threads of the background runner.
    pub background_threads: usize,
    /// The annotation store.
    pub annotations: annotations::AnnotationConfig,
    /// Largest upload of annotation rows, in bytes.
    pub max_upload_bytes: u64,
    /// Annotation objects and their label writes.
    pub objects: objects::ObjectsConfig,
    /// Access control and rate limits.
    pub auth: auth::AuthConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            volumes: volume::VolumeLimits::default(),
            max_inflight_bytes: 4 << 30,
            body_idle_timeout: Duration::from_secs(10),
            tiles: tiles::TileConfig::default(),
            jobs: jobs::JobsConfig::default(),
            auto_downsample: None,
            background_threads: 2,
            annotations: annotations::AnnotationConfig::default(),
            max_upload_bytes: 512 << 20,
            objects: objects::ObjectsConfig::default(),
            auth: auth::AuthConfig::default(),
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
    /// Annotation tables, rows, versions and queries.
    pub annotations: Arc<annotations::Annotations>,
    /// Annotation objects and their voxels (NeuroBlaze).
    pub objects: Arc<objects::Objects>,
    /// Chunks of deleted channels, removed in the background.
    pub purger: Arc<purge::Purger>,
    /// The in-flight byte budget of heavy requests.
    pub admission: admission::Admission,
    /// Who is asking, and what they may do.
    pub auth: auth::Auth,
    /// Every background worker.
    pub runner: background::BackgroundRunner,
    config: ServiceConfig,
}

impl Services {
    /// Build the services over a store, and wire them together: write
    /// listeners (tile invalidation, stale marks) and job kinds are
    /// registered here and nowhere else. Nothing runs in the background
    /// until [`Services::start`].
    #[must_use]
    pub fn new(config: &ServiceConfig, store: Arc<dyn Store>) -> Self {
        let metrics = metrics::Metrics::new();
        let catalog = Arc::new(catalog::Catalog::new(store.clone()));
        let labels = Arc::new(objects::pending::PendingLabels::new(
            config.objects.max_pending_bytes,
        ));
        let volumes = Arc::new(volume::Volumes::new(
            store.clone(),
            catalog.clone(),
            metrics.clone(),
            config.volumes,
            labels,
        ));
        let tiles = Arc::new(tiles::TileCache::new(
            &config.tiles,
            volumes.clone(),
            catalog.clone(),
            &metrics.registry,
        ));
        let jobs = Arc::new(jobs::Jobs::new(store.clone()));
        jobs.configure(config.jobs.clone());
        let pyramid = pyramid::Pyramid::new(
            store.clone(),
            catalog.clone(),
            volumes.clone(),
            jobs.clone(),
        );
        volumes.on_write(tiles.listener());
        volumes.on_write(pyramid.listener());
        jobs.register(pyramid::KIND, pyramid.job_handler());
        let purger = Arc::new(purge::Purger::new(store.clone()));
        let annotations = annotations::Annotations::new(
            store.clone(),
            catalog.clone(),
            tiles.clone(),
            jobs.clone(),
            purger.clone(),
            config.annotations,
            &metrics.registry,
        );
        jobs.register(annotations::versions::KIND, annotations.job_handler());
        let objects = Arc::new(objects::Objects::new(
            store.clone(),
            catalog.clone(),
            volumes.clone(),
            annotations.clone(),
            config.objects.clone(),
            &metrics.registry,
        ));
        let admission = admission::Admission::new(config.max_inflight_bytes, &metrics.registry);
        let runner =
            background::BackgroundRunner::new(config.background_threads, &metrics.registry);
        let auth = auth::Auth::new(store.clone(), config.auth.clone());
        Self {
            store,
            catalog,
            volumes,
            metrics,
            tiles,
            jobs,
            pyramid,
            annotations,
            objects,
            purger,
            admission,
            auth,
            runner,
            config: config.clone(),
        }
    }

    /// Longest pause inside a request body before it is given up.
    #[must_use]
    pub fn body_idle_timeout(&self) -> Duration {
        self.config.body_idle_timeout
    }

    /// Start the background workers: job workers, automatic downsampling,
    /// tile prefetchers, the purge of deleted channels and tables, and the
    /// retirement of expired versions.
    pub fn start(&self) {
        for n in 0..self.config.jobs.workers {
            self.runner
                .spawn(jobs::JobWorker::new(self.jobs.clone(), n));
        }
        if let Some(quiet) = self.config.auto_downsample
            && self.config.jobs.workers > 0
        {
            self.runner
                .spawn(pyramid::AutoDownsample::new(&self.pyramid, quiet));
        }
        for w in self.tiles.prefetch_workers() {
            self.runner.spawn(w);
        }
        self.runner.spawn(self.purger.worker());
        self.runner
            .spawn(annotations::retire::Retirer::new(&self.annotations));
        self.runner.spawn(self.annotations.writer.worker());
        self.runner.spawn(self.objects.flusher());
    }

    /// Bring back what a previous run acknowledged but had not finished
    /// storing (the label log), before requests are served.
    pub async fn recover(&self) -> Result<()> {
        self.objects.recover().await.map(|_| ())
    }

    /// Stop the background workers (letting queued work drain for at most
    /// `grace`) and make everything written durable. Returns whether every
    /// worker finished in time.
    pub async fn shutdown(&self, grace: Duration) -> Result<bool> {
        let finished = self.runner.shutdown(grace).await;
        self.store.flush().await?;
        Ok(finished)
    }

    /// Allow `ctx` to do `access`, or say why not: the one check every
    /// request passes before its use case runs.
    pub async fn authorize(&self, ctx: &RequestContext, access: &Access) -> Result<()> {
        self.auth.check(ctx, access).await
    }
}
