//! Per-client rate limits: a token bucket per user (or per address for
//! anonymous clients). A client over its rate gets 429 with the seconds
//! until its next request would be allowed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Result, ServiceError};

/// Most clients tracked at once; past it, full buckets are forgotten.
const MAX_CLIENTS: usize = 100_000;

/// Requests per second and burst of each client (`per_second = 0`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateConfig {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once above the rate.
    pub burst: u32,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by client.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Limits of `config`.
    #[must_use]
    pub fn new(config: RateConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether limits are on.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.config.per_second > 0.0
    }

    /// Count one request of `client` at `now`, or refuse it (429) with the
    /// wait until one is allowed.
    pub fn admit_at(&self, client: &str, now: Instant) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let rate = self.config.per_second;
        let cap = f64::from(self.config.burst.max(1));
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_CLIENTS && !map.contains_key(client) {
            // Forget clients whose buckets have refilled: they lose nothing.
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < cap);
        }
        let b = map.entry(client.to_string()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
        Err(ServiceError::RateLimited {
            client: client.to_string(),
            per_second: rate,
            burst: self.config.burst,
            retry_after: wait,
        })
    }

    /// Count one request of `client` now.
    pub fn admit(&self, client: &str) -> Result<()> {
        self.admit_at(client, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let r = RateLimiter::new(RateConfig {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            r.admit_at("ann", t0).unwrap();
        }
        let Err(ServiceError::RateLimited { retry_after, .. }) = r.admit_at("ann", t0) else {
            panic!("the fourth request at once must be refused");
        };
        assert!(
            (retry_after.as_secs_f64() - 0.5).abs() < 1e-9,
            "{retry_after:?}"
        );
        // Another client has its own bucket.
        r.admit_at("bob", t0).unwrap();
        // Half a second later one more request is allowed, not two.
        let t1 = t0 + Duration::from_millis(500);
        r.admit_at("ann", t1).unwrap();
        assert!(r.admit_at("ann", t1).is_err());
    }

    #[test]
    fn off_by_default() {
        let r = RateLimiter::new(RateConfig::default());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            r.admit_at("ann", t0).unwrap();
        }
    }
}
