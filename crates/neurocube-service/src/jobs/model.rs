//! Job and task records as stored (JSON rows of the `jobs` table).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::now_ms;

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
    /// The state's name, as in JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

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
