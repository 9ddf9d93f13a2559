//! The NeuroBlaze idea, for annotation rows: group commit. Requests hand
//! their rows (already validated, with index entries and ids) to the batch
//! writer and wait; the writer gathers the rows of every request waiting
//! into one store write (`Store::put_rows`: one commit and one sync on the
//! embedded engine) and answers each request only when that write has
//! returned, so an acknowledged row is durable. The queue is bounded in
//! rows: beyond it a request gets 503 with `Retry-After` at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use neurocube_store::{Key, Store, Table};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use tokio::sync::{Notify, oneshot};

use crate::background::{Worker, WorkerState};
use crate::error::{Result, ServiceError};
use crate::keys;

/// Settings of the batch writer (`[annotations]`).
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// Rows waiting at most (beyond: 503).
    pub queue_rows: usize,
    /// Rows per store write at most.
    pub batch_rows: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_rows: 1 << 20,
            batch_rows: 1 << 16,
        }
    }
}

/// What a request writes: store rows of any table, and per annotation
/// table the rows it adds and invalidates (for the row counts).
#[derive(Debug, Default)]
pub struct WriteSet {
    /// Store rows (annotation rows, index entries).
    pub puts: Vec<(Table, Key, Bytes)>,
    /// Per table uid: (rows added, rows invalidated).
    pub counts: Vec<(u64, i64, i64)>,
    /// Annotation rows it carries (for the queue bound and the metrics).
    pub rows: usize,
}

struct Pending {
    set: WriteSet,
    ack: oneshot::Sender<Result<()>>,
}

/// The queue and its metrics.
pub struct BatchWriter {
    store: Arc<dyn Store>,
    config: WriterConfig,
    queue: Mutex<VecDeque<Pending>>,
    queued_rows: AtomicUsize,
    wake: Notify,
    /// This process's name in the row-count shards.
    instance: String,
    /// This process's cumulative counts per table uid (its shard's value).
    totals: Mutex<HashMap<u64, (i64, i64)>>,
    depth: IntGauge,
    batch_size: Histogram,
    commit_seconds: Histogram,
    rejected: IntCounter,
}

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchWriter {
    /// A writer over a store, its metrics in `registry`.
    #[must_use]
    #[allow(clippy::expect_used)] // startup: static metric names
    pub fn new(store: Arc<dyn Store>, config: WriterConfig, registry: &Registry) -> Self {
        let depth = IntGauge::new(
            "neurocube_annotation_queue_rows",
            "Annotation rows waiting for the batch writer",
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "neurocube_annotation_batch_rows",
                "Annotation rows per group commit",
            )
            .buckets(vec![
                1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
            ]),
        )
        .expect("valid metric");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "neurocube_annotation_commit_seconds",
                "Latency of one group commit of annotation rows",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
        )
        .expect("valid metric");
        let rejected = IntCounter::new(
            "neurocube_annotation_rejected_total",
            "Annotation writes refused because the queue was full",
        )
        .expect("valid metric");
        for m in [
            Box::new(depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(batch_size.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(rejected.clone()),
        ] {
            let _ = registry.register(m);
        }
        Self {
            store,
            config,
            queue: Mutex::default(),
            queued_rows: AtomicUsize::new(0),
            wake: Notify::new(),
            instance: format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0),
            totals: Mutex::default(),
            depth,
            batch_size,
            commit_seconds,
            rejected,
        }
    }

    fn overloaded(&self) -> ServiceError {
        self.rejected.inc();
        ServiceError::Overloaded {
            resource: "the annotation write queue (rows)",
            limit: self.config.queue_rows as u64,
            setting: "annotations.queue_rows",
            retry_after: Duration::from_secs(1),
        }
    }

    /// The 503 that [`BatchWriter::submit`] would give `rows` now, if any:
    /// for work to skip when its write would be refused (it is not a
    /// reservation).
    pub fn check_room(&self, rows: usize) -> Result<()> {
        let before = self.queued_rows.load(Ordering::SeqCst);
        if before > 0 && before + rows.max(1) > self.config.queue_rows {
            return Err(self.overloaded());
        }
        Ok(())
    }

    /// Queue a write and wait until it is durable (or failed).
    pub async fn submit(&self, set: WriteSet) -> Result<()> {
        let n = set.rows.max(1);
        let before = self.queued_rows.fetch_add(n, Ordering::SeqCst);
        if before > 0 && before + n > self.config.queue_rows {
            self.queued_rows.fetch_sub(n, Ordering::SeqCst);
            return Err(self.overloaded());
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.queue).push_back(Pending { set, ack: tx });
        self.depth.set(self.queued() as i64);
        self.wake.notify_one();
        rx.await.unwrap_or(Err(ServiceError::ShuttingDown))
    }

    /// Rows waiting.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queued_rows.load(Ordering::SeqCst)
    }

    /// Rows written by every process to a table, and rows invalidated.
    pub async fn counts(&self, uid: u64) -> Result<(i64, i64)> {
        let shards = neurocube_store::Scan::partition(
            self.store.clone(),
            Table::Meta,
            keys::table_counts_partition(uid),
            neurocube_store::SortRange::all(),
        )
        .collect()
        .await?;
        let mut total = (0, 0);
        for (_, v) in shards {
            if v.len() == 16 {
                let mut a = [0u8; 8];
                a.copy_from_slice(&v[..8]);
                total.0 += i64::from_le_bytes(a);
                a.copy_from_slice(&v[8..]);
                total.1 += i64::from_le_bytes(a);
            }
        }
        Ok(total)
    }

    /// Commit what is waiting (up to `batch_rows`); false if nothing was.
    async fn commit(&self) -> bool {
        let mut taken = Vec::new();
        let mut rows = 0;
        {
            let mut q = lock(&self.queue);
            while let Some(p) = q.front() {
                if !taken.is_empty() && rows + p.set.rows > self.config.batch_rows {
                    break;
                }
                rows += p.set.rows.max(1);
                if let Some(p) = q.pop_front() {
                    taken.push(p);
                }
            }
        }
        if taken.is_empty() {
            return false;
        }
        let started = Instant::now();
        let mut puts =
            Vec::with_capacity(taken.iter().map(|p| p.set.puts.len()).sum::<usize>() + 4);
        let mut changed = HashMap::new();
        for p in &mut taken {
            puts.append(&mut p.set.puts);
            for &(uid, added, invalidated) in &p.set.counts {
                let e = changed.entry(uid).or_insert((0i64, 0i64));
                e.0 += added;
                e.1 += invalidated;
            }
        }
        // This process's shard of each table's counts, in the same commit.
        let new_totals: Vec<(u64, (i64, i64))> = {
            let totals = lock(&self.totals);
            changed
                .iter()
                .map(|(uid, d)| {
                    let t = totals.get(uid).copied().unwrap_or((0, 0));
                    (*uid, (t.0 + d.0, t.1 + d.1))
                })
                .collect()
        };
        for (uid, (a, i)) in &new_totals {
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&a.to_le_bytes());
            v.extend_from_slice(&i.to_le_bytes());
            puts.push((
                Table::Meta,
                keys::table_count(*uid, &self.instance),
                Bytes::from(v),
            ));
        }
        let result = self.store.put_rows(puts).await;
        if result.is_ok() {
            let mut totals = lock(&self.totals);
            for (uid, t) in new_totals {
                totals.insert(uid, t);
            }
        }
        self.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.batch_size.observe(rows as f64);
        self.queued_rows.fetch_sub(rows, Ordering::SeqCst);
        self.depth.set(self.queued() as i64);
        for p in taken {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(ServiceError::Store(match e {
                    neurocube_store::StoreError::Unavailable { backend, reason } => {
                        neurocube_store::StoreError::Unavailable {
                            backend,
                            reason: reason.clone(),
                        }
                    }
                    other => neurocube_store::StoreError::Unavailable {
                        backend: other.backend(),
                        reason: format!("the group commit failed: {other}"),
                    },
                })),
            };
            let _ = p.ack.send(r);
        }
        true
    }

    /// The worker that commits.
    #[must_use]
    pub fn worker(self: &Arc<Self>) -> WriterWorker {
        WriterWorker(self.clone())
    }
}

/// Commits queued annotation rows, one group per step; at shutdown it
/// drains the queue (every queued row is acknowledged or failed).
pub struct WriterWorker(Arc<BatchWriter>);

#[async_trait::async_trait]
impl Worker for WriterWorker {
    fn name(&self) -> String {
        "annotation-writer".into()
    }

    async fn work(&mut self, _stopping: bool) -> Result<WorkerState> {
        Ok(if self.0.commit().await {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        })
    }

    async fn wait_for_work(&mut self) {
        let notified = self.0.wake.notified();
        if !lock(&self.0.queue).is_empty() {
            return;
        }
        notified.await;
    }

    fn queue_depth(&self) -> Option<u64> {
        Some(self.0.queued() as u64)
    }
}

#[cfg(test)]
mod tests {
    use neurocube_store::memory::MemoryStore;

    use super::*;
    use crate::background::BackgroundRunner;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_writers_share_commits_and_every_row_lands() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let w = Arc::new(BatchWriter::new(
            store.clone(),
            WriterConfig::default(),
            &Registry::new(),
        ));
        let runner = BackgroundRunner::new(1, &Registry::new());
        runner.spawn(w.worker());
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..20u64 {
                    let id = i * 100 + j;
                    let set = WriteSet {
                        puts: vec![(
                            Table::Rows,
                            keys::row(7, 0, id),
                            Bytes::from(id.to_le_bytes().to_vec()),
                        )],
                        counts: vec![(7, 1, 0)],
                        rows: 1,
                    };
                    w.submit(set).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let keys: Vec<Key> = (0..64)
            .flat_map(|i| (0..20).map(move |j| keys::row(7, 0, i * 100 + j)))
            .collect();
        let got = store.get_many(Table::Rows, &keys).await.unwrap();
        assert!(got.iter().all(Option::is_some));
        assert_eq!(w.counts(7).await.unwrap(), (1280, 0));
        // Fewer commits than writes: they were grouped.
        assert!(
            w.batch_size.get_sample_count() < 1280,
            "{}",
            w.batch_size.get_sample_count()
        );
        assert!(runner.shutdown(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let w = Arc::new(BatchWriter::new(
            store,
            WriterConfig {
                queue_rows: 10,
                batch_rows: 10,
            },
            &Registry::new(),
        ));
        // No worker runs: the first write waits in the queue.
        let w2 = w.clone();
        let first = tokio::spawn(async move {
            w2.submit(WriteSet {
                puts: vec![],
                counts: vec![],
                rows: 8,
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = w
            .submit(WriteSet {
                puts: vec![],
                counts: vec![],
                rows: 5,
            })
            .await
            .unwrap_err();
        assert!(matches!(e, ServiceError::Overloaded { .. }), "{e}");
        assert!(w.commit().await);
        first.await.unwrap().unwrap();
    }
}
