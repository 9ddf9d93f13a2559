//! Materialized versions (CAVE's "materialization"): a timestamped,
//! frozen copy of every annotation table of a dataset, with root ids looked
//! up in the bound segmentation when the version is made, and the indexes
//! queries need (rows by root id of each bound point, and by spatial cell
//! of the first point, both holding the whole row; for synapse tables the
//! edges between root ids, see `edges`). Made by a `materialize` job: one
//! task per run of row blocks, then one per synapse table condensing its
//! edges and one per bound point packing its busy root ids' rows (see
//! `packed`), with progress; later writes to the tables or the
//! segmentation never touch it.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures::future::BoxFuture;
use neurocube_core::DatasetName;
use neurocube_core::annotation::Row;
use neurocube_store::{Scan, SortRange, Table};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Annotations;
use super::tables::ResolvedTable;
use crate::error::{Result, ServiceError};
use crate::jobs::{JobHandler, JobRecord, TaskRecord, TaskSpec, now_ms};
use crate::keys;

/// Kind name of materialization jobs.
pub const KIND: &str = "materialize";
/// Row blocks per materialization task.
const BLOCKS_PER_TASK: u64 = 4;

/// State of a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Being made.
    Materializing,
    /// Ready for queries.
    Available,
    /// Its job failed.
    Failed,
}

/// One table in a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionTable {
    /// The table's uid when the version was made.
    pub uid: u64,
    /// Row blocks the live table had (what the version spans).
    pub blocks: u64,
    /// Rows valid at the version's time (set when the version is available).
    pub rows: u64,
}

/// A version as stored and listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Version number (1, 2, ... per dataset).
    pub version: u32,
    /// The time rows are taken at (ms since the epoch).
    pub time_stamp_ms: i64,
    /// When it stops being valid (ms), if ever.
    pub expires_ms: Option<i64>,
    /// State.
    pub status: VersionStatus,
    /// The job making it.
    pub job: Option<String>,
    /// Its tables.
    pub tables: BTreeMap<String, VersionTable>,
    /// Its rows were handed to the purge queue (expired or failed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purged: bool,
}

impl VersionRecord {
    /// Valid: available and not expired at `now` (ms).
    #[must_use]
    pub fn valid_at(&self, now: i64) -> bool {
        self.status == VersionStatus::Available && self.expires_ms.is_none_or(|e| e > now)
    }

    /// Done with for good at `now`: expired, or its job failed. Queries
    /// refuse it, so its rows can go.
    #[must_use]
    pub fn retired_at(&self, now: i64) -> bool {
        match self.status {
            VersionStatus::Available => self.expires_ms.is_some_and(|e| e <= now),
            VersionStatus::Failed => true,
            VersionStatus::Materializing => false,
        }
    }
}

fn encode(v: &VersionRecord) -> Result<Bytes> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| ServiceError::Internal {
            during: "encoding a version record",
            reason: e.to_string(),
        })
}

impl Annotations {
    /// Every version of a dataset, oldest first (cached for a moment).
    pub async fn versions(&self, ds: &DatasetName) -> Result<Vec<VersionRecord>> {
        Ok((*self.versions_shared(ds).await?).clone())
    }

    pub(super) async fn versions_shared(
        &self,
        ds: &DatasetName,
    ) -> Result<Arc<Vec<VersionRecord>>> {
        if let Some(hit) = self.versions_cache.get(ds.as_str()) {
            return Ok(hit);
        }
        let all = Arc::new(self.versions_uncached(ds).await?);
        self.versions_cache.insert(ds.to_string(), all.clone());
        Ok(all)
    }

    async fn versions_uncached(&self, ds: &DatasetName) -> Result<Vec<VersionRecord>> {
        self.catalog.dataset(ds).await?;
        let rows = Scan::partition(
            self.store.clone(),
            Table::Meta,
            keys::versions_partition(ds),
            SortRange::all(),
        )
        .collect()
        .await?;
        rows.into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v).map_err(|e| {
                    ServiceError::corrupt_json("version", format!("{ds}/{:?}", k.sort), &e)
                })
            })
            .collect()
    }

    /// One version: from the cached list when it is available there (an
    /// available version never changes but for its expiry, and a change
    /// made here drops the list), else read. Every query names a version,
    /// so the list is read (and cached) on a miss rather than the one
    /// record: a run of queries then reads none.
    pub async fn version(&self, ds: &DatasetName, v: u32) -> Result<VersionRecord> {
        if let Some(rec) = self
            .versions_shared(ds)
            .await?
            .iter()
            .find(|r| r.version == v && r.status == VersionStatus::Available)
        {
            return Ok(rec.clone());
        }
        self.version_uncached(ds, v).await
    }

    async fn version_uncached(&self, ds: &DatasetName, v: u32) -> Result<VersionRecord> {
        let got = self
            .store
            .get_many(Table::Meta, &[keys::version(ds, v)])
            .await?
            .remove(0);
        let Some(bytes) = got else {
            self.catalog.dataset(ds).await?;
            return Err(ServiceError::UnknownVersion {
                dataset: ds.to_string(),
                version: v,
            });
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| ServiceError::corrupt_json("version", format!("{ds}/{v}"), &e))
    }

    /// A version that queries can use: available and not expired.
    pub async fn usable_version(&self, ds: &DatasetName, v: u32) -> Result<VersionRecord> {
        let rec = self.version(ds, v).await?;
        match rec.status {
            VersionStatus::Available if rec.valid_at(now_ms() as i64) => Ok(rec),
            VersionStatus::Available => Err(ServiceError::VersionExpired {
                dataset: ds.to_string(),
                version: v,
            }),
            VersionStatus::Materializing | VersionStatus::Failed => {
                Err(ServiceError::VersionNotReady {
                    dataset: ds.to_string(),
                    version: v,
                    status: match rec.status {
                        VersionStatus::Failed => "failed",
                        _ => "materializing",
                    },
                    job: rec.job.clone().unwrap_or_default(),
                })
            }
        }
    }

    /// The newest usable version, if any.
    pub async fn latest_version(&self, ds: &DatasetName) -> Result<Option<VersionRecord>> {
        let now = now_ms() as i64;
        Ok(self
            .versions_shared(ds)
            .await?
            .iter()
            .rev()
            .find(|v| v.valid_at(now))
            .cloned())
    }

    /// Start materializing a version of every table of a dataset at
    /// `time_stamp_ms` (rows valid then); returns the version and its job.
    pub async fn materialize(
        &self,
        ds: &DatasetName,
        time_stamp_ms: i64,
        expires_ms: Option<i64>,
    ) -> Result<(VersionRecord, JobRecord)> {
        let tables = self.tables(ds).await?;
        let mut vt = BTreeMap::new();
        for t in &tables {
            let next = self.next_id(t.uid).await?;
            vt.insert(
                t.name.to_string(),
                VersionTable {
                    uid: t.uid,
                    blocks: (next >> keys::ROW_BLOCK_BITS) + 1,
                    rows: 0,
                },
            );
        }
        // The next number: one past the newest, claimed by compare-and-set.
        let mut number = self.versions(ds).await?.last().map_or(1, |v| v.version + 1);
        let mut rec = VersionRecord {
            version: number,
            time_stamp_ms,
            expires_ms,
            status: VersionStatus::Materializing,
            job: None,
            tables: vt,
            purged: false,
        };
        loop {
            rec.version = number;
            if self
                .store
                .compare_and_set(
                    Table::Meta,
                    keys::version(ds, number),
                    None,
                    Some(encode(&rec)?),
                )
                .await?
            {
                break;
            }
            number += 1;
        }
        let total: u64 = rec.tables.values().map(|t| t.blocks).sum();
        let (job, _) = self
            .jobs
            .create(
                KIND,
                json!({"dataset": ds, "version": number}),
                total,
                "row blocks",
                Some(&format!("{KIND}/{ds}/{number}")),
                false,
            )
            .await?;
        self.versions_cache.invalidate(ds.as_str());
        let old = encode(&rec)?;
        rec.job = Some(job.id.clone());
        self.store
            .compare_and_set(
                Table::Meta,
                keys::version(ds, number),
                Some(old),
                Some(encode(&rec)?),
            )
            .await?;
        Ok((rec, job))
    }

    pub(super) async fn set_version(
        &self,
        ds: &DatasetName,
        v: u32,
        f: impl Fn(&mut VersionRecord),
    ) -> Result<()> {
        for _ in 0..64 {
            let key = keys::version(ds, v);
            let old = self
                .store
                .get_many(Table::Meta, std::slice::from_ref(&key))
                .await?
                .remove(0)
                .ok_or_else(|| ServiceError::UnknownVersion {
                    dataset: ds.to_string(),
                    version: v,
                })?;
            let mut rec: VersionRecord = serde_json::from_slice(&old)
                .map_err(|e| ServiceError::corrupt_json("version", format!("{ds}/{v}"), &e))?;
            f(&mut rec);
            if self
                .store
                .compare_and_set(Table::Meta, key, Some(old), Some(encode(&rec)?))
                .await?
            {
                self.versions_cache.invalidate(ds.as_str());
                return Ok(());
            }
        }
        Err(ServiceError::Contended {
            what: format!("version {v} of {ds}"),
            attempts: 64,
        })
    }

    /// Copy the rows of some blocks of a table that were valid at the
    /// version's time, with fresh root ids, and index them.
    async fn materialize_blocks(
        &self,
        t: &ResolvedTable,
        v: &VersionRecord,
        blocks: std::ops::Range<u64>,
    ) -> Result<u64> {
        let uid = t.uid();
        let mut kept = 0u64;
        for block in blocks {
            let live = Scan::partition(
                self.store.clone(),
                Table::Rows,
                keys::rows_partition(uid, keys::LIVE, block),
                SortRange::all(),
            )
            .collect()
            .await?;
            let mut rows = Vec::with_capacity(live.len());
            for (k, bytes) in live {
                let row = Row::decode(&bytes).map_err(|e| ServiceError::Corrupt {
                    what: "row",
                    key: format!("{}/{:?}", t.name(), keys::row_id(&k.sort)),
                    reason: e.to_string(),
                })?;
                if row.valid_at(v.time_stamp_ms) {
                    rows.push(Row {
                        deleted: None,
                        superceded_id: None,
                        valid: true,
                        ..row
                    });
                }
            }
            if rows.is_empty() {
                continue;
            }
            self.lookup_rows(t, &mut rows).await?;
            let puts = version_writes(t, v.version, block, &rows);
            kept += rows.len() as u64;
            self.store.put_rows(puts).await?;
        }
        Ok(kept)
    }

    async fn plan_materialize(&self, job: &JobRecord, phase: u32) -> Result<Option<Vec<TaskSpec>>> {
        let (ds, v) = params(job)?;
        let rec = self.version(&ds, v).await?;
        if phase == 1 {
            // Once every block is copied: condense the edges of each
            // synapse table (two bound points) into edge lists.
            let mut specs = Vec::new();
            for name in rec.tables.keys() {
                let tname =
                    neurocube_core::TableName::parse(name).map_err(|e| ServiceError::Corrupt {
                        what: "version",
                        key: format!("{ds}/{v}"),
                        reason: format!("table name {name}: {e}"),
                    })?;
                let t = self.table(&ds, &tname).await?;
                // The busy root ids of each bound point, packed.
                for c in t.schema.root_columns() {
                    if self.config.pack_min_rows > 0 {
                        specs.push(TaskSpec {
                            name: format!("{name}/pack-{}", t.schema.columns[c].name),
                            units: 1,
                            spec: json!({"table": name, "pack": c}),
                        });
                    }
                }
                if t.schema.points.iter().filter(|p| p.bound).count() == 2 {
                    specs.push(TaskSpec {
                        name: format!("{name}/edges"),
                        units: 1,
                        spec: json!({"table": name, "edges": true}),
                    });
                }
            }
            return Ok((!specs.is_empty()).then_some(specs));
        }
        if phase > 1 {
            return Ok(None);
        }
        let mut specs = Vec::new();
        for (name, t) in &rec.tables {
            let mut b = 0;
            while b < t.blocks {
                let end = (b + BLOCKS_PER_TASK).min(t.blocks);
                specs.push(TaskSpec {
                    name: format!("{name}/{b:012}"),
                    units: end - b,
                    spec: json!({"table": name, "from": b, "to": end}),
                });
                b = end;
            }
        }
        Ok(Some(specs))
    }

    async fn run_materialize(&self, job: &JobRecord, task: &TaskRecord) -> Result<u64> {
        let (ds, v) = params(job)?;
        let rec = self.version(&ds, v).await?;
        let bad = || ServiceError::Corrupt {
            what: "task",
            key: format!("{}/{}", job.id, task.name),
            reason: format!(
                "materialize task spec {} lacks table, from or to",
                task.spec
            ),
        };
        let name = task.spec["table"].as_str().ok_or_else(bad)?;
        let vt = rec.tables.get(name).ok_or_else(bad)?;
        let tname = neurocube_core::TableName::parse(name).map_err(|_| bad())?;
        let t = self.table(&ds, &tname).await?;
        if t.uid() != vt.uid {
            return Err(ServiceError::TableReplaced {
                dataset: ds.to_string(),
                table: name.to_string(),
                version: v,
            });
        }
        if task.spec["edges"] == true {
            self.condense_edges(&t, v).await?;
            return Ok(1);
        }
        if let Some(c) = task.spec["pack"].as_u64() {
            let c = usize::try_from(c)
                .ok()
                .filter(|c| *c < t.schema.columns.len())
                .ok_or_else(bad)?;
            self.pack_roots(&t, v, c).await?;
            return Ok(1);
        }
        let (from, to) = (
            task.spec["from"].as_u64().ok_or_else(bad)?,
            task.spec["to"].as_u64().ok_or_else(bad)?,
        );
        let kept = self.materialize_blocks(&t, &rec, from..to).await?;
        self.store
            .put_many(
                Table::Meta,
                vec![(
                    keys::version_count(&ds, v, &task.name),
                    Bytes::from(kept.to_le_bytes().to_vec()),
                )],
            )
            .await?;
        Ok(to - from)
    }

    async fn finish_materialize(&self, job: &JobRecord) -> Result<()> {
        let (ds, v) = params(job)?;
        if self.version_uncached(&ds, v).await?.status == VersionStatus::Available {
            // Another worker finished it.
            return Ok(());
        }
        let counts = Scan::partition(
            self.store.clone(),
            Table::Meta,
            keys::version_counts_partition(&ds, v),
            SortRange::all(),
        )
        .collect()
        .await?;
        // Every task must have reported its count before the version is
        // declared available (else this step fails and is retried).
        let tasks = self.jobs.tasks(&job.id, Some(0)).await?;
        let reported: std::collections::HashSet<&[u8]> =
            counts.iter().map(|(k, _)| k.sort.as_ref()).collect();
        if let Some((_, t)) = tasks
            .iter()
            .find(|(_, t)| !reported.contains(t.name.as_bytes()))
        {
            return Err(ServiceError::Internal {
                during: "finishing a version",
                reason: format!("task {} has not reported its row count yet", t.name),
            });
        }
        let mut per_table: BTreeMap<String, u64> = BTreeMap::new();
        for (k, val) in counts {
            let task = String::from_utf8_lossy(&k.sort).to_string();
            let table = task
                .rsplit_once('/')
                .map_or(task.as_str(), |(t, _)| t)
                .to_string();
            let mut a = [0u8; 8];
            if val.len() == 8 {
                a.copy_from_slice(&val);
            }
            *per_table.entry(table).or_default() += u64::from_le_bytes(a);
        }
        self.set_version(&ds, v, |r| {
            for (name, t) in &mut r.tables {
                t.rows = per_table.get(name).copied().unwrap_or(0);
            }
            r.status = VersionStatus::Available;
        })
        .await?;
        self.store
            .delete_partition(Table::Meta, &keys::version_counts_partition(&ds, v))
            .await?;
        Ok(())
    }

    /// Mark a version failed (its job failed).
    pub async fn fail_version(&self, ds: &DatasetName, v: u32) -> Result<()> {
        self.set_version(ds, v, |r| r.status = VersionStatus::Failed)
            .await
    }
}

/// A version's stored form of some rows of a block: the rows; per bound
/// point a covering root-id index entry (for a table with two bound points,
/// as synapses, sorted by the other point's root id, so a (pre, post) pair
/// is one key range); a spatial index entry naming the id; and, for two
/// bound points, the block's (pre, post) edges with their synapse count
/// and summed `size`.
fn version_writes(
    t: &ResolvedTable,
    version: u32,
    block: u64,
    rows: &[Row],
) -> Vec<(Table, neurocube_store::Key, Bytes)> {
    use neurocube_core::annotation::Value;
    use neurocube_core::morton;
    let uid = t.uid();
    let roots = t.schema.root_columns();
    let pair = roots.len() == 2;
    let size_col = t
        .schema
        .column("size")
        .filter(|c| t.schema.columns[*c].kind == neurocube_core::annotation::ColumnType::Float);
    let mut puts = Vec::with_capacity(rows.len() * 4);
    let mut edges: BTreeMap<(u64, u64), (u64, f64)> = BTreeMap::new();
    for row in rows {
        let bytes = Bytes::from(row.to_bytes());
        let root = |c: usize| row.values[c].as_id();
        for (i, &c) in roots.iter().enumerate() {
            let Some(r) = root(c) else { continue };
            let mut sort = Vec::with_capacity(16);
            if pair {
                sort.extend_from_slice(&root(roots[1 - i]).unwrap_or(0).to_be_bytes());
            }
            sort.extend_from_slice(&row.id.to_be_bytes());
            puts.push((
                Table::RowIndex,
                neurocube_store::Key::new(
                    keys::index_partition(uid, version, c as u16, keys::IndexKind::Root, r),
                    sort,
                ),
                bytes.clone(),
            ));
        }
        if let Some(p) = t.schema.points.first()
            && let Some(pos) = row.values[p.position].as_pos()
            && pos.iter().all(|c| *c >= 0)
        {
            let b = t.cell_bits;
            let cell = morton::encode([
                pos[0] as u64 >> b[0],
                pos[1] as u64 >> b[1],
                pos[2] as u64 >> b[2],
            ]);
            puts.push((
                Table::RowIndex,
                keys::index_entry(
                    keys::index_partition(
                        uid,
                        version,
                        p.position as u16,
                        keys::IndexKind::Cell,
                        cell,
                    ),
                    row.id,
                ),
                Bytes::new(),
            ));
        }
        if pair && let (Some(a), Some(b)) = (root(roots[0]), root(roots[1])) {
            let size = size_col
                .and_then(|c| match row.values[c] {
                    Value::Float(f) => Some(f),
                    _ => None,
                })
                .unwrap_or(0.0);
            let e = edges.entry((a, b)).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += size;
        }
        puts.push((Table::Rows, keys::row(uid, version, row.id), bytes));
    }
    for ((a, b), (n, size)) in edges {
        let mut sort = Vec::with_capacity(16);
        sort.extend_from_slice(&b.to_be_bytes());
        sort.extend_from_slice(&block.to_be_bytes());
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&n.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        puts.push((
            Table::RowIndex,
            neurocube_store::Key::new(
                keys::index_partition(uid, version, roots[0] as u16, keys::IndexKind::Edge, a),
                sort,
            ),
            Bytes::from(v),
        ));
    }
    puts
}

fn params(job: &JobRecord) -> Result<(DatasetName, u32)> {
    let bad = || ServiceError::Corrupt {
        what: "job",
        key: job.id.clone(),
        reason: format!(
            "materialize parameters {} lack dataset or version",
            job.params
        ),
    };
    let ds = job.params["dataset"]
        .as_str()
        .and_then(|d| DatasetName::parse(d).ok())
        .ok_or_else(bad)?;
    let v = job.params["version"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(bad)?;
    Ok((ds, v))
}

/// The `materialize` kind (holding the annotations weakly).
pub(super) struct Handler(pub(super) Weak<Annotations>);

impl Handler {
    fn get(&self) -> Result<Arc<Annotations>> {
        self.0.upgrade().ok_or(ServiceError::ShuttingDown)
    }
}

impl JobHandler for Handler {
    fn plan<'a>(
        &'a self,
        job: &'a JobRecord,
        phase: u32,
    ) -> BoxFuture<'a, Result<Option<Vec<TaskSpec>>>> {
        Box::pin(async move { self.get()?.plan_materialize(job, phase).await })
    }

    fn run<'a>(&'a self, job: &'a JobRecord, task: &'a TaskRecord) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.get()?.run_materialize(job, task).await })
    }

    fn finish<'a>(&'a self, job: &'a JobRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.get()?.finish_materialize(job).await })
    }

    fn failed<'a>(&'a self, job: &'a JobRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (ds, v) = params(job)?;
            self.get()?.fail_version(&ds, v).await
        })
    }
}
