//! Retiring versions: the rows and indexes of versions that expired or
//! failed go to the purge queue (their records stay, marked `purged`).

use std::sync::Arc;
use std::time::Duration;

use neurocube_core::DatasetName;

use super::Annotations;
use crate::background::{Worker, WorkerState};
use crate::error::Result;
use crate::jobs::now_ms;
use crate::keys;
use crate::purge::RowsEntry;

impl Annotations {
    /// Hand the rows of every version that expired or failed to the purge
    /// queue, and mark it purged (its record stays, so it is still listed
    /// and queries naming it are told it expired). Returns how many.
    pub async fn retire_versions(&self) -> Result<usize> {
        let now = now_ms() as i64;
        let mut retired = 0;
        for dataset in self.catalog.datasets().await? {
            let Ok(ds) = DatasetName::parse(&dataset.name) else {
                continue;
            };
            for v in self.versions_shared(&ds).await?.iter() {
                if v.purged || !v.retired_at(now) {
                    continue;
                }
                for (name, t) in &v.tables {
                    self.purger
                        .enqueue_rows(
                            &keys::version_prefix(t.uid, v.version),
                            &RowsEntry {
                                what: format!("version {} of {ds}/{name}", v.version),
                                table: None,
                            },
                        )
                        .await?;
                }
                self.set_version(&ds, v.version, |r| r.purged = true)
                    .await?;
                tracing::info!(dataset = %ds, version = v.version, "version retired: its rows are purged");
                retired += 1;
            }
        }
        if retired > 0 {
            self.purger.wake();
        }
        Ok(retired)
    }
}

/// How often expired versions are looked for.
const RETIRE_EVERY: Duration = Duration::from_secs(60);

/// The worker that hands expired and failed versions' rows to the purge
/// queue ([`Annotations::retire_versions`]), once a minute.
pub struct Retirer(Arc<Annotations>);

impl Retirer {
    /// The worker for these annotations.
    #[must_use]
    pub fn new(ann: &Arc<Annotations>) -> Self {
        Self(ann.clone())
    }
}

#[async_trait::async_trait]
impl Worker for Retirer {
    fn name(&self) -> String {
        "version-retirer".into()
    }

    async fn work(&mut self, stopping: bool) -> Result<WorkerState> {
        if stopping {
            return Ok(WorkerState::Done);
        }
        self.0.retire_versions().await?;
        Ok(WorkerState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(RETIRE_EVERY).await;
    }
}
