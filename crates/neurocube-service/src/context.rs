//! Who is asking, for which request, until when: the [`RequestContext`]
//! every service entry point takes, and the [`Access`] a request needs,
//! checked once per request by [`AccessPolicy::check`] before any service
//! call runs.

use std::time::{Duration, Instant};

use neurocube_core::DatasetName;

use crate::error::{Result, ServiceError};

/// Who a request acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials (every request until access control is configured).
    Anonymous,
    /// The server itself: background work, the command line, the demo.
    System,
}

impl Principal {
    /// A short name, for records (`owner`, `author`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::System => "system",
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("an anonymous client"),
            Principal::System => f.write_str("the server"),
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
    /// Anyone, even without credentials (health, the API index, the viewer page).
    Public,
    /// Server-wide reads not tied to one dataset (the dataset list, jobs, workers, metrics).
    ServerRead,
    /// Server-wide changes (creating a dataset, client-run jobs).
    ServerWrite,
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
            Access::Public | Access::ServerRead | Access::ServerWrite => None,
        }
    }
}

/// The one place requests are allowed or refused. Every request is open
/// for now (`auth.mode = "open"`); access control replaces [`Self::check`]
/// and nothing else.
#[derive(Debug, Default)]
pub struct AccessPolicy;

impl AccessPolicy {
    /// Allow `ctx` to do `access`, or say why not.
    pub fn check(&self, ctx: &RequestContext, access: &Access) -> Result<()> {
        match (&ctx.principal, access) {
            (Principal::System | Principal::Anonymous, _) => Ok(()),
        }
    }
}
