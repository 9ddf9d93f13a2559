//! Background jobs kept in the store (`jobs` table), shared by every worker
//! of every server instance and resumable after a crash.
//!
//! A job has a kind (`downsample`, `ingest`, and whatever comes next: kinds
//! are strings with a registered [`JobHandler`]), JSON parameters, a state,
//! progress (`done` of `total` units) and its errors. Its work is split into
//! tasks, grouped in phases run one after the other (a downsample job has one
//! phase per level). A worker claims a task by compare-and-set with a lease;
//! a task whose holder died is claimed again when its lease runs out, and a
//! finished task is never run again, so a restarted server resumes where the
//! killed one stopped.
//!
//! Rows (`jobs` table, keys in `keys.rs`): the record, bucketed by creation
//! time; `active/{id}` jobs not yet finished; `task/{id}` its tasks;
//! `dedupe/{key}` the one active job for a key (e.g. one downsample job per
//! channel). Job workers ([`JobWorker`]) run under the background runner.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use neurocube_store::{Key, Scan, SortRange, Store, Table};
use serde::Serialize;
use tokio::sync::Notify;

use crate::error::{Result, ServiceError};
use crate::keys;

/// A task that failed this many times fails its job.
const MAX_ATTEMPTS: u32 = 3;
/// Compare-and-set attempts on one job record before giving up (503).
const MAX_CAS_ATTEMPTS: u32 = 64;

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

mod model;
mod records;
mod runner;

pub use model::{JobRecord, JobState, JobView, TaskRecord, TaskSpec, TaskState};
pub use runner::JobWorker;

/// What a kind of job does.
pub trait JobHandler: Send + Sync {
    /// The tasks of `phase`; `None` when the job has no such phase (it is done).
    fn plan<'a>(
        &'a self,
        job: &'a JobRecord,
        phase: u32,
    ) -> BoxFuture<'a, Result<Option<Vec<TaskSpec>>>>;
    /// Do one task; returns the progress units done.
    fn run<'a>(&'a self, job: &'a JobRecord, task: &'a TaskRecord) -> BoxFuture<'a, Result<u64>>;
    /// Called once when every phase is done, before the job is marked done.
    fn finish<'a>(&'a self, job: &'a JobRecord) -> BoxFuture<'a, Result<()>>;

    /// Called when the job has failed for good (a task failed too often, or
    /// planning failed), to record it where users look.
    fn failed<'a>(&'a self, _job: &'a JobRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Settings of the workers.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Job workers in this process (0: jobs run only where asked, e.g. by
    /// another server instance or the command line).
    pub workers: usize,
    /// How long a claimed task stays reserved to its holder.
    pub lease: Duration,
    /// Pause between tasks (leaves the store to interactive requests).
    pub pause: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            lease: Duration::from_secs(30),
            pause: Duration::ZERO,
        }
    }
}

/// Jobs over a store.
pub struct Jobs {
    store: Arc<dyn Store>,
    handlers: RwLock<HashMap<String, Arc<dyn JobHandler>>>,
    instance: String,
    config: RwLock<JobsConfig>,
    /// Woken when a job is created here.
    wake: Notify,
}

/// The key of a job record, or `UnknownJob` for a string that is no job id.
fn job_key(id: &str) -> Result<Key> {
    keys::job(id).ok_or_else(|| ServiceError::UnknownJob { id: id.to_string() })
}

fn to_bytes<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn corrupt(key: &str, e: &serde_json::Error) -> ServiceError {
    ServiceError::corrupt_json("job", key, e)
}

fn push_error(errors: &mut Vec<String>, e: String) {
    errors.push(e);
    if errors.len() > 20 {
        errors.remove(0);
    }
}

impl Jobs {
    /// Jobs over a store; `instance` names this process in `holder`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        let instance = format!("{:08x}", uuid::Uuid::new_v4().as_u64_pair().0 as u32);
        Self {
            store,
            handlers: RwLock::default(),
            instance,
            config: RwLock::new(JobsConfig::default()),
            wake: Notify::new(),
        }
    }

    /// This process's name in `holder`.
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Change the worker settings (before the workers start).
    pub fn configure(&self, c: JobsConfig) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
    }

    /// The worker settings.
    #[must_use]
    pub fn config(&self) -> JobsConfig {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Register the handler of a kind.
    pub fn register(&self, kind: &str, h: Arc<dyn JobHandler>) {
        self.handlers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(kind.to_string(), h);
    }

    fn handler(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.handlers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kind)
            .cloned()
    }

    /// Ids of the jobs not yet finished (every one of them, however many).
    async fn active_ids(&self) -> Result<Vec<String>> {
        Scan::partition(
            self.store.clone(),
            Table::Jobs,
            keys::ACTIVE.to_vec(),
            SortRange::all(),
        )
        .rows()
        .map_ok(|(k, _)| String::from_utf8_lossy(&k.sort).to_string())
        .try_collect()
        .await
        .map_err(ServiceError::from)
    }

    /// Drop a finished job from the active list and release its dedupe key.
    async fn retire(&self, rec: &JobRecord) -> Result<()> {
        let ak = keys::active(&rec.id);
        let dedupe = self
            .store
            .get_many(Table::Jobs, std::slice::from_ref(&ak))
            .await?
            .remove(0);
        if let Some(d) = dedupe.filter(|d| !d.is_empty()) {
            let dk = keys::dedupe(&String::from_utf8_lossy(&d));
            self.store
                .compare_and_set(Table::Jobs, dk, Some(Bytes::from(rec.id.clone())), None)
                .await?;
        }
        self.store.delete_many(Table::Jobs, &[ak]).await?;
        Ok(())
    }
}
