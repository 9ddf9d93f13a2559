//! Admission control: heavy requests (cutouts, bodies) reserve the decoded
//! bytes they will hold in memory before they start; when the configured
//! budget is taken, a request is refused at once with 503 and Retry-After
//! instead of growing the server's memory. A reservation is released when
//! its [`Permit`] drops (for a streamed response, when the body has been
//! sent).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Result, ServiceError};

/// Reservations are counted in KiB (the semaphore counts in u32).
const UNIT: u64 = 1024;

/// The in-flight budget.
#[derive(Debug)]
pub struct Admission {
    sem: Arc<Semaphore>,
    units: u32,
    limit: u64,
    inflight: IntGauge,
    rejected: IntCounterVec,
}

/// A reservation; releases its bytes when dropped.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    inflight: IntGauge,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inflight
            .sub(i64::try_from(self.bytes).unwrap_or(i64::MAX));
    }
}

impl Admission {
    /// A budget of `limit` bytes, with its metrics in `registry`.
    #[must_use]
    #[allow(clippy::expect_used)] // startup: static metric names
    pub fn new(limit: u64, registry: &Registry) -> Self {
        let units = u32::try_from(limit.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        let inflight = IntGauge::new(
            "neurocube_inflight_bytes",
            "Decoded bytes reserved by requests in flight",
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "neurocube_rejected_total",
                "Requests refused with 503 because a bound was reached",
            ),
            &["resource"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(inflight.clone()));
        let _ = registry.register(Box::new(rejected.clone()));
        Self {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
            limit: u64::from(units) * UNIT,
            inflight,
            rejected,
        }
    }

    /// The budget in bytes.
    #[must_use]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reserve `bytes` now or fail with [`ServiceError::Overloaded`]. A
    /// request larger than the whole budget reserves all of it, so it runs
    /// when nothing else does.
    pub fn admit(&self, bytes: u64) -> Result<Permit> {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        match self.sem.clone().try_acquire_many_owned(units) {
            Ok(p) => {
                let bytes = u64::from(units) * UNIT;
                self.inflight.add(i64::try_from(bytes).unwrap_or(i64::MAX));
                Ok(Permit {
                    _permit: p,
                    bytes,
                    inflight: self.inflight.clone(),
                })
            }
            Err(_) => {
                self.rejected.with_label_values(&["inflight_bytes"]).inc();
                Err(ServiceError::Overloaded {
                    resource: "decoded bytes in flight",
                    limit: self.limit,
                    setting: "limits.max_inflight_bytes",
                    retry_after: Duration::from_secs(1),
                })
            }
        }
    }

    /// Count a refusal by another bound (a full queue, compare-and-set retries).
    pub fn count_rejection(&self, resource: &str) {
        self.rejected.with_label_values(&[resource]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_never_exceeded_and_comes_back() {
        let a = Admission::new(10 << 20, &Registry::new());
        let p1 = a.admit(6 << 20).unwrap();
        let e = a.admit(6 << 20).unwrap_err();
        assert!(matches!(e, ServiceError::Overloaded { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "the server is busy: decoded bytes in flight is at its limit of 10485760 (server setting limits.max_inflight_bytes); retry in 1 s"
        );
        let p2 = a.admit(4 << 20).unwrap();
        assert_eq!(a.inflight.get(), 10 << 20);
        drop(p1);
        drop(p2);
        assert_eq!(a.inflight.get(), 0);
        // Larger than the whole budget: takes all of it.
        let big = a.admit(1 << 40).unwrap();
        assert!(a.admit(1).is_err());
        drop(big);
        assert!(a.admit(1).is_ok());
    }
}
