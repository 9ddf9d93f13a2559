//! Prometheus metrics of the service layer, in a registry the server extends
//! with its HTTP metrics and renders at `/metrics`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// Counters and histograms of chunk and store work.
#[derive(Clone)]
pub struct Metrics {
    /// The registry everything is registered in.
    pub registry: Registry,
    /// Chunks read from the store (present or absent).
    pub chunk_reads: IntCounter,
    /// Chunks written (put or CAS) to the store.
    pub chunk_writes: IntCounter,
    /// Chunks deleted because they became all zero.
    pub chunk_deletes: IntCounter,
    /// Compare-and-set conflicts retried (another writer got there first).
    pub cas_retries: IntCounter,
    /// Store call latency by operation.
    pub store_seconds: HistogramVec,
    /// Voxel bytes of cutouts served and accepted, by direction.
    pub cutout_bytes: IntCounterVec,
    /// Time to assemble a cutout (store + decode + copy).
    pub cutout_seconds: Histogram,
}

impl Metrics {
    /// Fresh metrics in a new registry.
    ///
    /// # Panics
    /// Never in practice: names are static and unique.
    #[must_use]
    #[allow(clippy::expect_used)] // startup: static metric names
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let chunk_reads = counter("neurocube_chunk_reads_total", "Chunks read from the store");
        let chunk_writes = counter(
            "neurocube_chunk_writes_total",
            "Chunks written to the store",
        );
        let chunk_deletes = counter(
            "neurocube_chunk_deletes_total",
            "Chunks deleted because all voxels became zero",
        );
        let cas_retries = counter(
            "neurocube_chunk_cas_retries_total",
            "Partial-chunk writes retried after a compare-and-set conflict",
        );
        let buckets = vec![
            0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
        ];
        let store_seconds = HistogramVec::new(
            HistogramOpts::new("neurocube_store_seconds", "Store call latency")
                .buckets(buckets.clone()),
            &["op"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(store_seconds.clone()))
            .expect("unique metric");
        let cutout_bytes = IntCounterVec::new(
            Opts::new("neurocube_cutout_bytes_total", "Voxel bytes of cutouts"),
            &["direction"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(cutout_bytes.clone()))
            .expect("unique metric");
        let cutout_seconds = Histogram::with_opts(
            HistogramOpts::new("neurocube_cutout_seconds", "Cutout assembly time").buckets(buckets),
        )
        .expect("valid metric");
        registry
            .register(Box::new(cutout_seconds.clone()))
            .expect("unique metric");
        Self {
            registry,
            chunk_reads,
            chunk_writes,
            chunk_deletes,
            cas_retries,
            store_seconds,
            cutout_bytes,
            cutout_seconds,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
