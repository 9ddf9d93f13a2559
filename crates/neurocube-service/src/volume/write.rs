//! Cutout writes (read-patch-write of partly covered chunks under per-chunk
//! locks, compare-and-set) and the label flusher's chunk stores.

use super::*;

impl Volumes {
    /// Write a box of C-ordered voxel bytes (exactly the box's size).
    /// Fully covered chunks are replaced; partly covered ones are patched
    /// under per-chunk locks and stored by compare-and-set.
    pub async fn write(&self, t: Target, data: Bytes) -> Result<WriteSummary> {
        if data.len() as u64 != t.bytes() {
            return Err(ServiceError::InvalidBody {
                format: "raw",
                reason: format!(
                    "body holds {} bytes of voxels but the box {} of {} needs {}",
                    data.len(),
                    t.bbox,
                    t.dtype(),
                    t.bytes()
                ),
            });
        }
        let grid = t.grid();
        let all = grid.chunks_in(&t.bbox);
        // Pending label writes under the box go to their chunks first, and
        // their log entries are retired, so this newer write is overwritten
        // neither by an older flush nor by a replay after a crash.
        if self.labels.unretired(t.rc.channel.uid, t.level.level, &all) {
            self.labels.flush_now(LABEL_FLUSH_WAIT).await?;
        }
        let partial_keys: Vec<Key> = all
            .iter()
            .filter(|i| !grid.covers(&t.bbox, **i))
            .map(|i| t.key(*i))
            .collect();
        let _guards = self.locks.lock(&partial_keys).await;
        self.metrics
            .cutout_bytes
            .with_label_values(&["write"])
            .inc_by(t.bytes());
        let t = Arc::new(t);
        let batches: Vec<Vec<ChunkIndex>> = all
            .chunks(WRITE_BATCH)
            .map(<[ChunkIndex]>::to_vec)
            .collect();
        let results: Result<Vec<WriteSummary>> = stream::iter(batches)
            .map(|batch| self.write_batch(t.clone(), data.clone(), batch))
            .buffered(PIPELINE)
            .try_collect()
            .await;
        // Listeners run even after a failed write: some chunks may have changed.
        let notified = self.notify(&t).await;
        let results = results?;
        notified?;
        Ok(results
            .into_iter()
            .fold(WriteSummary::default(), |a, b| WriteSummary {
                chunks_written: a.chunks_written + b.chunks_written,
                chunks_deleted: a.chunks_deleted + b.chunks_deleted,
            }))
    }

    async fn write_batch(
        &self,
        t: Arc<Target>,
        data: Bytes,
        batch: Vec<ChunkIndex>,
    ) -> Result<WriteSummary> {
        let grid = t.grid();
        let (full, partial): (Vec<ChunkIndex>, Vec<ChunkIndex>) =
            batch.into_iter().partition(|i| grid.covers(&t.bbox, *i));
        let mut summary = WriteSummary::default();
        if !full.is_empty() {
            let (tt, d, idxs) = (t.clone(), data.clone(), full.clone());
            let encoded = tokio::task::spawn_blocking(move || {
                idxs.par_iter()
                    .map(|&i| encode_chunk(&tt, &d, i, None))
                    .collect::<Result<Vec<_>>>()
            })
            .await??;
            let (mut puts, mut dels) = (Vec::new(), Vec::new());
            for (i, enc) in full.iter().zip(encoded) {
                match enc {
                    Some(v) => puts.push((t.key(*i), v)),
                    None => dels.push(t.key(*i)),
                }
            }
            summary.chunks_written += puts.len();
            summary.chunks_deleted += dels.len();
            self.metrics.chunk_writes.inc_by(puts.len() as u64);
            self.metrics.chunk_deletes.inc_by(dels.len() as u64);
            let started = Instant::now();
            if !puts.is_empty() {
                self.store.put_many(Table::Chunks, puts).await?;
            }
            if !dels.is_empty() {
                self.store.delete_many(Table::Chunks, &dels).await?;
            }
            self.metrics
                .store_seconds
                .with_label_values(&["put_many"])
                .observe(started.elapsed().as_secs_f64());
        }
        for i in partial {
            if self.patch_chunk(&t, &data, i).await? {
                summary.chunks_written += 1;
            } else {
                summary.chunks_deleted += 1;
            }
        }
        Ok(summary)
    }

    /// Store pending label patches of one channel's level, in batches of
    /// [`LABEL_BATCH`] chunks: each batch takes its chunks' locks (so a
    /// cutout write of this process never interleaves), reads them at once,
    /// patches them in parallel and stores them with one
    /// `compare_and_set_many` (one sync on the embedded store); a chunk
    /// another instance changed in between is read and patched again on
    /// its own. `parallel` batches run at once. A chunk stored is forgotten
    /// by the pending buffer at once. Listeners then see one event per
    /// chunk, as they see a cutout write. Chunks that failed are returned
    /// with their patches, to be tried again.
    pub async fn store_labels(
        &self,
        rc: ResolvedChannel,
        level: u8,
        chunks: Vec<(ChunkIndex, Vec<Patch>)>,
        parallel: usize,
    ) -> (
        WriteSummary,
        Vec<(ChunkIndex, Vec<Patch>)>,
        Option<ServiceError>,
    ) {
        let lv = rc.dataset.level(level);
        let bounds = lv.bounds();
        let t = Arc::new(Target {
            rc,
            level: lv,
            bbox: bounds,
        });
        let grid = t.grid();
        let uid = t.rc.channel.uid;
        let mut batches = Vec::new();
        let mut chunks = chunks.into_iter().peekable();
        while chunks.peek().is_some() {
            batches.push(chunks.by_ref().take(LABEL_BATCH).collect::<Vec<_>>());
        }
        let results: Vec<Vec<LabelOutcome>> = stream::iter(batches)
            .map(|batch| self.store_label_batch(t.clone(), batch))
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
        let mut summary = WriteSummary::default();
        let mut boxes = Vec::new();
        let mut failed = Vec::new();
        let mut first_error = None;
        for (idx, patches, r) in results.into_iter().flatten() {
            match r {
                Ok(stored) => {
                    if stored {
                        summary.chunks_written += 1;
                    } else {
                        summary.chunks_deleted += 1;
                    }
                    self.labels
                        .stored((uid, level, neurocube_core::morton::encode(idx)));
                    if let Some(b) = grid.chunk_box(idx).overlap(&bounds) {
                        boxes.push(b);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    failed.push((idx, patches));
                }
            }
        }
        if !boxes.is_empty()
            && let Err(e) = self.notify_boxes(&t, &boxes).await
        {
            first_error.get_or_insert(e);
        }
        (summary, failed, first_error)
    }

    /// One batch of [`Volumes::store_labels`]: per chunk, whether it is
    /// stored (false: it became all zero and is gone) or why it failed.
    async fn store_label_batch(
        &self,
        t: Arc<Target>,
        batch: Vec<(ChunkIndex, Vec<Patch>)>,
    ) -> Vec<LabelOutcome> {
        let keys: Vec<Key> = batch.iter().map(|(i, _)| t.key(*i)).collect();
        let _guards = self.locks.lock(&keys).await;
        let first = self.try_label_batch(&t, &batch, &keys).await;
        let mut out = Vec::with_capacity(batch.len());
        match first {
            Ok(won) => {
                for ((idx, patches), won) in batch.into_iter().zip(won) {
                    let r = match won {
                        Some(stored) => Ok(stored),
                        // Another instance wrote it since it was read.
                        None => self.store_label_chunk(&t, idx, &patches).await,
                    };
                    out.push((idx, patches, r));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (idx, patches) in batch {
                    out.push((
                        idx,
                        patches,
                        Err(ServiceError::Internal {
                            during: "storing label writes",
                            reason: msg.clone(),
                        }),
                    ));
                }
            }
        }
        out
    }

    /// Read, patch and compare-and-set a batch at once: per chunk
    /// `Some(stored)` if it was decided, `None` if its compare-and-set lost.
    async fn try_label_batch(
        &self,
        t: &Arc<Target>,
        batch: &[(ChunkIndex, Vec<Patch>)],
        keys: &[Key],
    ) -> Result<Vec<Option<bool>>> {
        let started = Instant::now();
        let old = self.store.get_many(Table::Chunks, keys).await?;
        self.metrics.chunk_reads.inc_by(keys.len() as u64);
        let (tt, o) = (t.clone(), old.clone());
        let work: Vec<(ChunkIndex, Arc<[Patch]>)> = batch
            .iter()
            .map(|(i, p)| (*i, Arc::from(p.as_slice())))
            .collect();
        // At a lower priority: the flusher runs behind the requests.
        let new: Vec<Option<Bytes>> = crate::lowpri::run(move || {
            work.par_iter()
                .zip(o.par_iter())
                .map(|((idx, p), old)| patched(&tt, *idx, old.as_ref(), p))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .ok_or(ServiceError::Internal {
            during: "patching label chunks",
            reason: "the patch task panicked".into(),
        })??;
        let mut decided: Vec<Option<bool>> = vec![None; batch.len()];
        let mut items = Vec::new();
        let mut slots = Vec::new();
        for (i, (old, new)) in old.into_iter().zip(new).enumerate() {
            if old.is_none() && new.is_none() {
                decided[i] = Some(false);
                continue;
            }
            slots.push((i, new.is_some()));
            items.push((keys[i].clone(), old, new));
        }
        let won = self
            .store
            .compare_and_set_many(Table::Chunks, items)
            .await?;
        for ((i, stored), won) in slots.into_iter().zip(won) {
            if won {
                decided[i] = Some(stored);
                if stored {
                    self.metrics.chunk_writes.inc();
                } else {
                    self.metrics.chunk_deletes.inc();
                }
            } else {
                self.metrics.cas_retries.inc();
            }
        }
        self.metrics
            .store_seconds
            .with_label_values(&["patch"])
            .observe(started.elapsed().as_secs_f64());
        Ok(decided)
    }

    /// Read, patch and compare-and-set one partly covered chunk, retrying if
    /// another server instance changed it in between (at most
    /// `max_cas_attempts` times, then 503). Returns false if the chunk
    /// became all zero (and was deleted).
    async fn patch_chunk(&self, t: &Arc<Target>, data: &Bytes, idx: ChunkIndex) -> Result<bool> {
        let data = data.clone();
        self.cas_chunk(t, idx, move |t, old| encode_chunk(t, &data, idx, old))
            .await
    }

    /// The same for a chunk of label patches (the caller holds its lock).
    async fn store_label_chunk(
        &self,
        t: &Arc<Target>,
        idx: ChunkIndex,
        patches: &[Patch],
    ) -> Result<bool> {
        let patches: Arc<[Patch]> = Arc::from(patches);
        self.cas_chunk(t, idx, move |t, old| patched(t, idx, old, &patches))
            .await
    }

    /// Read a chunk, make its new content with `make` (off the executor)
    /// and compare-and-set it, until it holds or `max_cas_attempts` ran out.
    async fn cas_chunk<F>(&self, t: &Arc<Target>, idx: ChunkIndex, make: F) -> Result<bool>
    where
        F: Fn(&Target, Option<&Bytes>) -> Result<Option<Bytes>> + Send + Sync + 'static,
    {
        let key = t.key(idx);
        let make = Arc::new(make);
        let attempts = self.limits.max_cas_attempts.max(1);
        for _ in 0..attempts {
            let started = Instant::now();
            let old = self
                .store
                .get_many(Table::Chunks, std::slice::from_ref(&key))
                .await?
                .remove(0);
            self.metrics.chunk_reads.inc();
            let (tt, o, m) = (t.clone(), old.clone(), make.clone());
            let new = tokio::task::spawn_blocking(move || m(&tt, o.as_ref())).await??;
            if old.is_none() && new.is_none() {
                return Ok(false);
            }
            let stored = new.is_some();
            if self
                .store
                .compare_and_set(Table::Chunks, key.clone(), old, new)
                .await?
            {
                self.metrics
                    .store_seconds
                    .with_label_values(&["patch"])
                    .observe(started.elapsed().as_secs_f64());
                if stored {
                    self.metrics.chunk_writes.inc();
                } else {
                    self.metrics.chunk_deletes.inc();
                }
                return Ok(stored);
            }
            self.metrics.cas_retries.inc();
        }
        Err(ServiceError::Contended {
            what: format!(
                "chunk {idx:?} of {}/{} level {}",
                t.rc.dataset.name, t.rc.channel.meta.name, t.level.level
            ),
            attempts,
        })
    }
}
