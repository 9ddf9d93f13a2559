//! Errors of the use cases. Each variant carries the facts of the failure
//! as fields; `Display` turns them into a sentence that says what was wrong
//! and what to do, and [`ServiceError::fields`] gives them to clients as
//! JSON. The server maps every variant to a status in one exhaustive table
//! (`neurocube-server/src/error.rs`); the enum is deliberately not
//! `#[non_exhaustive]`, so a new variant does not compile until it is mapped.

use std::time::Duration;

use neurocube_core::Box3;
use neurocube_store::StoreError;
use serde_json::{Value, json};

mod fields;

/// A failed use case.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such dataset (404).
    #[error("dataset '{name}' does not exist; GET /v1/datasets lists the datasets")]
    UnknownDataset {
        /// The name asked for.
        name: String,
    },
    /// No such channel (404).
    #[error(
        "channel '{name}' does not exist in dataset '{dataset}'; GET /v1/datasets/{dataset}/channels lists them"
    )]
    UnknownChannel {
        /// Its dataset.
        dataset: String,
        /// The name asked for.
        name: String,
    },
    /// No such resolution level (404).
    #[error("level {level} does not exist: dataset '{dataset}' has levels 0 to {last}")]
    UnknownLevel {
        /// The dataset.
        dataset: String,
        /// The level asked for.
        level: u8,
        /// Its last level.
        last: u8,
    },
    /// No such job (404).
    #[error("job '{id}' does not exist; GET /v1/jobs lists the jobs")]
    UnknownJob {
        /// The id asked for.
        id: String,
    },
    /// No such task of a job (404).
    #[error("job '{job}' has no task '{task}'")]
    UnknownTask {
        /// The job.
        job: String,
        /// The task asked for.
        task: String,
    },
    /// No such precomputed scale (404: clients probe optional files such as
    /// `provenance` under the volume's path and take 404 as "none").
    #[error("scale '{key}' is not one of this channel's: {keys}")]
    UnknownScale {
        /// The key asked for.
        key: String,
        /// The channel's keys.
        keys: String,
    },
    /// No such BOSS experiment (404).
    #[error(
        "experiment '{name}' does not exist in collection '{collection}': a neurocube dataset is a BOSS collection with one experiment, 'default'"
    )]
    UnknownExperiment {
        /// The collection (dataset).
        collection: String,
        /// The name asked for.
        name: String,
    },
    /// No such user (404).
    #[error("user '{name}' does not exist; GET /v1/auth/users lists the users")]
    UnknownUser {
        /// The name asked for.
        name: String,
    },
    /// No such token, or not one of the caller's (404).
    #[error("token '{id}' does not exist (or is not yours); GET /v1/auth/tokens lists your tokens")]
    UnknownToken {
        /// The id asked for.
        id: String,
    },
    /// No such annotation table (404).
    #[error(
        "table '{name}' does not exist in dataset '{dataset}'; GET /v1/datasets/{dataset}/tables lists them"
    )]
    UnknownTable {
        /// Its dataset.
        dataset: String,
        /// The name asked for.
        name: String,
    },
    /// No such row (404).
    #[error("table '{table}' has no row {id}")]
    UnknownRow {
        /// The table.
        table: String,
        /// The id asked for.
        id: u64,
    },
    /// No such materialized version (404).
    #[error(
        "version {version} of dataset '{dataset}' does not exist; GET /v1/datasets/{dataset}/versions lists them"
    )]
    UnknownVersion {
        /// The dataset.
        dataset: String,
        /// The version asked for.
        version: u32,
    },
    /// A table that a version does not hold (404).
    #[error(
        "version {version} of dataset '{dataset}' has no table '{table}' (it was made before the table, or the table was made again since); query live rows with a timestamp, or a newer version"
    )]
    TableNotInVersion {
        /// The dataset.
        dataset: String,
        /// The table.
        table: String,
        /// The version.
        version: u32,
    },
    /// A version past its expiry (410).
    #[error(
        "version {version} of dataset '{dataset}' has expired; use a newer version (GET /v1/datasets/{dataset}/versions) or a timestamp"
    )]
    VersionExpired {
        /// The dataset.
        dataset: String,
        /// The version.
        version: u32,
    },
    /// A version not (yet) usable (409).
    #[error(
        "version {version} of dataset '{dataset}' is {status} (job {job}); wait for it, or use another version"
    )]
    VersionNotReady {
        /// The dataset.
        dataset: String,
        /// The version.
        version: u32,
        /// `materializing` or `failed`.
        status: &'static str,
        /// The job making it.
        job: String,
    },
    /// An uploaded row that does not fit the schema (422): nothing of the
    /// upload was written.
    #[error(
        "row {row}{}: {reason}; nothing of this upload was written",
        if column.is_empty() { String::new() } else { format!(", column '{column}'") }
    )]
    InvalidRow {
        /// Index of the row in the upload (from 0).
        row: usize,
        /// The column at fault (empty: the row as a whole).
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A slice coordinate outside the level (404: that tile does not exist).
    #[error(
        "slice {axis}={slice} is outside level {level} of dataset '{dataset}', which spans {axis} {start}..{end}"
    )]
    SliceOutsideLevel {
        /// The dataset.
        dataset: String,
        /// The level.
        level: u8,
        /// Axis across the plane.
        axis: &'static str,
        /// The slice asked for.
        slice: u64,
        /// First slice of the level.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// A tile row or column outside the level (404).
    #[error(
        "tile row {row}, column {col} is outside level {level} of dataset '{dataset}': it has {rows} rows and {cols} columns of {size}-pixel {plane} tiles"
    )]
    TileOutsideLevel {
        /// The dataset.
        dataset: String,
        /// The level.
        level: u8,
        /// Plane of the tiles.
        plane: &'static str,
        /// Tile edge in pixels.
        size: u32,
        /// Row asked for.
        row: u64,
        /// Column asked for.
        col: u64,
        /// Rows of the level.
        rows: u64,
        /// Columns of the level.
        cols: u64,
    },
    /// A box not inside the level (400).
    #[error("box {bbox} is outside level {level} of dataset '{dataset}', which spans {bounds}")]
    BoxOutsideLevel {
        /// The dataset.
        dataset: String,
        /// The level.
        level: u8,
        /// The box asked for.
        bbox: Box3,
        /// The level's voxels.
        bounds: Box3,
    },
    /// A box with an empty or inverted range (400).
    #[error("{reason}")]
    InvalidBox {
        /// What is wrong with it.
        reason: String,
    },
    /// A field of a request is invalid (400); `reason` is a sentence with the fix.
    #[error("{reason}")]
    InvalidField {
        /// The field (JSON key or query parameter).
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A request body does not fit what it is sent to (400).
    #[error("{reason}")]
    InvalidBody {
        /// Wire format of the body (`npy`, `raw`, `blosc`, `json`, ...).
        format: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A dataset of that name exists with other metadata (409).
    #[error(
        "dataset '{name}' already exists with different metadata (its geometry: voxel_size, extent, offset, levels, scaling); DELETE /v1/datasets/{name} first (this deletes its data) or use another name"
    )]
    DatasetExists {
        /// The name.
        name: String,
    },
    /// A channel of that name exists with other metadata (409).
    #[error(
        "channel '{name}' of dataset '{dataset}' already exists with different metadata; DELETE it first (this deletes its data) or use another name"
    )]
    ChannelExists {
        /// The dataset.
        dataset: String,
        /// The name.
        name: String,
    },
    /// A dataset that still has channels cannot be deleted plainly (409).
    #[error(
        "dataset '{name}' still has channels ({}); delete them first or add ?recursive=true",
        channels.join(", ")
    )]
    DatasetNotEmpty {
        /// The dataset.
        name: String,
        /// Its channels.
        channels: Vec<String>,
    },
    /// A table of that name exists with another declaration (409).
    #[error(
        "table '{name}' of dataset '{dataset}' already exists with a different declaration; DELETE it first (this drops its rows) or use another name"
    )]
    TableExists {
        /// The dataset.
        dataset: String,
        /// The name.
        name: String,
    },
    /// A table reference tables point into cannot be deleted (409).
    #[error(
        "table '{name}' of dataset '{dataset}' is the target of reference tables ({}); delete them first",
        referrers.join(", ")
    )]
    TableReferenced {
        /// The dataset.
        dataset: String,
        /// The table.
        name: String,
        /// The reference tables.
        referrers: Vec<String>,
    },
    /// A table was made again while a version of it was being made (409).
    #[error(
        "table '{table}' of dataset '{dataset}' was deleted and made again while version {version} was being made"
    )]
    TableReplaced {
        /// The dataset.
        dataset: String,
        /// The table.
        table: String,
        /// The version.
        version: u32,
    },
    /// A row that was already deleted or superseded (409).
    #[error(
        "row {id} of table '{table}' is no longer valid{}; update or delete the row that replaced it",
        superceded_id.map_or_else(String::new, |s| format!(" (superseded by row {s})"))
    )]
    RowNotValid {
        /// The table.
        table: String,
        /// The row.
        id: u64,
        /// The row that replaced it, if one did.
        superceded_id: Option<u64>,
    },
    /// A label write with `conflict=exception` would take voxels of
    /// another object (409); nothing was written.
    #[error(
        "voxel {voxel:?} already belongs to object {other}, and {count} voxel(s) of object {id} would take another object's; nothing was written: use conflict=preserve to keep their labels or conflict=overwrite to replace them"
    )]
    LabelConflict {
        /// The object written.
        id: u64,
        /// The first other object met.
        other: u64,
        /// Its voxel, `[x, y, z]`.
        voxel: [u64; 3],
        /// Voxels in conflict.
        count: u64,
    },
    /// A job that ended cannot take more work (409).
    #[error("job '{id}' is {state}; start a new one")]
    JobEnded {
        /// The job.
        id: String,
        /// Its final state.
        state: String,
    },
    /// The channel a job works on was deleted and created again (409).
    #[error("channel {dataset}/{channel} was deleted and created again since job {job} started")]
    ChannelReplaced {
        /// The dataset.
        dataset: String,
        /// The channel.
        channel: String,
        /// The job.
        job: String,
    },
    /// Something is larger than a limit (413).
    #[error(
        "the {what} is {}, over the limit of {limit} bytes ({limit_source}); {advice}",
        bytes.map_or_else(|| "more than 2^64 bytes".to_string(), |b| format!("{b} bytes"))
    )]
    TooLarge {
        /// What is too large (`cutout`, `request body`, ...).
        what: &'static str,
        /// Its size (`None`: it does not even fit in 64 bits).
        bytes: Option<u64>,
        /// The limit.
        limit: u64,
        /// Where the limit comes from (a server setting, the box).
        limit_source: String,
        /// What to do instead.
        advice: &'static str,
    },
    /// The server is at a configured bound; retry later (503 with Retry-After).
    #[error(
        "the server is busy: {resource} is at its limit of {limit} (server setting {setting}); retry in {} s",
        retry_after.as_secs().max(1)
    )]
    Overloaded {
        /// What is exhausted.
        resource: &'static str,
        /// The bound.
        limit: u64,
        /// The setting that sets it.
        setting: &'static str,
        /// When to retry.
        retry_after: Duration,
    },
    /// Concurrent writers kept changing what this request works on (503).
    #[error("{what} kept changing while this request worked on it ({attempts} attempts); retry")]
    Contended {
        /// What changed.
        what: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The request ran past its deadline (503).
    #[error(
        "the request ran longer than its deadline of {} s (server setting server.request_timeout_secs); ask for less at once",
        after.as_secs()
    )]
    DeadlineExceeded {
        /// The deadline.
        after: Duration,
    },
    /// The client stopped sending its request body part way (408).
    #[error(
        "the request body stalled: no bytes arrived for {} s after {received} bytes (server setting limits.body_idle_timeout_secs); send the body without pauses",
        idle.as_secs_f64()
    )]
    BodyStalled {
        /// How long it was silent.
        idle: Duration,
        /// Bytes received before it stalled.
        received: u64,
    },
    /// The server is stopping (503).
    #[error("the server is shutting down; retry against another instance or after it restarts")]
    ShuttingDown,
    /// No or bad credentials (401).
    #[error("{reason}")]
    Unauthenticated {
        /// What is wrong with the credentials.
        reason: String,
    },
    /// Credentials that do not allow this (403).
    #[error("{principal} may not {action}")]
    Forbidden {
        /// Who asked.
        principal: String,
        /// What they asked to do.
        action: String,
    },
    /// A client over its request rate (429).
    #[error(
        "too many requests from {client}: at most {per_second} per second, in bursts of up to {burst} (server settings auth.rate_limit_per_second, auth.rate_limit_burst); retry after {} s",
        retry_after.as_secs().max(1)
    )]
    RateLimited {
        /// The user or address.
        client: String,
        /// The sustained rate.
        per_second: f64,
        /// The burst.
        burst: u32,
        /// When the next request would be allowed.
        retry_after: Duration,
    },
    /// Request headers over the limit (431).
    #[error(
        "the request's headers take {bytes} bytes, over the limit of {limit} (server setting limits.max_header_bytes); send fewer or shorter headers (a long id list goes in a POST body)"
    )]
    HeadersTooLarge {
        /// Bytes of the request line and headers.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Stored data cannot be decoded (500).
    #[error("stored {what} {key} is corrupt: {reason}")]
    Corrupt {
        /// Kind of record (`chunk`, `dataset`, `job`, ...).
        what: &'static str,
        /// Which one.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// The store failed or is unreachable (503 or 500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an environment failure on the server's side (500).
    #[error("internal error while {during}: {reason}")]
    Internal {
        /// What the server was doing.
        during: &'static str,
        /// What failed.
        reason: String,
    },
}

pub(crate) fn box_json(b: &Box3) -> Value {
    json!([b.start, b.end])
}

impl ServiceError {
    /// The machine-readable name of the variant (`unknown_dataset`, ...).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceError::UnknownDataset { .. } => "unknown_dataset",
            ServiceError::UnknownChannel { .. } => "unknown_channel",
            ServiceError::UnknownLevel { .. } => "unknown_level",
            ServiceError::UnknownJob { .. } => "unknown_job",
            ServiceError::UnknownUser { .. } => "unknown_user",
            ServiceError::UnknownExperiment { .. } => "unknown_experiment",
            ServiceError::UnknownScale { .. } => "unknown_scale",
            ServiceError::UnknownToken { .. } => "unknown_token",
            ServiceError::RateLimited { .. } => "rate_limited",
            ServiceError::HeadersTooLarge { .. } => "headers_too_large",
            ServiceError::UnknownTask { .. } => "unknown_task",
            ServiceError::UnknownTable { .. } => "unknown_table",
            ServiceError::UnknownRow { .. } => "unknown_row",
            ServiceError::UnknownVersion { .. } => "unknown_version",
            ServiceError::TableNotInVersion { .. } => "table_not_in_version",
            ServiceError::VersionExpired { .. } => "version_expired",
            ServiceError::VersionNotReady { .. } => "version_not_ready",
            ServiceError::InvalidRow { .. } => "invalid_row",
            ServiceError::TableExists { .. } => "table_exists",
            ServiceError::TableReferenced { .. } => "table_referenced",
            ServiceError::TableReplaced { .. } => "table_replaced",
            ServiceError::RowNotValid { .. } => "row_not_valid",
            ServiceError::LabelConflict { .. } => "label_conflict",
            ServiceError::SliceOutsideLevel { .. } => "slice_outside_level",
            ServiceError::TileOutsideLevel { .. } => "tile_outside_level",
            ServiceError::BoxOutsideLevel { .. } => "box_outside_level",
            ServiceError::InvalidBox { .. } => "invalid_box",
            ServiceError::InvalidField { .. } => "invalid_field",
            ServiceError::InvalidBody { .. } => "invalid_body",
            ServiceError::DatasetExists { .. } => "dataset_exists",
            ServiceError::ChannelExists { .. } => "channel_exists",
            ServiceError::DatasetNotEmpty { .. } => "dataset_not_empty",
            ServiceError::JobEnded { .. } => "job_ended",
            ServiceError::ChannelReplaced { .. } => "channel_replaced",
            ServiceError::TooLarge { .. } => "too_large",
            ServiceError::Overloaded { .. } => "overloaded",
            ServiceError::Contended { .. } => "contended",
            ServiceError::DeadlineExceeded { .. } => "deadline_exceeded",
            ServiceError::BodyStalled { .. } => "body_stalled",
            ServiceError::ShuttingDown => "shutting_down",
            ServiceError::Unauthenticated { .. } => "unauthenticated",
            ServiceError::Forbidden { .. } => "forbidden",
            ServiceError::Corrupt { .. } => "corrupt",
            ServiceError::Store(StoreError::Unavailable { .. }) => "store_unavailable",
            ServiceError::Store(StoreError::BadPageToken { .. }) => "bad_page_token",
            ServiceError::Store(StoreError::Engine { .. }) => "store_failed",
            ServiceError::Internal { .. } => "internal",
        }
    }

    /// When a client should retry a 503 or 429, if this is one.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ServiceError::Overloaded { retry_after, .. }
            | ServiceError::RateLimited { retry_after, .. } => Some(*retry_after),
            ServiceError::Store(StoreError::Unavailable { .. }) => Some(Duration::from_secs(5)),
            ServiceError::Contended { .. } | ServiceError::DeadlineExceeded { .. } => {
                Some(Duration::from_secs(1))
            }
            ServiceError::ShuttingDown => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// A copy for a second waiter of a shared computation (the first gets
    /// the original). Store engine errors keep their text, not their source.
    #[must_use]
    pub fn duplicate(&self) -> Self {
        match self {
            ServiceError::Store(StoreError::Unavailable { backend, reason }) => {
                ServiceError::Store(StoreError::Unavailable {
                    backend,
                    reason: reason.clone(),
                })
            }
            ServiceError::Store(StoreError::BadPageToken { backend }) => {
                ServiceError::Store(StoreError::BadPageToken { backend })
            }
            ServiceError::Store(e @ StoreError::Engine { .. }) => ServiceError::Internal {
                during: "reading from the store",
                reason: e.to_string(),
            },
            ServiceError::UnknownDataset { name } => {
                ServiceError::UnknownDataset { name: name.clone() }
            }
            ServiceError::UnknownChannel { dataset, name } => ServiceError::UnknownChannel {
                dataset: dataset.clone(),
                name: name.clone(),
            },
            ServiceError::Corrupt { what, key, reason } => ServiceError::Corrupt {
                what,
                key: key.clone(),
                reason: reason.clone(),
            },
            ServiceError::Internal { during, reason } => ServiceError::Internal {
                during,
                reason: reason.clone(),
            },
            other => ServiceError::Internal {
                during: "sharing a result",
                reason: other.to_string(),
            },
        }
    }

    /// A JSON record in the store that does not parse.
    #[must_use]
    pub fn corrupt_json(what: &'static str, key: impl Into<String>, e: &serde_json::Error) -> Self {
        ServiceError::Corrupt {
            what,
            key: key.into(),
            reason: e.to_string(),
        }
    }

    /// A request field that is invalid.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ServiceError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<neurocube_core::error::GeometryError> for ServiceError {
    fn from(e: neurocube_core::error::GeometryError) -> Self {
        ServiceError::InvalidBox {
            reason: e.to_string(),
        }
    }
}

impl From<neurocube_core::meta::MetaError> for ServiceError {
    fn from(e: neurocube_core::meta::MetaError) -> Self {
        ServiceError::InvalidField {
            field: e.field.to_string(),
            reason: e.message,
        }
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        ServiceError::Internal {
            during: "running a worker task",
            reason: e.to_string(),
        }
    }
}

/// Result of a use case.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
