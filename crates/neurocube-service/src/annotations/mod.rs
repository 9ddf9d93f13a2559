//! The annotation store: declared tables of a dataset (CAVE's schemas and
//! user-declared ones), rows written through a group-committing batch
//! writer, root ids looked up in the bound segmentation, materialized
//! versions, and CAVE-style queries streamed as Arrow, CSV or JSON lines.
//!
//! Storage (`keys.rs`): table records in `meta`; rows in `rows`, one
//! partition per 4,096 consecutive ids of a table version (version 0 is
//! live); index entries in `row_index`, one partition per (table version,
//! column, root id or spatial cell), sorted by row id. Live index entries
//! name ids; a version's hold the whole row, so a query by root id reads one
//! partition and nothing else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use neurocube_core::annotation::{Col, Condition, Filter, Op, Row};

use serde_json::Value as J;

use crate::catalog::Catalog;
use crate::error::{Result, ServiceError};
use crate::jobs::{JobHandler, Jobs, now_ms};
use crate::purge::Purger;
use crate::tiles::TileCache;
use neurocube_store::Store;

mod cursor;
pub(crate) mod edges;
mod output;
mod packed;
mod pairs;
pub mod query;
mod request;
pub mod retire;
mod rows;
mod rowstream;
pub mod tables;
pub mod upload;
pub mod versions;
pub mod writer;

pub use cursor::Cursor;
pub use output::{Encoder, OutColumn, OutputFormat, Positions, Record};
pub use query::{At, Plan};
pub use request::{
    JoinRequest, QUERY_FIELDS, QueryRequest, parse_time, synapse_filters, synapse_table,
};
use rowstream::{BATCH, encode_stream, skip_rows};
pub use tables::{ResolvedTable, TableRecord, TableSpec};
pub use upload::{Incoming, UploadFormat};
pub use versions::{VersionRecord, VersionStatus, VersionTable};
pub use writer::{BatchWriter, WriterConfig};

/// Settings of the annotation store.
#[derive(Clone, Copy, Debug)]
pub struct AnnotationConfig {
    /// The batch writer.
    pub writer: WriterConfig,
    /// Largest `limit` whose result is gathered to give a next-page token.
    pub max_paged_limit: u64,
    /// Most rows a join's right side may have.
    pub max_join_rows: usize,
    /// Most nodes a connectivity PNG may draw.
    pub max_graph_png_nodes: usize,
    /// Most rows one step of the pair plan gathers: a range cut at its
    /// per-call limit is read on alone until then.
    pub query_batch_rows: usize,
    /// A version stores the rows of a root id with at least this many
    /// synapses (on one bound point) together in columns as well (0: never).
    pub pack_min_rows: usize,
    /// An upload of at least this many rows writes its index entries by
    /// ingestion where the store ingests (the embedded engine), before the
    /// group commit of its rows (0: never).
    pub ingest_min_rows: usize,
}

impl Default for AnnotationConfig {
    fn default() -> Self {
        Self {
            writer: WriterConfig::default(),
            max_paged_limit: 200_000,
            max_join_rows: 1_000_000,
            max_graph_png_nodes: 4096,
            query_batch_rows: 65_536,
            pack_min_rows: 256,
            ingest_min_rows: 4096,
        }
    }
}

/// Annotation tables, rows, versions and queries.
pub struct Annotations {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    tiles: Arc<TileCache>,
    jobs: Arc<Jobs>,
    /// Where deleted tables' and retired versions' rows go.
    purger: Arc<Purger>,
    /// The batch writer.
    pub writer: Arc<BatchWriter>,
    tables: moka::sync::Cache<(String, String), ResolvedTable>,
    /// Versions of a dataset, for a couple of seconds (made or finished
    /// here: dropped at once).
    versions_cache: moka::sync::Cache<String, Arc<Vec<VersionRecord>>>,
    /// Tables of a dataset, for a few seconds (changed here: dropped at once).
    tables_cache: moka::sync::Cache<String, Arc<Vec<TableRecord>>>,
    /// Per table uid: this process's reserved ids `next..end`.
    id_blocks: std::sync::Mutex<std::collections::HashMap<u64, (u64, u64)>>,
    config: AnnotationConfig,
}

/// A query's answer, ready to stream.
pub struct QueryOutput {
    /// The version read (`None`: live rows).
    pub version: Option<u32>,
    /// The time the rows were valid at (ms).
    pub time_stamp_ms: i64,
    /// How the rows were found.
    pub plan: String,
    /// Voxel size of the positions in the output (nm).
    pub resolution: [f64; 3],
    /// Token of the next page, when a limit cut the result.
    pub next_page: Option<String>,
    /// The body.
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl Annotations {
    /// The annotation store over the catalog and volumes.
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        tiles: Arc<TileCache>,
        jobs: Arc<Jobs>,
        purger: Arc<Purger>,
        config: AnnotationConfig,
        registry: &prometheus::Registry,
    ) -> Arc<Self> {
        let writer = Arc::new(BatchWriter::new(store.clone(), config.writer, registry));
        Arc::new(Self {
            store,
            catalog,
            tiles,
            jobs,
            purger,
            writer,
            tables: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
            versions_cache: moka::sync::Cache::builder()
                .max_capacity(1000)
                .time_to_live(Duration::from_secs(2))
                .build(),
            tables_cache: moka::sync::Cache::builder()
                .max_capacity(1000)
                .time_to_live(Duration::from_secs(5))
                .build(),
            id_blocks: std::sync::Mutex::default(),
            config,
        })
    }

    /// The handler of `materialize` jobs (holding the store weakly).
    #[must_use]
    pub fn job_handler(self: &Arc<Self>) -> Arc<dyn JobHandler> {
        Arc::new(versions::Handler(Arc::downgrade(self)))
    }

    /// Rows of a table valid now (live count).
    pub async fn live_count(&self, t: &ResolvedTable) -> Result<u64> {
        let (added, invalidated) = self.writer.counts(t.uid()).await?;
        Ok(u64::try_from(added - invalidated).unwrap_or(0))
    }

    /// Where a query reads: a version, a timestamp, or the default (the
    /// newest version, else the live rows now).
    pub async fn resolve_at(
        &self,
        t: &ResolvedTable,
        version: Option<u32>,
        timestamp: Option<&J>,
    ) -> Result<(At, Option<u32>, i64)> {
        match (version, timestamp) {
            (Some(_), Some(_)) => Err(ServiceError::field(
                "timestamp",
                "give a version or a timestamp, not both",
            )),
            (Some(v), None) => {
                let rec = self.usable_version(&t.dataset, v).await?;
                self.in_version(t, rec)
            }
            (None, Some(ts)) => {
                let at = parse_time(ts)?;
                let blocks = (self.next_id(t.uid()).await? >> crate::keys::ROW_BLOCK_BITS) + 1;
                Ok((At::Live(at, blocks), None, at))
            }
            (None, None) => match self.latest_version(&t.dataset).await? {
                Some(rec) if rec.tables.contains_key(t.name().as_str()) => self.in_version(t, rec),
                _ => {
                    let now = now_ms() as i64;
                    let blocks = (self.next_id(t.uid()).await? >> crate::keys::ROW_BLOCK_BITS) + 1;
                    Ok((At::Live(now, blocks), None, now))
                }
            },
        }
    }

    /// The same point in time for another table: its rows in the same
    /// version (404 if it is not in it), or its live rows at the same time.
    pub(crate) async fn at_same(&self, t: &ResolvedTable, at: &At) -> Result<At> {
        Ok(match at {
            At::Version(v, _) => {
                let rec = self.usable_version(&t.dataset, *v).await?;
                self.in_version(t, rec)?.0
            }
            At::Live(ts, _) => {
                let blocks = (self.next_id(t.uid()).await? >> crate::keys::ROW_BLOCK_BITS) + 1;
                At::Live(*ts, blocks)
            }
        })
    }

    /// The rows of `t` matching `filter` at `at` by `plan`, a batch at a
    /// time (for subsystems built on the tables, as the graph).
    pub(crate) fn matching_rows(
        self: &Arc<Self>,
        t: &ResolvedTable,
        at: &At,
        filter: Filter,
        plan: Plan,
    ) -> BoxStream<'static, Result<Vec<Row>>> {
        query::run(
            self.clone(),
            t.clone(),
            at.clone(),
            Arc::new(filter),
            plan,
            Cursor::default(),
        )
        .map(|b| b.map(|rows| rows.into_iter().map(|(r, _)| r).collect()))
        .boxed()
    }

    /// Reference rows with the target rows they point to (rows whose
    /// target is missing, or not valid at a live time, are dropped).
    pub(crate) async fn with_target_rows(
        &self,
        target: &ResolvedTable,
        at: &At,
        target_col: usize,
        rows: Vec<Row>,
    ) -> Result<Vec<(Row, Row)>> {
        let rows = rows.into_iter().map(|r| (r, Cursor::default())).collect();
        Ok(query::with_targets(self, target, at, target_col, rows)
            .await?
            .into_iter()
            .filter_map(|(mut rec, _)| {
                let t = rec.pop()??;
                let r = rec.pop()??;
                Some((r, t))
            })
            .collect())
    }

    /// Most nodes a connectivity PNG may draw.
    #[must_use]
    pub fn max_graph_png_nodes(&self) -> usize {
        self.config.max_graph_png_nodes
    }

    /// The store (for subsystems reading the annotation indexes).
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn in_version(&self, t: &ResolvedTable, rec: VersionRecord) -> Result<(At, Option<u32>, i64)> {
        let vt = rec
            .tables
            .get(t.name().as_str())
            .filter(|vt| vt.uid == t.uid())
            .ok_or_else(|| ServiceError::TableNotInVersion {
                dataset: t.dataset.to_string(),
                table: t.name().to_string(),
                version: rec.version,
            })?;
        Ok((
            At::Version(rec.version, vt.blocks),
            Some(rec.version),
            rec.time_stamp_ms,
        ))
    }

    /// Run a query: plan it, and stream its rows in `format`.
    pub async fn query(
        self: &Arc<Self>,
        t: &ResolvedTable,
        req: QueryRequest,
        format: OutputFormat,
    ) -> Result<QueryOutput> {
        let (at, version, time_stamp_ms) = self
            .resolve_at(t, req.version, req.timestamp.as_ref())
            .await?;
        let mut filter = Filter::parse(&req.filters, &t.schema)
            .map_err(|e| ServiceError::field(e.field, e.message))?;
        let scale = match req.desired_resolution {
            Some(d) if d.iter().all(|v| v.is_finite() && *v > 0.0) => {
                let r = t.record.spec.voxel_resolution;
                Some([r[0] / d[0], r[1] / d[1], r[2] / d[2]])
            }
            Some(d) => {
                return Err(ServiceError::field(
                    "desired_resolution",
                    format!("desired_resolution {d:?} must be three positive numbers (nm)"),
                ));
            }
            None => None,
        };
        let pos = Positions {
            scale,
            split: req.split_positions,
        };
        let resolution = req
            .desired_resolution
            .unwrap_or(t.record.spec.voxel_resolution);
        let select = req.select_columns.as_deref();
        if let Some(sel) = select {
            check_columns(t, sel)?;
        }
        // Reference tables come merged with their targets (CAVE's query_table).
        let merge = t.schema.reference && req.merge_reference.unwrap_or(true);
        let target = match (&t.record.spec.reference_table, merge) {
            (Some(name), true) => Some(self.table(&t.dataset, name).await?),
            _ => None,
        };
        let target_filter = match (&target, &req.target_filters) {
            (Some(tt), Some(f)) => Some(Filter::parse(f, &tt.schema).map_err(|e| {
                ServiceError::field(e.field, format!("{}: {}", tt.name(), e.message))
            })?),
            (None, Some(_)) => {
                return Err(ServiceError::field(
                    "tables",
                    format!(
                        "table '{}' is not a reference table: it has no target to filter",
                        t.name()
                    ),
                ));
            }
            _ => None,
        };
        let mut columns = output::columns_of(&t.schema, 0, select, pos, true);
        if let Some(target) = &target {
            if let Some(sel) = &req.target_select {
                check_columns(target, sel)?;
            }
            columns.retain(|c| c.name != "superceded_id");
            let mut tc =
                output::columns_of(&target.schema, 1, req.target_select.as_deref(), pos, true);
            tc.retain(|c| c.name != "superceded_id");
            if req.suffixes.is_none() {
                for c in &mut tc {
                    if columns.iter().any(|o| o.name == c.name) {
                        c.name.push_str("_ref");
                    }
                }
            }
            columns.extend(tc);
        }
        // A join restricts the queried table to keys found in the other.
        let mut joined: Option<(usize, std::collections::HashMap<u64, Vec<Record>>, usize)> = None;
        if let Some(j) = &req.join {
            let (left_col, right) = self.join_side(t, j, &at).await?;
            let keys: Vec<u64> = right.keys().copied().collect();
            filter.conditions.push(Condition {
                col: Col::Data(left_col),
                name: j.on[0].clone(),
                op: Op::In(query::id_set(keys)),
            });
            let other = self.table(&t.dataset, &j.table).await?;
            let suffix = j.suffix.clone().unwrap_or_else(|| format!("_{}", j.table));
            let first_side = if target.is_some() { 2 } else { 1 };
            let cave = req.suffixes.is_some();
            let mut jc = output::columns_of(
                &other.schema,
                first_side,
                j.select_columns.as_deref(),
                pos,
                cave,
            );
            if cave {
                jc.retain(|c| c.name != "superceded_id");
                columns.retain(|c| c.name != "superceded_id");
            } else {
                for c in &mut jc {
                    c.name.push_str(&suffix);
                }
            }
            columns.extend(jc);
            joined = Some((left_col, right, first_side));
        }
        if let Some(sfx) = &req.suffixes {
            output::suffix_shared(&mut columns, sfx);
        }
        let plan = query::plan(t, &filter, matches!(at, At::Version(..)));
        let plan_text = plan.describe(t);
        // One busy root id of a version, and nothing else: its packed blocks.
        if target.is_none()
            && req.join.is_none()
            && req.page_token.is_none()
            && req.sample_every.is_none_or(|k| k <= 1)
            && req.offset.unwrap_or(0) == 0
            && let Some((column, root)) = packed::one_root(&plan, &filter)
        {
            let q = packed::PackedQuery {
                at: at.clone(),
                column,
                root,
                limit: req.limit,
                max_paged_limit: self.config.max_paged_limit,
                version,
                time_stamp_ms,
                resolution,
            };
            let enc = Encoder::new(format, columns.clone(), pos);
            if let Some(out) = packed::answer(self, t, q, enc, plan_text.clone()).await? {
                return Ok(out);
            }
        }
        let start = match &req.page_token {
            Some(tok) => Cursor::parse(tok)?,
            None => Cursor::default(),
        };
        let rows = query::run(
            self.clone(),
            t.clone(),
            at.clone(),
            Arc::new(filter),
            plan,
            start,
        );
        let ann = self.clone();
        let target_filter = target_filter.map(Arc::new);
        let sample_every = req.sample_every.filter(|k| *k > 1);
        let target_col = t.schema.column("target_id").unwrap_or(0);
        let at2 = at.clone();
        let records = rows
            .then(move |batch| {
                let (ann, target, at) = (ann.clone(), target.clone(), at2.clone());
                let target_filter = target_filter.clone();
                let sample = sample_every;
                async move {
                    let mut batch = batch?;
                    if let Some(k) = sample {
                        batch.retain(|(r, _)| sample_hash(r.id).is_multiple_of(k));
                    }
                    match &target {
                        Some(tt) => {
                            let mut merged =
                                query::with_targets(&ann, tt, &at, target_col, batch).await?;
                            if let Some(f) = &target_filter {
                                merged.retain(|(rec, _)| {
                                    rec.get(1)
                                        .and_then(Option::as_ref)
                                        .is_some_and(|r| f.matches(r))
                                });
                            }
                            Ok::<_, ServiceError>(merged)
                        }
                        None => Ok(batch.into_iter().map(|(r, c)| (vec![Some(r)], c)).collect()),
                    }
                }
            })
            .map(move |batch| {
                let batch = batch?;
                let Some((left_col, right, _)) = &joined else {
                    return Ok(batch);
                };
                let mut out = Vec::with_capacity(batch.len());
                for (rec, c) in batch {
                    let key = rec[0].as_ref().and_then(|r| r.values[*left_col].as_id());
                    for m in key.and_then(|k| right.get(&k)).into_iter().flatten() {
                        let mut r = rec.clone();
                        r.extend(m.iter().cloned());
                        out.push((r, c.clone()));
                    }
                }
                Ok(out)
            })
            .boxed();
        let offset = req.offset.unwrap_or(0);
        let skipped = skip_rows(records, offset);
        let mut encoder = Encoder::new(format, columns, pos);
        match req.limit {
            Some(limit) if limit <= self.config.max_paged_limit => {
                // Gather the page to know whether another follows.
                let mut got: Vec<(Record, Cursor)> = Vec::new();
                let mut s = skipped;
                while let Some(batch) = s.next().await {
                    got.extend(batch?);
                    if got.len() as u64 > limit {
                        break;
                    }
                }
                let more = got.len() as u64 > limit;
                got.truncate(limit as usize);
                let next_page = more.then(|| got.last().map(|(_, c)| c.token())).flatten();
                let recs: Vec<Record> = got.into_iter().map(|(r, _)| r).collect();
                let mut parts = vec![encoder.header()?];
                for chunk in recs.chunks(BATCH) {
                    parts.push(encoder.batch(chunk)?);
                }
                if recs.is_empty() && format == OutputFormat::Arrow {
                    parts.push(encoder.batch(&[])?);
                }
                parts.push(encoder.finish()?);
                Ok(QueryOutput {
                    version,
                    time_stamp_ms,
                    plan: plan_text,
                    resolution,
                    next_page,
                    body: stream::iter(parts.into_iter().map(Ok)).boxed(),
                })
            }
            limit => Ok(QueryOutput {
                version,
                time_stamp_ms,
                plan: plan_text,
                resolution,
                next_page: None,
                body: encode_stream(skipped, encoder, limit),
            }),
        }
    }

    /// The right side of a join, by its key: the other table's matching rows
    /// (merged with their targets when it is a reference table).
    async fn join_side(
        self: &Arc<Self>,
        t: &ResolvedTable,
        j: &JoinRequest,
        at: &At,
    ) -> Result<(usize, std::collections::HashMap<u64, Vec<Record>>)> {
        let left_col = t.schema.column(&j.on[0]).ok_or_else(|| {
            ServiceError::field(
                "join",
                format!("table '{}' has no column '{}'", t.name(), j.on[0]),
            )
        })?;
        let other = self.table(&t.dataset, &j.table).await?;
        let filter = Filter::parse(&j.filters, &other.schema)
            .map_err(|e| ServiceError::field(format!("join.{}", e.field), e.message))?;
        let target = match &other.record.spec.reference_table {
            Some(name) => Some(self.table(&t.dataset, name).await?),
            None => None,
        };
        // The key column: on the other table, or on its target.
        let (key_side, key_col) = match other.schema.column(&j.on[1]) {
            Some(c) => (0, c),
            None => match target.as_ref().and_then(|tt| tt.schema.column(&j.on[1])) {
                Some(c) => (1, c),
                None => {
                    return Err(ServiceError::field(
                        "join",
                        format!("table '{}' has no column '{}'", j.table, j.on[1]),
                    ));
                }
            },
        };
        let other_at = match at {
            At::Version(v, _) => {
                let rec = self.usable_version(&t.dataset, *v).await?;
                self.in_version(&other, rec)?.0
            }
            At::Live(ts, _) => At::Live(
                *ts,
                (self.next_id(other.uid()).await? >> crate::keys::ROW_BLOCK_BITS) + 1,
            ),
        };
        let plan = query::plan(&other, &filter, matches!(other_at, At::Version(..)));
        let mut rows = query::run(
            self.clone(),
            other.clone(),
            other_at.clone(),
            Arc::new(filter),
            plan,
            Cursor::default(),
        );
        let mut map: std::collections::HashMap<u64, Vec<Record>> = std::collections::HashMap::new();
        let mut n = 0;
        let target_col = other.schema.column("target_id").unwrap_or(0);
        while let Some(batch) = rows.next().await {
            let batch = batch?;
            let recs: Vec<Record> = match &target {
                Some(tt) => query::with_targets(self, tt, &other_at, target_col, batch)
                    .await?
                    .into_iter()
                    .map(|(r, _)| r)
                    .collect(),
                None => batch.into_iter().map(|(r, _)| vec![Some(r)]).collect(),
            };
            for r in recs {
                n += 1;
                if n > self.config.max_join_rows {
                    return Err(ServiceError::field(
                        "join",
                        format!(
                            "the joined table matches more than {} rows; filter it further",
                            self.config.max_join_rows
                        ),
                    ));
                }
                let key = r
                    .get(key_side)
                    .and_then(Option::as_ref)
                    .and_then(|row: &Row| row.values[key_col].as_id());
                if let Some(k) = key {
                    // Only the other table's own row is added to the result.
                    map.entry(k).or_default().push(vec![r[0].clone()]);
                }
            }
        }
        Ok((left_col, map))
    }
}

/// A well-mixed hash of a row id (splitmix64), for samples.
fn sample_hash(id: u64) -> u64 {
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Refuse a column selection naming a column the table does not have.
fn check_columns(t: &ResolvedTable, select: &[String]) -> Result<()> {
    for c in select {
        if !(["id", "created", "superceded_id", "valid"].contains(&c.as_str())
            || t.schema.column(c).is_some())
        {
            return Err(ServiceError::field(
                "select_columns",
                format!("table '{}' has no column '{c}'", t.name()),
            ));
        }
    }
    Ok(())
}

/// Rows of a decoded stored row: for tests and the demo.
#[must_use]
pub fn decode_row(b: &[u8]) -> Option<Row> {
    Row::decode(b).ok()
}
