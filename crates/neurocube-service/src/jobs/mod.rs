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
//! Rows (`jobs` table): `job/{id}` the record; `active/{id}` jobs not yet
//! finished; `task/{id}/{phase:04}/{name}` tasks; `dedupe/{key}` the one
//! active job for a key (e.g. one downsample job per channel).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use neurocube_store::{Key, SortRange, Store, Table};
use serde::Serialize;

use crate::error::{Result, ServiceError};

const JOB: &[u8] = b"job";
const ACTIVE: &[u8] = b"active";
const DEDUPE: &[u8] = b"dedupe";
/// A task that failed this many times fails its job.
const MAX_ATTEMPTS: u32 = 3;

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
}

/// Settings of the workers.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Worker tasks in this process.
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
}

fn task_partition(id: &str) -> Vec<u8> {
    format!("task/{id}").into_bytes()
}

fn task_key(id: &str, phase: u32, name: &str) -> Key {
    Key::new(
        task_partition(id),
        format!("{phase:04}/{name}").into_bytes(),
    )
}

fn job_key(id: &str) -> Key {
    Key::new(JOB.to_vec(), id.as_bytes().to_vec())
}

fn to_bytes<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn corrupt(what: &str, e: &serde_json::Error) -> ServiceError {
    ServiceError::CorruptChunk {
        key: what.to_string(),
        reason: e.to_string(),
    }
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
        }
    }

    /// This process's name in `holder`.
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Change the worker settings (before [`Jobs::spawn_workers`]).
    pub fn configure(&self, c: JobsConfig) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
    }

    fn config(&self) -> JobsConfig {
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

    async fn active_ids(&self) -> Result<Vec<(String, Bytes)>> {
        let page = self
            .store
            .scan(Table::Jobs, ACTIVE, SortRange::all(), None, 10_000)
            .await?;
        Ok(page
            .rows
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k.sort).to_string(), v))
            .collect())
    }

    /// Drop a finished job from the active list and release its dedupe key.
    async fn retire(&self, rec: &JobRecord) -> Result<()> {
        let ak = Key::new(ACTIVE.to_vec(), rec.id.as_bytes().to_vec());
        let dedupe = self
            .store
            .get_many(Table::Jobs, std::slice::from_ref(&ak))
            .await?
            .remove(0);
        if let Some(d) = dedupe.filter(|d| !d.is_empty()) {
            let dk = Key::new(DEDUPE.to_vec(), d.to_vec());
            self.store
                .compare_and_set(Table::Jobs, dk, Some(Bytes::from(rec.id.clone())), None)
                .await?;
        }
        self.store.delete_many(Table::Jobs, &[ak]).await?;
        Ok(())
    }
}
