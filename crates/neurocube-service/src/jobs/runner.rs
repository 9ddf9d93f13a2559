//! Working on jobs: claiming tasks with leases, phases, and the job worker.

use std::sync::Arc;
use std::time::Duration;

use neurocube_store::Table;

use super::{
    JobHandler, JobRecord, JobState, Jobs, MAX_ATTEMPTS, TaskState, now_ms, push_error, to_bytes,
};
use crate::background::{Worker, WorkerState};
use crate::error::{Result, ServiceError};
use crate::keys;

impl Jobs {
    /// Do one step of work on any active job (or only on `only`): plan a
    /// phase, run one task, or advance a phase. Returns false if there was
    /// nothing to do.
    pub async fn work_once(&self, worker: &str, only: Option<&str>) -> Result<bool> {
        for id in self.active_ids().await? {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            let rec = match self.get(&id).await {
                Ok(r) => r,
                Err(ServiceError::UnknownJob { .. }) => {
                    self.store
                        .delete_many(Table::Jobs, &[keys::active(&id)])
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
                        // Retried at the next step; a job whose finish keeps
                        // failing fails.
                        let msg = format!("finishing: {e}");
                        tracing::warn!(job = id, error = %msg, "finishing a job failed");
                        let r = self
                            .update(id, |r| {
                                push_error(&mut r.errors, msg.clone());
                                let tries = r
                                    .errors
                                    .iter()
                                    .filter(|m| m.starts_with("finishing: "))
                                    .count();
                                if tries as u32 >= MAX_FINISH_ATTEMPTS && !r.state.is_final() {
                                    r.state = JobState::Failed;
                                }
                                true
                            })
                            .await?;
                        if r.state == JobState::Failed {
                            h.failed(&r).await?;
                        }
                        return Ok(false);
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
                    let rec = self
                        .fail(id, format!("planning phase {phase}: {e}"))
                        .await?;
                    h.failed(&rec).await?;
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
        let key = keys::task(id, phase, &task.name);
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
        // The lease is renewed while the task runs (a third of it at a
        // time), so a long task is not taken over by another worker.
        let run = h.run(rec, &claimed);
        tokio::pin!(run);
        let (mut held, mut new) = (claimed.clone(), new);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                () = tokio::time::sleep(lease / 3) => {
                    let mut renewed = held.clone();
                    renewed.lease_until_ms = now_ms() + lease.as_millis() as u64;
                    let bytes = to_bytes(&renewed);
                    if self
                        .store
                        .compare_and_set(Table::Jobs, key.clone(), Some(new.clone()), Some(bytes.clone()))
                        .await?
                    {
                        (held, new) = (renewed, bytes);
                    }
                }
            }
        };
        let mut finished = held;
        match result {
            Ok(units) => {
                finished.state = TaskState::Done;
                // Counted by whoever holds the task (after a lost lease,
                // the worker that took it over).
                if !self
                    .store
                    .compare_and_set(Table::Jobs, key, Some(new), Some(to_bytes(&finished)))
                    .await?
                {
                    return Ok(true);
                }
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
                let rec = self
                    .update(id, |r| {
                        push_error(&mut r.errors, msg.clone());
                        if give_up && !r.state.is_final() {
                            r.state = JobState::Failed;
                        }
                        true
                    })
                    .await?;
                if give_up && rec.state == JobState::Failed {
                    h.failed(&rec).await?;
                }
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
}

/// A job whose finish fails this many times fails.
const MAX_FINISH_ATTEMPTS: u32 = 10;

/// How often an idle job worker looks for jobs created by other server
/// instances (jobs created here wake it at once).
const POLL: Duration = Duration::from_secs(1);

/// One job worker: claims and runs tasks of any active job, one per step.
pub struct JobWorker {
    jobs: Arc<Jobs>,
    name: String,
}

impl JobWorker {
    /// Worker number `n` of this process.
    #[must_use]
    pub fn new(jobs: Arc<Jobs>, n: usize) -> Self {
        Self {
            jobs,
            name: format!("w{n}"),
        }
    }
}

#[async_trait::async_trait]
impl Worker for JobWorker {
    fn name(&self) -> String {
        format!("jobs/{}", self.name)
    }

    async fn work(&mut self, stopping: bool) -> Result<WorkerState> {
        if stopping {
            // Jobs live in the store; a claimed task's lease runs out and
            // another worker (or this one after a restart) takes it over.
            return Ok(WorkerState::Done);
        }
        Ok(if self.jobs.work_once(&self.name, None).await? {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        })
    }

    async fn wait_for_work(&mut self) {
        tokio::select! {
            () = self.jobs.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{JobsConfig, TaskRecord, TaskSpec};
    use super::*;
    use futures::future::BoxFuture;
    use neurocube_store::Store;
    use neurocube_store::memory::MemoryStore;
    use serde_json::Value;
    use std::sync::Mutex;

    /// Two phases of three tasks; records which tasks ran.
    struct Counting {
        ran: Mutex<Vec<String>>,
        fail_once: Mutex<bool>,
        /// How long each task takes.
        takes: std::time::Duration,
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
                tokio::time::sleep(self.takes).await;
                let mut f = self.fail_once.lock().unwrap();
                if *f && task.name == "t1" && task.phase == 1 {
                    *f = false;
                    return Err(ServiceError::Internal {
                        during: "testing",
                        reason: "flaky".into(),
                    });
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
            takes: std::time::Duration::ZERO,
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
            takes: std::time::Duration::ZERO,
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
                        keys::task(&j.id, 0, &t.name),
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

    #[tokio::test]
    async fn a_task_longer_than_the_lease_keeps_it_and_runs_once() {
        use std::time::Duration;
        let jobs = Arc::new(Jobs::new(Arc::new(MemoryStore::default())));
        jobs.configure(JobsConfig {
            workers: 0,
            lease: Duration::from_millis(150),
            pause: Duration::ZERO,
        });
        let h = Arc::new(Counting {
            ran: Mutex::default(),
            fail_once: Mutex::new(false),
            takes: Duration::from_millis(400),
        });
        jobs.register("count", h.clone());
        let (j, _) = jobs
            .create("count", Value::Null, 60, "things", None, false)
            .await
            .unwrap();
        // Two workers at once (two servers' workers): without renewal the
        // idle one would take over each task after 150 ms and run it again.
        let worker = |name: &'static str| {
            let (jobs, id) = (jobs.clone(), j.id.clone());
            async move {
                while !jobs.get(&id).await.unwrap().state.is_final() {
                    if !jobs.work_once(name, None).await.unwrap() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        };
        // Taken over again and again, the job would never end.
        tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(worker("a"), worker("b"))
        })
        .await
        .expect("the job ends: no task is taken over while it runs");
        let mut ran = h.ran.lock().unwrap().clone();
        ran.sort();
        assert_eq!(ran, vec!["0/t0", "0/t1", "0/t2", "1/t0", "1/t1", "1/t2"]);
        let done = jobs.get(&j.id).await.unwrap();
        assert_eq!((done.state, done.done), (JobState::Done, 60));
    }
}
