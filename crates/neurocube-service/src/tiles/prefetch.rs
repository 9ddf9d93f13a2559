//! The prefetch queue: a bounded list of predicted tiles, newest
//! predictions first, worked off by background workers that step aside
//! while demand requests keep the cores busy.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Inner, TileKey};
use crate::background::{Worker, WorkerState};
use crate::error::Result;
use crate::volume::Target;

/// A predicted tile and where its voxels are.
pub(crate) struct Job {
    pub(crate) key: TileKey,
    pub(crate) target: Target,
}

/// Predicted tiles, at most `cap`.
pub(crate) struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Notify,
    cap: usize,
    /// Jobs taken and not yet finished.
    running: std::sync::atomic::AtomicUsize,
}

impl Queue {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            jobs: Mutex::new(VecDeque::with_capacity(cap)),
            ready: Notify::new(),
            cap,
            running: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Put a batch of predictions (most likely first) ahead of older ones;
    /// returns how many predictions fell off the end of the queue.
    pub(crate) fn push(&self, batch: Vec<Job>) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next: VecDeque<Job> = VecDeque::with_capacity(self.cap + batch.len());
        for j in batch.into_iter().chain(jobs.drain(..)) {
            if !next.iter().any(|o| o.key == j.key) {
                next.push_back(j);
            }
        }
        let dropped = next.len().saturating_sub(self.cap);
        next.truncate(self.cap);
        *jobs = next;
        drop(jobs);
        self.ready.notify_waiters();
        dropped
    }

    /// Predictions waiting.
    pub(crate) fn len(&self) -> usize {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The most likely prediction, if any.
    pub(crate) fn pop(&self) -> Option<Job> {
        let job = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        if job.is_some() {
            self.running.fetch_add(1, Ordering::SeqCst);
        }
        job
    }

    /// A job taken by [`Queue::pop`] is done.
    pub(crate) fn finish(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// Nothing queued and nothing being rendered.
    pub(crate) fn idle(&self) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.is_empty() && self.running.load(Ordering::SeqCst) == 0
    }
}

/// Longest a prediction waits for a free core before it is rendered anyway.
const YIELD_AT_MOST: Duration = Duration::from_millis(500);

/// Renders predicted tiles, one per step; ends when the cache is dropped.
pub struct PrefetchWorker {
    inner: Weak<Inner>,
    n: usize,
}

impl PrefetchWorker {
    pub(crate) fn new(inner: Weak<Inner>, n: usize) -> Self {
        Self { inner, n }
    }
}

#[async_trait::async_trait]
impl Worker for PrefetchWorker {
    fn name(&self) -> String {
        format!("tile-prefetch/{}", self.n)
    }

    async fn work(&mut self, stopping: bool) -> Result<WorkerState> {
        // Predictions are optional: dropped at shutdown.
        let Some(inner) = self.inner.upgrade().filter(|_| !stopping) else {
            return Ok(WorkerState::Done);
        };
        let Some(queue) = inner.queue.as_ref() else {
            return Ok(WorkerState::Done);
        };
        let Some(job) = queue.pop() else {
            return Ok(WorkerState::Idle);
        };
        // Demand first: wait while demand renderings fill the cores.
        let started = tokio::time::Instant::now();
        while inner.busy() && started.elapsed() < YIELD_AT_MOST {
            let _ =
                tokio::time::timeout(Duration::from_millis(20), inner.demand_done.notified()).await;
        }
        inner.prefetch(job).await;
        queue.finish();
        Ok(WorkerState::Busy)
    }

    async fn wait_for_work(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let Some(queue) = inner.queue.as_ref() else {
            return;
        };
        let ready = queue.ready.notified();
        if queue.len() > 0 {
            return;
        }
        // Re-checked now and then, so a dropped cache ends the worker.
        let _ = tokio::time::timeout(Duration::from_secs(1), ready).await;
    }

    fn queue_depth(&self) -> Option<u64> {
        let inner = self.inner.upgrade()?;
        inner.queue.as_ref().map(|q| q.len() as u64)
    }
}
