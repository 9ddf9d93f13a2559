//! Creating, reading and updating job and task records.

use bytes::Bytes;
use futures::TryStreamExt;
use neurocube_store::{Scan, SortRange, Table};
use serde_json::Value;

use super::{
    JobRecord, JobState, Jobs, MAX_CAS_ATTEMPTS, TaskRecord, TaskSpec, TaskState, corrupt, job_key,
    now_ms, push_error, to_bytes,
};
use crate::error::{Result, ServiceError};
use crate::keys;

impl Jobs {
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
            let dk = keys::dedupe(k);
            let mut attempts = 0;
            loop {
                attempts += 1;
                if attempts > MAX_CAS_ATTEMPTS {
                    return Err(ServiceError::Contended {
                        what: format!("the job reservation '{k}'"),
                        attempts: MAX_CAS_ATTEMPTS,
                    });
                }
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
        let mut rows = vec![(job_key(&id)?, to_bytes(&rec))];
        if let Some(b) = keys::job_bucket(&id) {
            rows.push((keys::job_bucket_entry(b), Bytes::new()));
        }
        rows.push((
            keys::active(&id),
            Bytes::from(dedupe.unwrap_or_default().to_string()),
        ));
        self.store.put_many(Table::Jobs, rows).await?;
        self.wake.notify_waiters();
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
        let kk = keys::external(key);
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
                Err(ServiceError::UnknownJob { .. }) => {}
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
            .get_many(Table::Jobs, &[job_key(id)?])
            .await?
            .remove(0)
            .ok_or_else(|| ServiceError::UnknownJob { id: id.to_string() })?;
        serde_json::from_slice(&got).map_err(|e| corrupt(id, &e))
    }

    /// Every job, newest first.
    pub async fn list(&self) -> Result<Vec<JobRecord>> {
        let buckets = Scan::partition(
            self.store.clone(),
            Table::Jobs,
            keys::JOB_BUCKETS.to_vec(),
            SortRange::all(),
        )
        .collect()
        .await?;
        let mut out = Vec::new();
        for (k, _) in buckets.iter().rev() {
            let Some(b) = keys::bucket_of(&k.sort) else {
                continue;
            };
            let rows = Scan::partition(
                self.store.clone(),
                Table::Jobs,
                keys::jobs_partition(b),
                SortRange::all(),
            )
            .rows()
            .and_then(|(k, v)| async move {
                Ok(serde_json::from_slice::<JobRecord>(&v)
                    .map_err(|e| corrupt(&String::from_utf8_lossy(&k.sort), &e)))
            })
            .try_collect::<Vec<_>>()
            .await?;
            let mut bucket = rows.into_iter().collect::<Result<Vec<JobRecord>>>()?;
            bucket.reverse();
            out.extend(bucket);
        }
        Ok(out)
    }

    /// Read-modify-write a job record by compare-and-set. `f` returns false
    /// to leave it unchanged. Returns the record as stored afterwards.
    pub async fn update(
        &self,
        id: &str,
        mut f: impl FnMut(&mut JobRecord) -> bool,
    ) -> Result<JobRecord> {
        let key = job_key(id)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let old = self
                .store
                .get_many(Table::Jobs, std::slice::from_ref(&key))
                .await?
                .remove(0)
                .ok_or_else(|| ServiceError::UnknownJob { id: id.to_string() })?;
            let mut rec: JobRecord = serde_json::from_slice(&old).map_err(|e| corrupt(id, &e))?;
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
        Err(ServiceError::Contended {
            what: format!("job '{id}'"),
            attempts: MAX_CAS_ATTEMPTS,
        })
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
                    keys::task(id, phase, &s.name),
                    None,
                    Some(to_bytes(&t)),
                )
                .await?;
        }
        Ok(())
    }

    /// Tasks of a job (of one phase, or all), in name order.
    pub async fn tasks(&self, id: &str, phase: Option<u32>) -> Result<Vec<(Bytes, TaskRecord)>> {
        let range = phase.map_or_else(SortRange::all, keys::phase_range);
        let rows = Scan::partition(
            self.store.clone(),
            Table::Jobs,
            keys::tasks_partition(id),
            range,
        )
        .collect()
        .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let t: TaskRecord = serde_json::from_slice(&v)
                    .map_err(|e| corrupt(&String::from_utf8_lossy(&k.sort), &e))?;
                Ok((v, t))
            })
            .collect()
    }

    /// Mark a task of an external job done (the ingest command reports each
    /// slab); the job is done when all its tasks are.
    pub async fn complete_task(&self, id: &str, name: &str) -> Result<JobRecord> {
        let job = self.get(id).await?;
        if job.state.is_final() && job.state != JobState::Done {
            return Err(ServiceError::JobEnded {
                id: id.to_string(),
                state: job.state.name().to_string(),
            });
        }
        let key = keys::task(id, 0, name);
        let old = self
            .store
            .get_many(Table::Jobs, std::slice::from_ref(&key))
            .await?
            .remove(0)
            .ok_or_else(|| ServiceError::UnknownTask {
                job: id.to_string(),
                task: name.to_string(),
            })?;
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
            .put_many(Table::Jobs, vec![(keys::active(id), Bytes::new())])
            .await?;
        Ok(rec)
    }
}
