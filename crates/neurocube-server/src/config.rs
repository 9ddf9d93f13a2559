//! Layered settings: the built-in `config/default.toml`, then an optional
//! file, then `NEUROCUBE__SECTION__KEY` environment variables.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// All settings.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// HTTP listener.
    pub server: ServerSettings,
    /// Storage backend.
    pub store: StoreSettings,
    /// Request limits.
    pub limits: LimitSettings,
    /// Logging.
    pub log: LogSettings,
    /// Tile cache and prefetching.
    pub tiles: TileSettings,
    /// Background jobs (downsampling).
    pub jobs: JobSettings,
    /// The annotation store.
    pub annotations: AnnotationSettings,
    /// Annotation objects and their label writes.
    pub objects: ObjectSettings,
    /// Access control.
    pub auth: AuthSettings,
}

/// Access control (`[auth]`).
#[derive(Clone, Debug, Deserialize)]
pub struct AuthSettings {
    /// `open` (everyone may do everything) or `tokens`.
    pub mode: String,
    /// Who may read `/metrics` in token mode: `public`, `authenticated` or `admin`.
    pub metrics: String,
    /// Requests per second of each user (anonymous clients: each address); 0: no limit.
    pub rate_limit_per_second: f64,
    /// Requests a client may send at once above its rate.
    pub rate_limit_burst: u32,
}

/// Annotation objects and NeuroBlaze (`[objects]`).
#[derive(Clone, Debug, Deserialize)]
pub struct ObjectSettings {
    /// Bytes of label writes waiting for the flusher at most (beyond: 503).
    pub max_pending_bytes: usize,
    /// Milliseconds between the first pending label write and its flush.
    pub flush_interval_ms: u64,
    /// Pending bytes that start a flush at once (0: half of
    /// `max_pending_bytes`).
    pub flush_at_bytes: usize,
    /// While writes keep coming, a flush waits for a pause at most this
    /// many milliseconds after the first pending write.
    pub flush_max_delay_ms: u64,
    /// Chunks the flusher stores at once.
    pub flush_parallel: usize,
    /// This instance's label log name; empty: `local` on the embedded
    /// store, host name and port on Cassandra.
    pub log_name: String,
    /// Voxels one request may label at most.
    pub max_voxels: u64,
}

/// The annotation store (`[annotations]`).
#[derive(Clone, Debug, Deserialize)]
pub struct AnnotationSettings {
    /// Rows waiting for the batch writer at most (beyond: 503).
    pub queue_rows: usize,
    /// Rows per group commit at most.
    pub batch_rows: usize,
    /// Largest upload of rows, in bytes.
    pub max_upload_bytes: u64,
    /// Largest `limit` whose result is gathered to give a next-page token.
    pub max_paged_limit: u64,
    /// Most nodes a connectivity PNG may draw.
    pub max_graph_png_nodes: usize,
    /// Most rows one step of a query gathers (bounds memory on hub neurons).
    pub query_batch_rows: usize,
    /// A version also stores in columns the rows of each root id with at
    /// least this many (0: never).
    pub pack_min_rows: usize,
    /// Uploads of at least this many rows write their index entries by
    /// ingestion on the embedded store (0: never).
    pub ingest_min_rows: usize,
}

/// HTTP listener.
#[derive(Clone, Debug, Deserialize)]
pub struct ServerSettings {
    /// Bind address.
    pub host: String,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// On SIGTERM, how long in-flight requests and queued background work
    /// may take to finish before the server exits anyway.
    pub shutdown_grace_secs: u64,
    /// Longest a request may run (0: no limit); long reads stop past it.
    pub request_timeout_secs: u64,
    /// Threads of the background runner (jobs, prefetch, purge).
    pub background_threads: usize,
}

/// Storage backend.
#[derive(Clone, Debug, Deserialize)]
pub struct StoreSettings {
    /// `embedded` or `cassandra://host1,host2/keyspace`.
    pub uri: String,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Embedded block cache in bytes.
    pub cache_bytes: u64,
    /// Embedded engine threads that flush and compact.
    pub engine_threads: usize,
    /// `fsync` or `flush`.
    pub durability: String,
    /// Settings of a `cassandra://` store.
    pub cassandra: CassandraSettings,
}

/// Settings of the Cassandra/ScyllaDB store (`[store.cassandra]`).
#[derive(Clone, Debug, Deserialize)]
pub struct CassandraSettings {
    /// Replication map of the keyspace, in CQL.
    pub replication: String,
    /// Consistency of reads (`LOCAL_QUORUM`, `ONE`, ...).
    pub read_consistency: String,
    /// Consistency of writes.
    pub write_consistency: String,
    /// Paxos consistency of compare-and-set (`LOCAL_SERIAL` or `SERIAL`).
    pub serial_consistency: String,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Timeout of one connection attempt, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout of one request, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long to retry at start while no node answers, in seconds.
    pub startup_deadline_secs: u64,
}

/// Request limits.
#[derive(Clone, Debug, Deserialize)]
pub struct LimitSettings {
    /// Largest cutout in decoded bytes.
    pub max_cutout_bytes: u64,
    /// Decoded bytes all requests in flight may hold; beyond it, 503.
    pub max_inflight_bytes: u64,
    /// Compare-and-set attempts on one chunk before a write gives up with 503.
    pub max_cas_attempts: u32,
    /// Longest pause inside a request body before it is given up (408).
    pub body_idle_timeout_secs: u64,
    /// Largest request line and headers, in bytes (beyond: 431).
    pub max_header_bytes: usize,
    /// Longest a client may take to send the request line and headers
    /// (beyond: 408 and the connection is closed).
    pub head_timeout_secs: u64,
}

/// Logging.
#[derive(Clone, Debug, Deserialize)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// tracing filter.
    pub level: String,
}

/// Tile cache and prefetching.
#[derive(Clone, Debug, Deserialize)]
pub struct TileSettings {
    /// Budget of encoded tiles, in bytes.
    pub cache_bytes: u64,
    /// Budget of decoded chunks, in bytes.
    pub chunk_cache_bytes: u64,
    /// Render predicted tiles ahead of requests.
    pub prefetch: bool,
    /// Most predictions waiting at once.
    pub prefetch_queue: usize,
    /// Background prefetch threads.
    pub prefetch_workers: usize,
    /// Seconds a tile or decoded chunk is served from memory: unset means
    /// never expire on the embedded store (one server owns it) and 30 s on
    /// Cassandra (other servers' writes are seen within it); 0 never.
    pub max_age_secs: Option<u64>,
}

/// Background jobs.
#[derive(Clone, Debug, Deserialize)]
pub struct JobSettings {
    /// Job worker tasks in this server; 0 runs no jobs here.
    pub workers: usize,
    /// Downsample written channels automatically (else only on request).
    pub auto_downsample: bool,
    /// Quiet time after a channel's last write before it is downsampled automatically.
    pub auto_delay_ms: u64,
    /// How long a claimed task stays reserved to a worker that stopped answering.
    pub lease_seconds: u64,
    /// Pause after each task, leaving the store to interactive requests.
    pub pause_ms: u64,
}

const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// Settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(#[from] config::ConfigError);

impl Settings {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut b = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(f) = file {
            b = b.add_source(config::File::from(f).required(true));
        }
        b = b.add_source(
            config::Environment::with_prefix("NEUROCUBE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        Ok(b.build()?.try_deserialize()?)
    }

    /// Built-in defaults only (tests start from these).
    ///
    /// # Panics
    /// Never: the defaults are compiled in and tested.
    #[must_use]
    #[allow(clippy::expect_used)] // startup: compiled-in defaults, tested below
    pub fn defaults() -> Self {
        config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .expect("built-in defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let s = Settings::defaults();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.limits.max_cutout_bytes, 1 << 30);
        assert_eq!(s.store.uri, "embedded");
    }
}
