//! What every handler receives.

use std::sync::Arc;
use std::time::Duration;

use neurocube_service::Services;

/// Shared application state.
pub struct AppState {
    /// The use cases.
    pub services: Arc<Services>,
    /// Longest a request may run (`server.request_timeout_secs`).
    pub request_timeout: Option<Duration>,
    /// Largest request line and headers (`limits.max_header_bytes`).
    pub max_header_bytes: usize,
}
