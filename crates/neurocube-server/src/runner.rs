//! The background job runner of a server: `jobs.workers` tasks that claim
//! and run job tasks from the store, and (with `jobs.auto_downsample`)
//! start downsampling of channels whose coarser levels went stale.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use neurocube_service::Services;
use neurocube_service::jobs::JobsConfig;

use crate::config::JobSettings;

/// Start the workers on the current runtime (none outside one, or with 0 workers).
pub fn start(s: &JobSettings, services: &Arc<Services>) {
    services.jobs.configure(JobsConfig {
        workers: s.workers,
        lease: Duration::from_secs(s.lease_seconds.max(1)),
        pause: Duration::from_millis(s.pause_ms),
    });
    if s.workers == 0 || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let tick: Option<Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>> =
        if s.auto_downsample {
            let pyramid = services.pyramid.clone();
            let delay = s.auto_delay_ms;
            Some(Arc::new(move || {
                let p = pyramid.clone();
                async move {
                    if let Err(e) = p.auto_tick(delay).await {
                        tracing::warn!(error = %e, "automatic downsampling check failed");
                    }
                }
                .boxed()
            }))
        } else {
            None
        };
    services.jobs.spawn_workers(tick);
}
