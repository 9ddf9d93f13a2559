//! The background job runner of a server: `jobs.workers` tasks that claim
//! and run job tasks from the store, and (with `jobs.auto_downsample`)
//! start downsampling of channels whose coarser levels went stale.
//!
//! The workers run on a runtime of their own thread, never on the thread
//! that opened the store: writes wait synchronously for their stale marks,
//! and a store whose driver tasks live on the main runtime (Cassandra) must
//! not find that runtime blocked. They hold the services weakly and stop
//! when the server's services are dropped.

use std::sync::Arc;
use std::time::Duration;

use neurocube_service::Services;
use neurocube_service::jobs::JobsConfig;

use crate::config::JobSettings;

/// Start the workers (none with 0 workers).
pub fn start(s: &JobSettings, services: &Arc<Services>) {
    services.jobs.configure(JobsConfig {
        workers: s.workers,
        lease: Duration::from_secs(s.lease_seconds.max(1)),
        pause: Duration::from_millis(s.pause_ms),
    });
    if s.workers == 0 {
        return;
    }
    let weak = Arc::downgrade(services);
    let (workers, auto, delay) = (s.workers, s.auto_downsample, s.auto_delay_ms);
    let spawned = std::thread::Builder::new()
        .name("neurocube-jobs".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.clamp(1, 4))
                .thread_name("neurocube-job")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the job runtime; no jobs run here");
                    return;
                }
            };
            rt.block_on(async move {
                let mut handles = Vec::new();
                for w in 0..workers {
                    let weak = weak.clone();
                    handles.push(tokio::spawn(async move {
                        let name = format!("w{w}");
                        loop {
                            let Some(s) = weak.upgrade() else { break };
                            let did = match s.jobs.work_once(&name, None).await {
                                Ok(d) => d,
                                Err(e) => {
                                    tracing::warn!(worker = %name, error = %e, "job worker step failed");
                                    false
                                }
                            };
                            if !did
                                && auto
                                && w == 0
                                && let Err(e) = s.pyramid.auto_tick(delay).await
                            {
                                tracing::warn!(error = %e, "automatic downsampling check failed");
                            }
                            drop(s);
                            if !did {
                                tokio::time::sleep(Duration::from_millis(250)).await;
                            }
                        }
                    }));
                }
                for h in handles {
                    let _ = h.await;
                }
            });
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the job thread; no jobs run here");
    }
}
