//! What every handler receives.

use std::sync::Arc;

use neurocube_service::Services;

/// Shared application state.
pub struct AppState {
    /// The use cases.
    pub services: Arc<Services>,
    /// Largest request body accepted.
    pub body_limit: u64,
}
