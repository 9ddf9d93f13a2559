//! Annotation objects (OCP's RAMON: synapse, seed, segment, neuron,
//! organelle) and NeuroBlaze, the write path of their voxels.
//!
//! An object is a row of an object table (built-in schemas `ramon_*`)
//! whose id is also its label in the table's annotation channel. Its
//! voxels are written as label patches: checked (inside the dataset, the
//! conflict option resolved against the current labels), added to the
//! pending buffer (which every read applies), and logged durably in the
//! same group commit as the object's row and its chunk list. Only then is
//! the request answered. The flusher (`flusher.rs`) later writes each
//! touched chunk once, by compare-and-set, and drops the log epoch. At
//! start the log is replayed (`Objects::recover`).

pub mod flusher;
pub mod pending;
mod wire;

pub use wire::{Conflict, ObjectInput};

pub use wire::{mask_voxels, parse_objects, voxel_list};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use neurocube_core::annotation::{Row, Schema};
use neurocube_core::labels::{self, LabelPatch, LogEntry};
use neurocube_core::{Box3, ChunkIndex, DType, DatasetName, TableName, morton};
use neurocube_store::{Key, Scan, Store, Table};
use prometheus::{IntCounter, IntGauge, Registry};
use serde_json::{Map, Value as J};

use crate::annotations::writer::WriteSet;
use crate::annotations::{Annotations, Incoming, ResolvedTable};
use crate::catalog::{Catalog, ResolvedChannel};
use crate::error::{Result, ServiceError};
use crate::keys;
use crate::volume::Volumes;
use pending::{ChannelNames, PendingLabels};

/// Settings of annotation objects (`[objects]`).
#[derive(Clone, Debug)]
pub struct ObjectsConfig {
    /// Bytes of label patches waiting for the flusher at most (beyond: 503).
    pub max_pending_bytes: usize,
    /// The flusher stores pending patches this long after the first one
    /// arrived, or at once when `flush_at_bytes` are pending.
    pub flush_interval: Duration,
    /// Pending bytes that start a flush before its interval is over.
    pub flush_at_bytes: usize,
    /// While writes keep coming, the flush waits for a pause, at most this
    /// long after the first pending write.
    pub flush_max_delay: Duration,
    /// Chunks the flusher stores at once.
    pub flush_parallel: usize,
    /// This instance's name in the label log (each instance has its own
    /// log; two instances on one store must not share a name).
    pub log_name: String,
    /// Voxels one request may write at most.
    pub max_voxels: u64,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        Self {
            max_pending_bytes: 1 << 30,
            flush_interval: Duration::from_millis(1000),
            flush_at_bytes: 1 << 29,
            flush_max_delay: Duration::from_secs(10),
            flush_parallel: 4,
            log_name: "local".into(),
            max_voxels: 1 << 24,
        }
    }
}

/// What a label write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelWrite {
    /// Voxels labelled.
    pub written: u64,
    /// Voxels left to another object (`preserve`).
    pub preserved: u64,
}

/// An object's extent.
#[derive(Clone, Debug)]
pub struct ObjectVoxels {
    /// The object.
    pub id: u64,
    /// Its voxels, in z, y, x order.
    pub voxels: Vec<[u64; 3]>,
    /// The smallest box holding them.
    pub bbox: Option<Box3>,
}

/// Metrics of the label write path.
#[derive(Clone)]
struct ObjectMetrics {
    writes: IntCounter,
    chunk_writes: IntCounter,
    pending_bytes: IntGauge,
    flushes: IntCounter,
}

impl ObjectMetrics {
    #[allow(clippy::expect_used)] // startup: static metric names
    fn register(registry: &Registry) -> Self {
        let writes = IntCounter::new(
            "neurocube_label_writes_total",
            "Object label writes acknowledged (each logged durably)",
        )
        .expect("valid metric");
        let chunk_writes = IntCounter::new(
            "neurocube_label_chunk_writes_total",
            "Chunks stored by the label flusher",
        )
        .expect("valid metric");
        let pending_bytes = IntGauge::new(
            "neurocube_label_pending_bytes",
            "Bytes of label patches waiting for the flusher",
        )
        .expect("valid metric");
        let flushes = IntCounter::new(
            "neurocube_label_flushes_total",
            "Flushes of pending label writes",
        )
        .expect("valid metric");
        for m in [
            Box::new(writes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(chunk_writes.clone()),
            Box::new(pending_bytes.clone()),
            Box::new(flushes.clone()),
        ] {
            let _ = registry.register(m);
        }
        Self {
            writes,
            chunk_writes,
            pending_bytes,
            flushes,
        }
    }
}

/// Annotation objects and their voxels.
pub struct Objects {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    volumes: Arc<Volumes>,
    annotations: Arc<Annotations>,
    labels: Arc<PendingLabels>,
    config: ObjectsConfig,
    metrics: ObjectMetrics,
    /// Held while a `preserve` or `exception` write reads the current labels
    /// and adds its patches, so two of them never decide on the same state.
    resolving: tokio::sync::Mutex<()>,
}

/// A resolved object table and its annotation channel.
struct ObjectTable {
    table: ResolvedTable,
    channel: ResolvedChannel,
}

impl ObjectTable {
    fn names(&self) -> ChannelNames {
        ChannelNames {
            dataset: self.channel.dataset_name.clone(),
            channel: self.channel.channel_name.clone(),
        }
    }

    fn grid(&self) -> neurocube_core::ChunkGrid {
        self.channel.channel.meta.grid()
    }

    fn elem(&self) -> usize {
        self.channel.channel.meta.dtype.size()
    }
}

fn invalid(row: usize, column: &str, reason: String) -> ServiceError {
    ServiceError::InvalidRow {
        row,
        column: column.to_string(),
        reason,
    }
}

impl Objects {
    /// This instance's name in the label log.
    #[must_use]
    pub fn log_name(&self) -> &str {
        &self.config.log_name
    }

    /// Objects over the annotation store and the volumes; `labels` is the
    /// pending buffer the volumes apply to reads.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        volumes: Arc<Volumes>,
        annotations: Arc<Annotations>,
        config: ObjectsConfig,
        registry: &Registry,
    ) -> Self {
        let labels = volumes.labels().clone();
        Self {
            store,
            catalog,
            volumes,
            annotations,
            labels,
            config,
            metrics: ObjectMetrics::register(registry),
            resolving: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ObjectsConfig {
        &self.config
    }

    /// The pending label writes.
    #[must_use]
    pub fn labels(&self) -> &Arc<PendingLabels> {
        &self.labels
    }

    async fn object_table(&self, ds: &DatasetName, name: &TableName) -> Result<ObjectTable> {
        let table = self.annotations.table(ds, name).await?;
        if !Schema::is_object_schema(&table.record.spec.schema) {
            return Err(ServiceError::field(
                "table",
                format!(
                    "table '{name}' has schema '{}', which has no voxels: objects live in tables of schema ramon_synapse, ramon_seed, ramon_segment, ramon_neuron or ramon_organelle",
                    table.record.spec.schema
                ),
            ));
        }
        let Some(seg) = &table.record.spec.segmentation else {
            return Err(ServiceError::Internal {
                during: "resolving an object table",
                reason: format!("object table '{name}' has no annotation channel"),
            });
        };
        let channel = self.catalog.channel(ds, seg).await?;
        Ok(ObjectTable { table, channel })
    }

    /// Check voxels: inside level 0 of the dataset, at most `max_voxels`.
    fn check_voxels(&self, ot: &ObjectTable, objects: &[(u64, &[[u64; 3]])]) -> Result<()> {
        let bounds = ot.channel.dataset.level(0).bounds();
        let total: u64 = objects.iter().map(|(_, v)| v.len() as u64).sum();
        if total > self.config.max_voxels {
            return Err(ServiceError::TooLarge {
                what: "label write",
                bytes: Some(total),
                limit: self.config.max_voxels,
                limit_source: "server setting objects.max_voxels (voxels per request)".into(),
                advice: "split the objects over several requests",
            });
        }
        let max_label = match ot.channel.channel.meta.dtype {
            DType::Uint32 => u64::from(u32::MAX),
            _ => u64::MAX,
        };
        for (i, (id, voxels)) in objects.iter().enumerate() {
            if *id > max_label {
                return Err(invalid(
                    i,
                    "id",
                    format!(
                        "id {id} does not fit the {} labels of channel '{}'",
                        ot.channel.channel.meta.dtype, ot.channel.channel_name
                    ),
                ));
            }
            for v in *voxels {
                let inside = (0..3).all(|a| v[a] >= bounds.start[a] && v[a] < bounds.end[a]);
                if !inside {
                    return Err(invalid(
                        i,
                        "voxels",
                        format!(
                            "voxel {v:?} lies outside dataset '{}' (level 0 spans {bounds})",
                            ot.channel.dataset_name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Decoded chunks (pending writes applied) of a channel's level 0.
    async fn current_chunks(
        &self,
        ot: &ObjectTable,
        idxs: impl IntoIterator<Item = ChunkIndex>,
    ) -> Result<HashMap<ChunkIndex, Vec<u8>>> {
        let bounds = ot.channel.dataset.level(0).bounds();
        let t = self
            .volumes
            .target(
                &ot.channel.dataset_name,
                &ot.channel.channel_name,
                0,
                bounds,
            )
            .await
            .or_else(|_| {
                // A dataset larger than the cutout limit: any small box will do.
                Ok::<_, ServiceError>(crate::volume::Target {
                    rc: ot.channel.clone(),
                    level: ot.channel.dataset.level(0),
                    bbox: bounds,
                })
            })?;
        let chunk_bytes = ot.grid().chunk_voxels() * ot.elem();
        let mut out = HashMap::new();
        for idx in idxs {
            if out.contains_key(&idx) {
                continue;
            }
            let d = self
                .volumes
                .load_chunk(&t, idx)
                .await?
                .unwrap_or_else(|| vec![0u8; chunk_bytes]);
            out.insert(idx, d);
        }
        Ok(out)
    }

    /// Label voxels of objects (already checked), with the conflict option,
    /// durably: the patches, their log entry and the objects' chunk lists
    /// go into one group commit together with `with` (the objects' rows).
    async fn write_labels(
        &self,
        ot: &ObjectTable,
        objects: &[(u64, &[[u64; 3]])],
        conflict: Conflict,
        mut with: WriteSet,
    ) -> Result<LabelWrite> {
        let grid = ot.grid();
        let elem = ot.elem();
        let mut per_object: Vec<(u64, BTreeMap<ChunkIndex, Vec<u32>>)> = objects
            .iter()
            .map(|(id, v)| (*id, labels::group_by_chunk(&grid, v.iter().copied())))
            .collect();
        let mut summary = LabelWrite::default();
        let guard = if conflict == Conflict::Overwrite {
            None
        } else {
            Some(self.resolving.lock().await)
        };
        if guard.is_some() {
            let touched = per_object.iter().flat_map(|(_, m)| m.keys().copied());
            let mut current = self.current_chunks(ot, touched).await?;
            let mut conflict_at: Option<(u64, u64, [u64; 3], u64)> = None;
            for (id, chunks) in &mut per_object {
                for (idx, offsets) in chunks.iter_mut() {
                    let Some(chunk) = current.get_mut(idx) else {
                        continue;
                    };
                    let before = offsets.len();
                    offsets.retain(|&o| {
                        let l = labels::label_at(chunk, elem, o);
                        let free = l == 0 || l == *id;
                        if !free && conflict == Conflict::Exception {
                            let c = conflict_at.get_or_insert((
                                *id,
                                l,
                                labels::voxel_of(&grid, *idx, o),
                                0,
                            ));
                            c.3 += 1;
                        }
                        free
                    });
                    summary.preserved += (before - offsets.len()) as u64;
                    // Later objects of the same request see this one.
                    labels::apply(chunk, elem, *id, offsets);
                }
            }
            if let Some((id, other, voxel, count)) = conflict_at {
                return Err(ServiceError::LabelConflict {
                    id,
                    other,
                    voxel,
                    count,
                });
            }
        }
        let uid = ot.channel.channel.uid;
        let mut entry = LogEntry {
            dataset: ot.channel.dataset_name.to_string(),
            channel_name: ot.channel.channel_name.to_string(),
            channel: uid,
            level: 0,
            chunks: Vec::new(),
        };
        let mut adds = Vec::new();
        let table_uid = ot.table.uid();
        for (id, chunks) in per_object {
            for (idx, offsets) in chunks {
                if offsets.is_empty() {
                    continue;
                }
                summary.written += offsets.len() as u64;
                let code = morton::encode(idx);
                with.puts.push((
                    Table::RowIndex,
                    keys::object_chunk(table_uid, id, 0, code),
                    Bytes::new(),
                ));
                adds.push((code, id, Arc::from(labels::runs(&offsets))));
                entry.chunks.push((code, LabelPatch { label: id, offsets }));
            }
        }
        self.commit(ot, entry, adds, with).await?;
        drop(guard);
        self.metrics.writes.inc();
        Ok(summary)
    }

    /// Add patches to the pending buffer, log them with `with`, and wait
    /// for the group commit; a failed commit withdraws the patches.
    async fn commit(
        &self,
        ot: &ObjectTable,
        entry: LogEntry,
        adds: Vec<(u64, u64, pending::Runs)>,
        mut with: WriteSet,
    ) -> Result<()> {
        if adds.is_empty() {
            return self.annotations.writer.submit(with).await;
        }
        let (epoch, seq) = self
            .labels
            .add(&ot.names(), ot.channel.channel.uid, 0, adds)?;
        self.metrics.pending_bytes.set(self.labels.bytes() as i64);
        with.puts.push((
            Table::Rows,
            keys::label_log(&self.config.log_name, epoch, seq),
            Bytes::from(entry.encode()),
        ));
        let r = self.annotations.writer.submit(with).await;
        self.labels.done(epoch, seq, r.is_ok());
        r
    }

    /// Create objects (rows and voxels), validated whole before anything is
    /// written; returns their ids in order.
    pub async fn create(
        &self,
        ds: &DatasetName,
        name: &TableName,
        mut objects: Vec<ObjectInput>,
        conflict: Conflict,
    ) -> Result<Vec<u64>> {
        let ot = self.object_table(ds, name).await?;
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let metadata: Vec<J> = objects
            .iter_mut()
            .map(|o| J::Object(std::mem::take(&mut o.metadata)))
            .collect();
        let computed = crate::annotations::upload::computed_columns(&ot.table.schema, true);
        let rows: Vec<Incoming> =
            crate::annotations::upload::json_rows(metadata, &ot.table.schema, &computed)?;
        // Voxels are checked before ids are given (a given id is checked
        // against the channel's label type here too).
        let given: Vec<(u64, &[[u64; 3]])> = rows
            .iter()
            .zip(&objects)
            .map(|(r, o)| (r.id.unwrap_or(0), o.voxels.as_slice()))
            .collect();
        self.check_voxels(&ot, &given)?;
        let (ids, set) = self.annotations.prepare_insert(&ot.table, rows).await?;
        let with_ids: Vec<(u64, &[[u64; 3]])> = ids
            .iter()
            .zip(&objects)
            .map(|(id, o)| (*id, o.voxels.as_slice()))
            .collect();
        self.check_voxels(&ot, &with_ids)?;
        self.write_labels(&ot, &with_ids, conflict, set).await?;
        Ok(ids)
    }

    /// The live, valid row of an object (404 / 409 otherwise).
    async fn valid_row(&self, ot: &ObjectTable, id: u64) -> Result<(Row, Bytes)> {
        let (row, bytes) = self.annotations.live_row(&ot.table, id).await?;
        if !row.valid {
            return Err(ServiceError::RowNotValid {
                table: ot.table.name().to_string(),
                id,
                superceded_id: row.superceded_id,
            });
        }
        Ok((row, bytes))
    }

    /// Label voxels of an existing object.
    pub async fn put_voxels(
        &self,
        ds: &DatasetName,
        name: &TableName,
        id: u64,
        voxels: Vec<[u64; 3]>,
        conflict: Conflict,
    ) -> Result<LabelWrite> {
        let ot = self.object_table(ds, name).await?;
        self.valid_row(&ot, id).await?;
        self.check_voxels(&ot, &[(id, &voxels)])?;
        self.write_labels(&ot, &[(id, &voxels)], conflict, WriteSet::default())
            .await
    }

    /// The box a dense mask covers must lie in level 0 of the channel.
    pub async fn mask_target(
        &self,
        ds: &DatasetName,
        name: &TableName,
        bbox: Box3,
    ) -> Result<crate::volume::Target> {
        let ot = self.object_table(ds, name).await?;
        self.volumes
            .target(&ot.channel.dataset_name, &ot.channel.channel_name, 0, bbox)
            .await
    }

    /// The chunks an object's voxels were written to.
    async fn object_chunks(&self, ot: &ObjectTable, id: u64) -> Result<Vec<ChunkIndex>> {
        let rows = Scan::partition(
            self.store.clone(),
            Table::RowIndex,
            keys::object_chunks_partition(ot.table.uid(), id),
            keys::object_chunk_range(id),
        )
        .collect()
        .await?;
        Ok(rows
            .iter()
            .filter_map(|(key, _)| {
                let sort = &key.sort;
                let code = u64::from_be_bytes(sort.get(9..17)?.try_into().ok()?);
                (sort.get(8) == Some(&0)).then(|| morton::decode(code))
            })
            .collect())
    }

    /// An object's voxels (pending writes included) and bounding box.
    pub async fn voxels(
        &self,
        ds: &DatasetName,
        name: &TableName,
        id: u64,
    ) -> Result<ObjectVoxels> {
        let ot = self.object_table(ds, name).await?;
        self.annotations.live_row(&ot.table, id).await?;
        let (_, voxels) = self.voxels_of(&ot, id).await?;
        let bbox = labels::bounding_box(&voxels);
        Ok(ObjectVoxels { id, voxels, bbox })
    }

    /// Per chunk, the offsets holding `id`; and the voxels, z, y, x order.
    async fn voxels_of(
        &self,
        ot: &ObjectTable,
        id: u64,
    ) -> Result<(Vec<(ChunkIndex, Vec<u32>)>, Vec<[u64; 3]>)> {
        let chunks = self.object_chunks(ot, id).await?;
        let current = self.current_chunks(ot, chunks.iter().copied()).await?;
        let (grid, elem) = (ot.grid(), ot.elem());
        let bounds = ot.channel.dataset.level(0).bounds();
        let mut per_chunk = Vec::new();
        let mut voxels = Vec::new();
        for idx in chunks {
            let Some(d) = current.get(&idx) else { continue };
            let n = (d.len() / elem) as u32;
            let offsets: Vec<u32> = (0..n)
                .filter(|&o| labels::label_at(d, elem, o) == id)
                .collect();
            for &o in &offsets {
                let v = labels::voxel_of(&grid, idx, o);
                if (0..3).all(|a| v[a] < bounds.end[a]) {
                    voxels.push(v);
                }
            }
            if !offsets.is_empty() {
                per_chunk.push((idx, offsets));
            }
        }
        voxels.sort_unstable_by_key(|v| [v[2], v[1], v[0]]);
        Ok((per_chunk, voxels))
    }

    /// An object's voxels as a cutout of its bounding box (`bbox` to choose
    /// another box), every other label masked to 0: the box and its bytes.
    pub async fn cutout(
        &self,
        ds: &DatasetName,
        name: &TableName,
        id: u64,
        bbox: Option<Box3>,
    ) -> Result<(Box3, DType, Vec<u8>)> {
        let ot = self.object_table(ds, name).await?;
        let found = self.voxels(ds, name, id).await?;
        let dtype = ot.channel.channel.meta.dtype;
        let Some(b) = bbox.or(found.bbox) else {
            return Err(ServiceError::field(
                "voxels",
                format!("object {id} has no voxels: write some with PUT .../objects/{id}/voxels"),
            ));
        };
        // Checks the box against the level and the cutout limit.
        let t = self
            .volumes
            .target(&ot.channel.dataset_name, &ot.channel.channel_name, 0, b)
            .await?;
        let elem = dtype.size();
        let mut out = vec![0u8; t.bytes() as usize];
        let s = b.shape();
        for v in &found.voxels {
            if (0..3).all(|a| v[a] >= b.start[a] && v[a] < b.end[a]) {
                let (x, y, z) = (v[0] - b.start[0], v[1] - b.start[1], v[2] - b.start[2]);
                let o = (((z * s[1] + y) * s[0] + x) as usize) * elem;
                out[o..o + elem].copy_from_slice(&id.to_le_bytes()[..elem]);
            }
        }
        Ok((b, dtype, out))
    }

    /// Delete an object: its voxels are cleared (durably, like any label
    /// write) and its row is marked deleted.
    pub async fn delete(&self, ds: &DatasetName, name: &TableName, id: u64) -> Result<u64> {
        let ot = self.object_table(ds, name).await?;
        self.valid_row(&ot, id).await?;
        let guard = self.resolving.lock().await;
        let (per_chunk, voxels) = self.voxels_of(&ot, id).await?;
        let uid = ot.channel.channel.uid;
        let mut entry = LogEntry {
            dataset: ot.channel.dataset_name.to_string(),
            channel_name: ot.channel.channel_name.to_string(),
            channel: uid,
            level: 0,
            chunks: Vec::new(),
        };
        let mut adds = Vec::new();
        for (idx, offsets) in per_chunk {
            let code = morton::encode(idx);
            adds.push((code, 0, Arc::from(labels::runs(&offsets))));
            entry.chunks.push((code, LabelPatch { label: 0, offsets }));
        }
        self.commit(&ot, entry, adds, WriteSet::default()).await?;
        drop(guard);
        self.annotations.delete_rows(&ot.table, &[id]).await?;
        let chunks: Vec<Key> = self
            .object_chunks(&ot, id)
            .await?
            .into_iter()
            .map(|idx| keys::object_chunk(ot.table.uid(), id, 0, morton::encode(idx)))
            .collect();
        self.store.delete_many(Table::RowIndex, &chunks).await?;
        Ok(voxels.len() as u64)
    }

    /// An object's row as JSON: its columns, and `id`, `created`,
    /// `deleted`, `superceded_id`, `valid` (times in ms since the epoch).
    pub async fn row_json(&self, ds: &DatasetName, name: &TableName, id: u64) -> Result<J> {
        let ot = self.object_table(ds, name).await?;
        let (row, _) = self.annotations.live_row(&ot.table, id).await?;
        let mut m = Map::new();
        m.insert("id".into(), row.id.into());
        for (c, v) in ot.table.schema.columns.iter().zip(&row.values) {
            m.insert(c.name.clone(), v.to_json());
        }
        m.insert("created".into(), row.created.into());
        m.insert("deleted".into(), row.deleted.into());
        m.insert("superceded_id".into(), row.superceded_id.into());
        m.insert("valid".into(), row.valid.into());
        Ok(J::Object(m))
    }

    /// Objects metric: pending bytes now.
    fn observe_pending(&self) {
        self.metrics.pending_bytes.set(self.labels.bytes() as i64);
    }
}
