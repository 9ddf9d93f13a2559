//! Who is asking, for which request, until when: the [`RequestContext`]
//! every service entry point takes, and the [`Access`] a request needs,
//! checked once per request by [`crate::auth::Auth::check`] before any
//! service call runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use neurocube_core::DatasetName;

use crate::auth::Identity;
use crate::error::{Result, ServiceError};

/// Who a request acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No (valid) token.
    Anonymous,
    /// The server itself: background work, the command line, the demo.
    System,
    /// A user, by its token.
    User(Arc<Identity>),
}

impl Principal {
    /// A short name, for records (`owner`, `author`).
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::System => "system",
            Principal::User(id) => &id.user,
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("an anonymous client"),
            Principal::System => f.write_str("the server"),
            Principal::User(id) => write!(f, "user '{}'", id.user),
        }
    }
}

/// One request as the services see it, built once per request (by the
/// server's middleware) and passed to every service call it makes.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// Who it acts for.
    pub principal: Principal,
    /// Id for logs and the `X-Request-Id` header.
    pub request_id: String,
    /// When it started.
    pub started: Instant,
    /// How long it may run (`None`: no deadline).
    pub timeout: Option<Duration>,
}

impl RequestContext {
    /// A client request without credentials.
    #[must_use]
    pub fn anonymous(request_id: String, timeout: Option<Duration>) -> Self {
        Self {
            principal: Principal::Anonymous,
            request_id,
            started: Instant::now(),
            timeout,
        }
    }

    /// Work the server does for itself (`what` names it in logs).
    #[must_use]
    pub fn system(what: &str) -> Self {
        Self {
            principal: Principal::System,
            request_id: what.to_string(),
            started: Instant::now(),
            timeout: None,
        }
    }

    /// When the request must be done by, if ever.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| self.started + t)
    }

    /// Fail with [`ServiceError::DeadlineExceeded`] once past the deadline
    /// (long operations call this between steps).
    pub fn check_deadline(&self) -> Result<()> {
        match self.timeout {
            Some(t) if self.started.elapsed() > t => {
                Err(ServiceError::DeadlineExceeded { after: t })
            }
            _ => Ok(()),
        }
    }
}

/// What a request needs to be allowed to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, even without credentials (health, the API index, the viewer
    /// page, the dataset list, which shows each caller what it may read).
    Public,
    /// The Prometheus metrics (who may: `auth.metrics`).
    Metrics,
    /// Server-wide reads not tied to one dataset (jobs, workers, one's tokens): any signed-in user.
    ServerRead,
    /// Server-wide changes (creating a dataset, client-run jobs): any signed-in user.
    ServerWrite,
    /// Users and their groups: server admins only.
    ServerAdmin,
    /// Read a dataset's data and metadata.
    Read(DatasetName),
    /// Change a dataset's data (cutouts, downsampling).
    Write(DatasetName),
    /// Change a dataset's metadata and channels, or delete it.
    Admin(DatasetName),
}

impl Access {
    /// The dataset it concerns, if one.
    #[must_use]
    pub fn dataset(&self) -> Option<&DatasetName> {
        match self {
            Access::Read(d) | Access::Write(d) | Access::Admin(d) => Some(d),
            Access::Public
            | Access::Metrics
            | Access::ServerRead
            | Access::ServerWrite
            | Access::ServerAdmin => None,
        }
    }
}
