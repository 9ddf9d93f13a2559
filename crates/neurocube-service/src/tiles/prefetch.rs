//! The prefetch queue: a bounded list of predicted tiles, newest
//! predictions first, worked off by background threads that step aside
//! while demand requests keep the cores busy.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::{Inner, TileKey};
use crate::volume::Target;

/// A predicted tile and where its voxels are.
pub(crate) struct Job {
    pub(crate) key: TileKey,
    pub(crate) target: Target,
}

/// Predicted tiles, at most `cap`.
pub(crate) struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    cap: usize,
    /// Jobs taken and not yet finished.
    running: std::sync::atomic::AtomicUsize,
}

impl Queue {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            jobs: Mutex::new(VecDeque::with_capacity(cap)),
            ready: Condvar::new(),
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
        self.ready.notify_all();
        dropped
    }

    /// The most likely prediction, waiting up to `wait` for one.
    pub(crate) fn pop(&self, wait: Duration) -> Option<Job> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut jobs, _) = self
            .ready
            .wait_timeout_while(jobs, wait, |j| j.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        let job = jobs.pop_front();
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

/// Start `n` prefetch threads; each ends once the cache is dropped.
pub(crate) fn spawn_workers(inner: Weak<Inner>, n: usize) {
    for i in 0..n {
        let weak = inner.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tile-prefetch-{i}"))
            .spawn(move || worker(&weak));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a tile prefetch thread; prefetching less");
        }
    }
}

fn worker(weak: &Weak<Inner>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "tile prefetch thread has no runtime; not prefetching");
            return;
        }
    };
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let Some(queue) = inner.queue.as_ref() else {
            return;
        };
        let Some(job) = queue.pop(Duration::from_millis(200)) else {
            continue;
        };
        // Demand first: wait while demand renderings fill the cores.
        for _ in 0..500 {
            if inner.busy() {
                std::thread::sleep(Duration::from_millis(1));
            } else {
                break;
            }
        }
        rt.block_on(inner.prefetch(job));
        queue.finish();
    }
}
