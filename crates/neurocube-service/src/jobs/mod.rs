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
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Being worked on.
    Running,
    /// Finished; every task is done.
    Done,
    /// Stopped by an error (see `errors`).
    Failed,
    /// Stopped by a user.
    Cancelled,
}

impl JobState {
    /// True once the job will not change any more.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Id (sorts by creation time).
    pub id: String,
    /// Kind, e.g. `downsample` or `ingest`.
    pub kind: String,
    /// Parameters of the kind.
    pub params: Value,
    /// State.
    pub state: JobState,
    /// Units done (chunks for downsample, bytes for ingest).
    pub done: u64,
    /// Units in all (an estimate while phases are still being planned).
    pub total: u64,
    /// What the units are.
    pub unit: String,
    /// Current phase.
    pub phase: u32,
    /// The last phase whose tasks were created.
    pub planned_phase: Option<u32>,
    /// Worker (instance/thread) that last claimed a task of it.
    pub holder: Option<String>,
    /// Errors so far, newest last (at most 20 kept).
    pub errors: Vec<String>,
    /// Run by a client (the ingest command), not by server workers.
    #[serde(default)]
    pub external: bool,
    /// Created (ms since the epoch).
    pub created_ms: u64,
    /// First task claimed.
    pub started_ms: Option<u64>,
    /// Last change.
    pub updated_ms: u64,
    /// Reached a final state.
    pub finished_ms: Option<u64>,
}

/// A job as users see it: the record plus rate and ETA.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// The record.
    #[serde(flatten)]
    pub record: JobRecord,
    /// Units per second since the job started.
    pub rate: Option<f64>,
    /// Seconds until done at that rate.
    pub eta_seconds: Option<f64>,
}

impl JobRecord {
    /// Add rate and ETA.
    #[must_use]
    pub fn view(self) -> JobView {
        let end = self.finished_ms.unwrap_or_else(now_ms);
        let rate = self.started_ms.and_then(|s| {
            let secs = end.saturating_sub(s) as f64 / 1e3;
            (secs > 0.0).then(|| self.done as f64 / secs)
        });
        let eta_seconds = match (self.state, rate) {
            (JobState::Done, _) => Some(0.0),
            (s, Some(r)) if r > 0.0 && !s.is_final() => {
                Some(self.total.saturating_sub(self.done) as f64 / r)
            }
            _ => None,
        };
        JobView {
            record: self,
            rate,
            eta_seconds,
        }
    }
}

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not started (or given back after an error).
    Pending,
    /// Held by `holder` until `lease_until_ms`.
    Claimed,
    /// Finished.
    Done,
}

/// One unit of claimable work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Name, unique in its phase.
    pub name: String,
    /// Phase.
    pub phase: u32,
    /// State.
    pub state: TaskState,
    /// Current holder.
    pub holder: Option<String>,
    /// End of the holder's lease.
    pub lease_until_ms: u64,
    /// Failed attempts.
    pub attempts: u32,
    /// Progress units the task accounts for.
    pub units: u64,
    /// What to do (the handler's format).
    pub spec: Value,
}

/// A task to create.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// Name, unique in its phase.
    pub name: String,
    /// Progress units.
    pub units: u64,
    /// What to do.
    pub spec: Value,
}

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

    /// Create a job. With `dedupe`, an unfinished job of the same key is
    /// returned instead (and `false`).
    pub async fn create(
        &self,
        kind: &str,
        params: Value,
        total: u64,
        unit: &str,
        dedupe: Option<&str>,
        external: bool,
    ) -> Result<(JobRecord, bool)> {
        let now = now_ms();
        let id = format!(
            "{now:013}-{:08x}",
            uuid::Uuid::new_v4().as_u64_pair().0 as u32
        );
        if let Some(k) = dedupe {
            let dk = Key::new(DEDUPE.to_vec(), k.as_bytes().to_vec());
            loop {
                if self
                    .store
                    .compare_and_set(Table::Jobs, dk.clone(), None, Some(Bytes::from(id.clone())))
                    .await?
                {
                    break;
                }
                let cur = self
                    .store
                    .get_many(Table::Jobs, std::slice::from_ref(&dk))
                    .await?
                    .remove(0);
                let Some(cur) = cur else { continue };
                let other = String::from_utf8_lossy(&cur).to_string();
                match self.get(&other).await {
                    Ok(j) if !j.state.is_final() => return Ok((j, false)),
                    _ => {
                        // A stale reservation (its job finished or vanished): take it over.
                        if self
                            .store
                            .compare_and_set(
                                Table::Jobs,
                                dk.clone(),
                                Some(cur),
                                Some(Bytes::from(id.clone())),
                            )
                            .await?
                        {
                            break;
                        }
                    }
                }
            }
        }
        let rec = JobRecord {
            id: id.clone(),
            kind: kind.to_string(),
            params,
            state: JobState::Queued,
            done: 0,
            total,
            unit: unit.to_string(),
            phase: 0,
            planned_phase: None,
            holder: None,
            errors: Vec::new(),
            external,
            created_ms: now,
            started_ms: None,
            updated_ms: now,
            finished_ms: None,
        };
        let mut rows = vec![(job_key(&id), to_bytes(&rec))];
        rows.push((
            Key::new(ACTIVE.to_vec(), id.as_bytes().to_vec()),
            Bytes::from(dedupe.unwrap_or_default().to_string()),
        ));
        self.store.put_many(Table::Jobs, rows).await?;
        Ok((rec, true))
    }

    /// Create a job run by a client (e.g. the ingest command) with all its
    /// tasks, or return the job already made for `key` (in any state, so a
    /// re-run resumes it; a failed or cancelled one is reopened).
    pub async fn create_external(
        &self,
        key: &str,
        kind: &str,
        params: Value,
        unit: &str,
        tasks: Vec<TaskSpec>,
    ) -> Result<(JobRecord, bool)> {
        let kk = Key::new(b"extkey".to_vec(), key.as_bytes().to_vec());
        let existing = self
            .store
            .get_many(Table::Jobs, std::slice::from_ref(&kk))
            .await?
            .remove(0);
        if let Some(id) = &existing {
            let id = String::from_utf8_lossy(id).to_string();
            match self.get(&id).await {
                Ok(j) if j.state == JobState::Failed || j.state == JobState::Cancelled => {
                    return Ok((self.reopen(&id).await?, false));
                }
                Ok(j) => return Ok((j, false)),
                Err(ServiceError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let total = tasks.iter().map(|t| t.units).sum();
        let (rec, _) = self.create(kind, params, total, unit, None, true).await?;
        self.create_tasks(&rec.id, 0, tasks).await?;
        if !self
            .store
            .compare_and_set(Table::Jobs, kk, existing, Some(Bytes::from(rec.id.clone())))
            .await?
        {
            // Another client created it at the same moment: use theirs.
            self.cancel(&rec.id).await?;
            return Box::pin(self.create_external(key, kind, Value::Null, unit, Vec::new())).await;
        }
        Ok((rec, true))
    }

    /// A job by id.
    pub async fn get(&self, id: &str) -> Result<JobRecord> {
        let got = self
            .store
            .get_many(Table::Jobs, &[job_key(id)])
            .await?
            .remove(0)
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "job '{id}' does not exist; GET /v1/jobs lists the jobs"
                ))
            })?;
        serde_json::from_slice(&got).map_err(|e| corrupt(&format!("job {id}"), &e))
    }

    /// Every job, newest first.
    pub async fn list(&self) -> Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .store
                .scan(Table::Jobs, JOB, SortRange::all(), token, 1000)
                .await?;
            for (k, v) in page.rows {
                out.push(
                    serde_json::from_slice(&v)
                        .map_err(|e| corrupt(&String::from_utf8_lossy(&k.sort), &e))?,
                );
            }
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        out.reverse();
        Ok(out)
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

    /// Read-modify-write a job record by compare-and-set. `f` returns false
    /// to leave it unchanged. Returns the record as stored afterwards.
    pub async fn update(
        &self,
        id: &str,
        mut f: impl FnMut(&mut JobRecord) -> bool,
    ) -> Result<JobRecord> {
        let key = job_key(id);
        loop {
            let old = self
                .store
                .get_many(Table::Jobs, std::slice::from_ref(&key))
                .await?
                .remove(0)
                .ok_or_else(|| ServiceError::NotFound(format!("job '{id}' does not exist")))?;
            let mut rec: JobRecord =
                serde_json::from_slice(&old).map_err(|e| corrupt(&format!("job {id}"), &e))?;
            if !f(&mut rec) {
                return Ok(rec);
            }
            rec.updated_ms = now_ms();
            if rec.state.is_final() && rec.finished_ms.is_none() {
                rec.finished_ms = Some(rec.updated_ms);
            }
            if self
                .store
                .compare_and_set(Table::Jobs, key.clone(), Some(old), Some(to_bytes(&rec)))
                .await?
            {
                if rec.state.is_final() {
                    self.retire(&rec).await?;
                }
                return Ok(rec);
            }
        }
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

    /// Cancel a job (a no-op on a finished one). Running tasks finish; no new ones start.
    pub async fn cancel(&self, id: &str) -> Result<JobRecord> {
        self.update(id, |r| {
            if r.state.is_final() {
                return false;
            }
            r.state = JobState::Cancelled;
            true
        })
        .await
    }

    /// Create the tasks of a phase; existing ones (maybe done) are kept.
    pub async fn create_tasks(&self, id: &str, phase: u32, specs: Vec<TaskSpec>) -> Result<()> {
        for s in specs {
            let t = TaskRecord {
                name: s.name.clone(),
                phase,
                state: TaskState::Pending,
                holder: None,
                lease_until_ms: 0,
                attempts: 0,
                units: s.units,
                spec: s.spec,
            };
            self.store
                .compare_and_set(
                    Table::Jobs,
                    task_key(id, phase, &s.name),
                    None,
                    Some(to_bytes(&t)),
                )
                .await?;
        }
        Ok(())
    }

    /// Tasks of a job (of one phase, or all), in name order.
    pub async fn tasks(&self, id: &str, phase: Option<u32>) -> Result<Vec<(Bytes, TaskRecord)>> {
        let range = match phase {
            Some(p) => SortRange {
                start: Some(Bytes::from(format!("{p:04}/"))),
                end: Some(Bytes::from(format!("{p:04}0"))),
            },
            None => SortRange::all(),
        };
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .store
                .scan(Table::Jobs, &task_partition(id), range.clone(), token, 1000)
                .await?;
            for (k, v) in page.rows {
                let t: TaskRecord = serde_json::from_slice(&v)
                    .map_err(|e| corrupt(&String::from_utf8_lossy(&k.sort), &e))?;
                out.push((v, t));
            }
            token = page.next;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Mark a task of an external job done (the ingest command reports each
    /// slab); the job is done when all its tasks are.
    pub async fn complete_task(&self, id: &str, name: &str) -> Result<JobRecord> {
        let job = self.get(id).await?;
        if job.state.is_final() && job.state != JobState::Done {
            return Err(ServiceError::Conflict(format!(
                "job '{id}' is {:?}; start a new one",
                job.state
            )));
        }
        let key = task_key(id, 0, name);
        let old = self
            .store
            .get_many(Table::Jobs, std::slice::from_ref(&key))
            .await?
            .remove(0)
            .ok_or_else(|| ServiceError::NotFound(format!("job '{id}' has no task '{name}'")))?;
        let mut t: TaskRecord = serde_json::from_slice(&old).map_err(|e| corrupt(name, &e))?;
        if t.state == TaskState::Done {
            return Ok(job);
        }
        t.state = TaskState::Done;
        let units = t.units;
        if !self
            .store
            .compare_and_set(Table::Jobs, key, Some(old), Some(to_bytes(&t)))
            .await?
        {
            return self.get(id).await;
        }
        let remaining = self
            .tasks(id, Some(0))
            .await?
            .iter()
            .filter(|(_, t)| t.state != TaskState::Done)
            .count();
        let holder = self.instance.clone();
        self.update(id, |r| {
            r.done += units;
            r.started_ms.get_or_insert_with(now_ms);
            r.holder = Some(holder.clone());
            if r.state == JobState::Queued {
                r.state = JobState::Running;
            }
            if remaining == 0 {
                r.state = JobState::Done;
                r.done = r.done.max(r.total);
            }
            true
        })
        .await
    }

    /// Record a failure of an external job (it stays resumable: state failed,
    /// finished tasks kept).
    pub async fn fail(&self, id: &str, error: String) -> Result<JobRecord> {
        self.update(id, |r| {
            if r.state.is_final() {
                return false;
            }
            push_error(&mut r.errors, error.clone());
            r.state = JobState::Failed;
            true
        })
        .await
    }

    /// Reopen a failed or cancelled external job so a re-run can resume it.
    pub async fn reopen(&self, id: &str) -> Result<JobRecord> {
        let rec = self
            .update(id, |r| {
                if r.state == JobState::Failed || r.state == JobState::Cancelled {
                    r.state = JobState::Running;
                    r.finished_ms = None;
                    true
                } else {
                    false
                }
            })
            .await?;
        self.store
            .put_many(
                Table::Jobs,
                vec![(
                    Key::new(ACTIVE.to_vec(), id.as_bytes().to_vec()),
                    Bytes::new(),
                )],
            )
            .await?;
        Ok(rec)
    }

    /// Do one step of work on any active job (or only on `only`): plan a
    /// phase, run one task, or advance a phase. Returns false if there was
    /// nothing to do.
    pub async fn work_once(&self, worker: &str, only: Option<&str>) -> Result<bool> {
        for (id, _) in self.active_ids().await? {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            let rec = match self.get(&id).await {
                Ok(r) => r,
                Err(ServiceError::NotFound(_)) => {
                    self.store
                        .delete_many(
                            Table::Jobs,
                            &[Key::new(ACTIVE.to_vec(), id.as_bytes().to_vec())],
                        )
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if rec.state.is_final() {
                self.retire(&rec).await?;
                continue;
            }
            if rec.external {
                continue;
            }
            let Some(h) = self.handler(&rec.kind) else {
                continue;
            };
            if self.step(worker, &rec, h.as_ref()).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn step(&self, worker: &str, rec: &JobRecord, h: &dyn JobHandler) -> Result<bool> {
        let id = rec.id.as_str();
        let phase = rec.phase;
        if rec.planned_phase != Some(phase) {
            match h.plan(rec, phase).await {
                Ok(None) => {
                    if let Err(e) = h.finish(rec).await {
                        self.fail(id, e.to_string()).await?;
                        return Ok(true);
                    }
                    self.update(id, |r| {
                        if r.state.is_final() || r.phase != phase {
                            return false;
                        }
                        r.state = JobState::Done;
                        r.total = r.total.max(r.done);
                        r.done = r.total;
                        true
                    })
                    .await?;
                }
                Ok(Some(specs)) => {
                    self.create_tasks(id, phase, specs).await?;
                    self.update(id, |r| {
                        if r.phase != phase || r.planned_phase == Some(phase) {
                            return false;
                        }
                        r.planned_phase = Some(phase);
                        if r.state == JobState::Queued {
                            r.state = JobState::Running;
                            r.started_ms = Some(now_ms());
                        }
                        true
                    })
                    .await?;
                }
                Err(e) => {
                    self.fail(id, format!("planning phase {phase}: {e}"))
                        .await?;
                }
            }
            return Ok(true);
        }
        let now = now_ms();
        let tasks = self.tasks(id, Some(phase)).await?;
        let claimable = tasks.iter().find(|(_, t)| {
            t.state == TaskState::Pending
                || (t.state == TaskState::Claimed && t.lease_until_ms < now)
        });
        let Some((old, task)) = claimable else {
            if tasks.iter().all(|(_, t)| t.state == TaskState::Done) {
                self.update(id, |r| {
                    if r.phase != phase || r.state.is_final() {
                        return false;
                    }
                    r.phase += 1;
                    true
                })
                .await?;
                return Ok(true);
            }
            return Ok(false);
        };
        let holder = format!("{}/{worker}", self.instance);
        let lease = self.config().lease;
        let mut claimed = task.clone();
        claimed.state = TaskState::Claimed;
        claimed.holder = Some(holder.clone());
        claimed.lease_until_ms = now + lease.as_millis() as u64;
        let key = task_key(id, phase, &task.name);
        let new = to_bytes(&claimed);
        if !self
            .store
            .compare_and_set(
                Table::Jobs,
                key.clone(),
                Some(old.clone()),
                Some(new.clone()),
            )
            .await?
        {
            return Ok(true); // someone else took it; look again
        }
        let result = h.run(rec, &claimed).await;
        let mut finished = claimed.clone();
        match result {
            Ok(units) => {
                finished.state = TaskState::Done;
                self.store
                    .compare_and_set(Table::Jobs, key, Some(new), Some(to_bytes(&finished)))
                    .await?;
                self.update(id, |r| {
                    r.done += units;
                    r.total = r.total.max(r.done);
                    r.holder = Some(holder.clone());
                    if r.started_ms.is_none() {
                        r.started_ms = Some(now);
                    }
                    true
                })
                .await?;
            }
            Err(e) => {
                finished.state = TaskState::Pending;
                finished.attempts += 1;
                finished.holder = None;
                let msg = format!("task {} (attempt {}): {e}", task.name, finished.attempts);
                tracing::warn!(job = id, error = %msg, "job task failed");
                self.store
                    .compare_and_set(Table::Jobs, key, Some(new), Some(to_bytes(&finished)))
                    .await?;
                let give_up = finished.attempts >= MAX_ATTEMPTS;
                self.update(id, |r| {
                    push_error(&mut r.errors, msg.clone());
                    if give_up && !r.state.is_final() {
                        r.state = JobState::Failed;
                    }
                    true
                })
                .await?;
            }
        }
        let pause = self.config().pause;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Ok(true)
    }

    /// Work on one job in this task until it reaches a final state (the
    /// command line and the demo use this instead of background workers).
    pub async fn run_to_end(&self, id: &str, progress: impl Fn(&JobRecord)) -> Result<JobRecord> {
        loop {
            let did = self.work_once("cli", Some(id)).await?;
            let rec = self.get(id).await?;
            progress(&rec);
            if rec.state.is_final() {
                return Ok(rec);
            }
            if !did {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Start the configured number of worker tasks on the current runtime;
    /// `tick` runs before each idle pause (e.g. to start automatic jobs).
    pub fn spawn_workers(
        self: &Arc<Self>,
        tick: Option<Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>>,
    ) {
        let n = self.config().workers;
        for w in 0..n {
            let jobs = self.clone();
            let tick = if w == 0 { tick.clone() } else { None };
            tokio::spawn(async move {
                let name = format!("w{w}");
                loop {
                    let did = match jobs.work_once(&name, None).await {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(worker = %name, error = %e, "job worker step failed");
                            false
                        }
                    };
                    if !did {
                        if let Some(t) = &tick {
                            t().await;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurocube_store::memory::MemoryStore;
    use std::sync::Mutex;

    /// Two phases of three tasks; records which tasks ran.
    struct Counting {
        ran: Mutex<Vec<String>>,
        fail_once: Mutex<bool>,
    }

    impl JobHandler for Counting {
        fn plan<'a>(
            &'a self,
            _job: &'a JobRecord,
            phase: u32,
        ) -> BoxFuture<'a, Result<Option<Vec<TaskSpec>>>> {
            Box::pin(async move {
                Ok((phase < 2).then(|| {
                    (0..3)
                        .map(|i| TaskSpec {
                            name: format!("t{i}"),
                            units: 10,
                            spec: Value::Null,
                        })
                        .collect()
                }))
            })
        }

        fn run<'a>(
            &'a self,
            _job: &'a JobRecord,
            task: &'a TaskRecord,
        ) -> BoxFuture<'a, Result<u64>> {
            Box::pin(async move {
                let mut f = self.fail_once.lock().unwrap();
                if *f && task.name == "t1" && task.phase == 1 {
                    *f = false;
                    return Err(ServiceError::Task("flaky".into()));
                }
                self.ran
                    .lock()
                    .unwrap()
                    .push(format!("{}/{}", task.phase, task.name));
                Ok(task.units)
            })
        }

        fn finish<'a>(&'a self, _job: &'a JobRecord) -> BoxFuture<'a, Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn phases_run_in_order_every_task_once_and_errors_retry() {
        let jobs = Jobs::new(Arc::new(MemoryStore::default()));
        let h = Arc::new(Counting {
            ran: Mutex::default(),
            fail_once: Mutex::new(true),
        });
        jobs.register("count", h.clone());
        let (j, new) = jobs
            .create("count", Value::Null, 60, "things", Some("k"), false)
            .await
            .unwrap();
        assert!(new);
        let (again, new) = jobs
            .create("count", Value::Null, 60, "things", Some("k"), false)
            .await
            .unwrap();
        assert!(!new);
        assert_eq!(again.id, j.id);
        let done = jobs.run_to_end(&j.id, |_| {}).await.unwrap();
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.done, 60);
        assert_eq!(done.errors.len(), 1, "{:?}", done.errors);
        assert_eq!(
            *h.ran.lock().unwrap(),
            vec!["0/t0", "0/t1", "0/t2", "1/t0", "1/t1", "1/t2"]
        );
        // The dedupe key is free again.
        let (next, new) = jobs
            .create("count", Value::Null, 0, "things", Some("k"), false)
            .await
            .unwrap();
        assert!(new);
        assert_ne!(next.id, j.id);
        let c = jobs.cancel(&next.id).await.unwrap();
        assert_eq!(c.state, JobState::Cancelled);
        assert!(!jobs.work_once("w", Some(&next.id)).await.unwrap());
        let mut ids: Vec<String> = jobs
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        ids.sort();
        let mut want = vec![j.id.clone(), next.id.clone()];
        want.sort();
        assert_eq!(ids, want);
    }

    #[tokio::test]
    async fn an_expired_claim_is_taken_over() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let jobs = Jobs::new(store.clone());
        let h = Arc::new(Counting {
            ran: Mutex::default(),
            fail_once: Mutex::new(false),
        });
        jobs.register("count", h.clone());
        let (j, _) = jobs
            .create("count", Value::Null, 60, "things", None, false)
            .await
            .unwrap();
        jobs.work_once("w", None).await.unwrap(); // plans phase 0
        // A dead worker holds t0 with a lease in the past, t1 with one in the future.
        let mut tasks = jobs.tasks(&j.id, Some(0)).await.unwrap();
        for (i, lease) in [(0usize, 1u64), (1, now_ms() + 3_600_000)] {
            let (old, mut t) = tasks.remove(0);
            let _ = i;
            t.state = TaskState::Claimed;
            t.holder = Some("dead/w0".into());
            t.lease_until_ms = lease;
            assert!(
                store
                    .compare_and_set(
                        Table::Jobs,
                        task_key(&j.id, 0, &t.name),
                        Some(old),
                        Some(to_bytes(&t))
                    )
                    .await
                    .unwrap()
            );
        }
        for _ in 0..10 {
            jobs.work_once("w", None).await.unwrap();
        }
        // t0 (expired) and t2 ran; t1 is still reserved, so phase 0 cannot end.
        assert_eq!(*h.ran.lock().unwrap(), vec!["0/t0", "0/t2"]);
        let r = jobs.get(&j.id).await.unwrap();
        assert_eq!((r.phase, r.done, r.state), (0, 20, JobState::Running));
    }
}
