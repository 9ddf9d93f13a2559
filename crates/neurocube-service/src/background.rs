//! One lifecycle for everything the server does in the background (job
//! workers, tile prefetchers, the purge of deleted channels, and whatever
//! comes next): each is a [`Worker`], and one [`BackgroundRunner`] owns them
//! all, on a runtime of its own, reports their status, and stops them with
//! one signal.
//!
//! A worker does one step of work at a time ([`Worker::work`]) and says
//! whether there is more; when it is idle the runner waits on
//! [`Worker::wait_for_work`] (a queue's notification, or a timer for work
//! kept in the store) or on the shutdown signal, whichever comes first. At
//! shutdown each worker is called once more with `stopping = true`: a
//! worker that holds work nobody else can redo (queued writes awaiting
//! their acknowledgement) finishes it and then says it is idle; one whose
//! work is kept in the store and resumable (jobs) or optional (prefetch)
//! says it is done.
//!
//! ```
//! use std::time::Duration;
//! use neurocube_service::background::{BackgroundRunner, Worker, WorkerState};
//!
//! struct Countdown(u32);
//!
//! #[async_trait::async_trait]
//! impl Worker for Countdown {
//!     fn name(&self) -> String { "countdown".into() }
//!     async fn work(&mut self, _stopping: bool) -> neurocube_service::Result<WorkerState> {
//!         if self.0 == 0 { return Ok(WorkerState::Done) }
//!         self.0 -= 1;
//!         Ok(WorkerState::Busy)
//!     }
//!     async fn wait_for_work(&mut self) {}
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let runner = BackgroundRunner::new(1, &prometheus::Registry::new());
//! runner.spawn(Countdown(3));
//! assert!(runner.shutdown(Duration::from_secs(5)).await);
//! let status = &runner.statuses()[0];
//! assert_eq!((status.state, status.steps), ("stopped", 4)); // 3 busy, then done
//! # })
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::jobs::now_ms;

/// What a worker reports after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// It did something and may have more: call `work` again.
    Busy,
    /// Nothing to do now: wait for work (or, when stopping, exit).
    Idle,
    /// It will never have work again: exit.
    Done,
}

/// A background worker.
#[async_trait::async_trait]
pub trait Worker: Send + 'static {
    /// Name in status reports and logs (unique among workers).
    fn name(&self) -> String;

    /// Do one step. `stopping` is true once shutdown has begun.
    async fn work(&mut self, stopping: bool) -> Result<WorkerState>;

    /// Return when there may be work again (called after `Idle`).
    async fn wait_for_work(&mut self);

    /// Items waiting in this worker's queue, if it has one.
    fn queue_depth(&self) -> Option<u64> {
        None
    }
}

/// A worker as `GET /v1/workers` and `/health` show it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerStatus {
    /// Its name.
    pub name: String,
    /// `busy`, `idle`, `retrying` (its last step failed) or `stopped`.
    pub state: &'static str,
    /// Items in its queue, if it has one.
    pub queue_depth: Option<u64>,
    /// Steps done.
    pub steps: u64,
    /// Steps that failed.
    pub errors: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it happened (ms since the epoch).
    pub last_error_ms: Option<u64>,
}

struct Shared {
    statuses: Mutex<Vec<Arc<Mutex<WorkerStatus>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    runtime: Mutex<Option<Runtime>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Owns every background worker of a server.
pub struct BackgroundRunner {
    threads: usize,
    stop: watch::Sender<bool>,
    shared: Shared,
    queue_depth: IntGaugeVec,
    errors: IntCounterVec,
}

impl std::fmt::Debug for BackgroundRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundRunner")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Pause after a failed step before the next try.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

impl BackgroundRunner {
    /// A runner whose workers run on `threads` threads of their own (the
    /// runtime starts with the first worker), with its metrics in `registry`.
    #[must_use]
    #[allow(clippy::expect_used)] // startup: static metric names
    pub fn new(threads: usize, registry: &Registry) -> Self {
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "neurocube_worker_queue_depth",
                "Items waiting in a background worker's queue",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "neurocube_worker_errors_total",
                "Failed steps of background workers",
            ),
            &["worker"],
        )
        .expect("valid metric");
        // A second runner on one registry (tests) keeps the first's metrics.
        let _ = registry.register(Box::new(queue_depth.clone()));
        let _ = registry.register(Box::new(errors.clone()));
        Self {
            threads: threads.max(1),
            stop: watch::channel(false).0,
            shared: Shared {
                statuses: Mutex::default(),
                tasks: Mutex::default(),
                runtime: Mutex::default(),
            },
            queue_depth,
            errors,
        }
    }

    fn handle(&self) -> std::io::Result<tokio::runtime::Handle> {
        let mut rt = lock(&self.shared.runtime);
        if let Some(r) = rt.as_ref() {
            return Ok(r.handle().clone());
        }
        let r = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads)
            .thread_name("neurocube-bg")
            .enable_all()
            .build()?;
        let h = r.handle().clone();
        *rt = Some(r);
        Ok(h)
    }

    /// Start a worker. Once shutdown has begun, workers are not started.
    pub fn spawn(&self, mut w: impl Worker) {
        if *self.stop.borrow() {
            return;
        }
        let name = w.name();
        let status = Arc::new(Mutex::new(WorkerStatus {
            name: name.clone(),
            state: "idle",
            queue_depth: w.queue_depth(),
            steps: 0,
            errors: 0,
            last_error: None,
            last_error_ms: None,
        }));
        let handle = match self.handle() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(worker = %name, error = %e, "cannot start the background runtime; the worker does not run");
                lock(&status).state = "stopped";
                lock(&self.shared.statuses).push(status);
                return;
            }
        };
        lock(&self.shared.statuses).push(status.clone());
        let mut stop = self.stop.subscribe();
        let (depth, errors) = (
            self.queue_depth.with_label_values(&[name.as_str()]),
            self.errors.with_label_values(&[name.as_str()]),
        );
        let task = handle.spawn(async move {
            loop {
                let stopping = *stop.borrow_and_update();
                let result = w.work(stopping).await;
                let queued = w.queue_depth();
                depth.set(queued.map_or(0, |q| i64::try_from(q).unwrap_or(i64::MAX)));
                let state = {
                    let mut s = lock(&status);
                    s.steps += 1;
                    s.queue_depth = queued;
                    match &result {
                        Ok(WorkerState::Busy) => s.state = "busy",
                        Ok(WorkerState::Idle) => s.state = "idle",
                        Ok(WorkerState::Done) => s.state = "stopped",
                        Err(e) => {
                            s.state = "retrying";
                            s.errors += 1;
                            s.last_error = Some(e.to_string());
                            s.last_error_ms = Some(now_ms());
                        }
                    }
                    result
                };
                match state {
                    Ok(WorkerState::Busy) => tokio::task::yield_now().await,
                    Ok(WorkerState::Idle) if stopping => break,
                    Ok(WorkerState::Idle) => {
                        tokio::select! {
                            () = w.wait_for_work() => {}
                            _ = stop.changed() => {}
                        }
                    }
                    Ok(WorkerState::Done) => break,
                    Err(e) => {
                        errors.inc();
                        tracing::warn!(worker = %name, error = %e, "background worker step failed; retrying");
                        if stopping {
                            break;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(RETRY_PAUSE) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
            }
            lock(&status).state = "stopped";
        });
        lock(&self.shared.tasks).push(task);
    }

    /// Every worker's status, in start order.
    #[must_use]
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        lock(&self.shared.statuses)
            .iter()
            .map(|s| lock(s).clone())
            .collect()
    }

    /// Signal shutdown, let workers drain for at most `grace`, then stop the
    /// runtime. Returns whether every worker finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.shared.tasks).drain(..).collect();
        let finished = tokio::time::timeout(grace, futures::future::join_all(tasks))
            .await
            .is_ok();
        if !finished {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "background workers did not finish in time; stopping them"
            );
        }
        if let Some(rt) = lock(&self.shared.runtime).take() {
            rt.shutdown_background();
        }
        finished
    }
}

impl Drop for BackgroundRunner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(rt) = lock(&self.shared.runtime).take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::sync::Notify;

    use super::*;
    use crate::error::ServiceError;

    /// A queue worker: drains its queue even when stopping.
    struct Drainer {
        queue: Arc<Mutex<Vec<u64>>>,
        done: Arc<AtomicU64>,
        wake: Arc<Notify>,
        fail_first: bool,
    }

    #[async_trait::async_trait]
    impl Worker for Drainer {
        fn name(&self) -> String {
            "drainer".into()
        }
        async fn work(&mut self, _stopping: bool) -> Result<WorkerState> {
            if self.fail_first {
                self.fail_first = false;
                return Err(ServiceError::Internal {
                    during: "testing",
                    reason: "first step fails".into(),
                });
            }
            let item = lock(&self.queue).pop();
            match item {
                Some(v) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    self.done.fetch_add(v, Ordering::SeqCst);
                    Ok(WorkerState::Busy)
                }
                None => Ok(WorkerState::Idle),
            }
        }
        async fn wait_for_work(&mut self) {
            self.wake.notified().await;
        }
        fn queue_depth(&self) -> Option<u64> {
            Some(lock(&self.queue).len() as u64)
        }
    }

    /// A polling worker: exits at once when stopping.
    struct Poller(Arc<AtomicU64>);

    #[async_trait::async_trait]
    impl Worker for Poller {
        fn name(&self) -> String {
            "poller".into()
        }
        async fn work(&mut self, stopping: bool) -> Result<WorkerState> {
            if stopping {
                return Ok(WorkerState::Done);
            }
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(WorkerState::Idle)
        }
        async fn wait_for_work(&mut self) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_drains_queues_and_stops_pollers() {
        let runner = BackgroundRunner::new(2, &Registry::new());
        let queue = Arc::new(Mutex::new(Vec::new()));
        let (done, wake) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
        runner.spawn(Drainer {
            queue: queue.clone(),
            done: done.clone(),
            wake: wake.clone(),
            fail_first: true,
        });
        let polls = Arc::new(AtomicU64::new(0));
        runner.spawn(Poller(polls.clone()));
        // The drainer's first step fails: it is reported and retried.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = runner.statuses();
        assert_eq!(s[0].errors, 1);
        assert_eq!(
            s[0].last_error.as_deref(),
            Some("internal error while testing: first step fails")
        );
        // Work queued just before shutdown is still done; the poller (waiting
        // an hour) stops at once.
        lock(&queue).extend(1..=100);
        wake.notify_one();
        assert!(runner.shutdown(Duration::from_secs(10)).await);
        assert_eq!(done.load(Ordering::SeqCst), 5050);
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        let s = runner.statuses();
        assert!(s.iter().all(|w| w.state == "stopped"), "{s:?}");
        assert_eq!(s[0].queue_depth, Some(0));
        // After shutdown nothing new starts.
        runner.spawn(Poller(polls.clone()));
        assert_eq!(runner.statuses().len(), 2);
    }

    #[tokio::test]
    async fn a_worker_that_never_finishes_is_cut_off_at_the_grace_period() {
        struct Forever;
        #[async_trait::async_trait]
        impl Worker for Forever {
            fn name(&self) -> String {
                "forever".into()
            }
            async fn work(&mut self, _stopping: bool) -> Result<WorkerState> {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(WorkerState::Busy)
            }
            async fn wait_for_work(&mut self) {}
        }
        let runner = BackgroundRunner::new(1, &Registry::new());
        runner.spawn(Forever);
        let started = std::time::Instant::now();
        assert!(!runner.shutdown(Duration::from_millis(200)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
