//! Errors of the use cases. The server maps each variant to one HTTP status
//! in one table; messages say what was wrong and what to do.

use neurocube_store::StoreError;

/// A failed use case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The request is malformed or asks for something impossible (400).
    #[error("{0}")]
    InvalidRequest(String),
    /// A named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is stored (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is larger than the configured limit (413).
    #[error(
        "the cutout is {bytes} bytes, over the limit of {limit} bytes (server setting limits.max_cutout_bytes); request smaller boxes"
    )]
    TooLarge {
        /// Requested size.
        bytes: u64,
        /// Configured limit.
        limit: u64,
    },
    /// Stored data cannot be decoded (500).
    #[error("stored chunk {key} is corrupt: {reason}")]
    CorruptChunk {
        /// Chunk description.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// The store failed or is unreachable (503 or 500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A worker task died (500).
    #[error("internal task failed: {0}")]
    Task(String),
}

impl From<neurocube_core::error::GeometryError> for ServiceError {
    fn from(e: neurocube_core::error::GeometryError) -> Self {
        ServiceError::InvalidRequest(e.to_string())
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        ServiceError::Task(e.to_string())
    }
}

/// Result of a use case.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
