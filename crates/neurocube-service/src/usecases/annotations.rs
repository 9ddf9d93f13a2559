//! The annotation use cases: tables, rows, queries, versions.

use bytes::Bytes;
use futures::Stream;
use neurocube_core::annotation::Schema;
use neurocube_core::{DatasetName, TableName};
use serde::Serialize;
use serde_json::Value;

use crate::Services;
use crate::annotations::{
    OutputFormat, QueryOutput, QueryRequest, TableRecord, TableSpec, UploadFormat, VersionRecord,
    synapse_filters, synapse_table, upload,
};
use crate::body::{self, BodyLimit};
use crate::catalog::Created;
use crate::context::RequestContext;
use crate::error::{Result, ServiceError};
use crate::jobs::{JobRecord, now_ms};

/// Uploads below this size are parsed on the request's thread.
const SMALL_UPLOAD: usize = 64 << 10;

/// A table as `GET .../tables/{t}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TableView {
    /// The record.
    #[serde(flatten)]
    pub record: TableRecord,
    /// The dataset.
    pub dataset: DatasetName,
    /// Its stored columns, in order, with their types.
    pub columns: Vec<neurocube_core::annotation::Column>,
    /// Rows valid now.
    pub row_count: u64,
}

/// A `synapse_query`: CAVE's arguments.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynapseQuery {
    /// The synapse table (default: the dataset's only one).
    #[serde(default)]
    pub table: Option<TableName>,
    /// Presynaptic root ids.
    #[serde(default)]
    pub pre_ids: Option<IdList>,
    /// Postsynaptic root ids (with `pre_ids`: both must match).
    #[serde(default)]
    pub post_ids: Option<IdList>,
    /// A box on the post point, `[[x0,y0,z0],[x1,y1,z1]]` in table voxels.
    #[serde(default)]
    pub bounding_box: Option<Value>,
    /// Version (default: the newest).
    #[serde(default)]
    pub version: Option<u32>,
    /// Instead of a version: live rows at this time.
    #[serde(default)]
    pub timestamp: Option<Value>,
    /// Only these columns.
    #[serde(default)]
    pub select_columns: Option<Vec<String>>,
    /// At most this many rows.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Resume after an earlier page.
    #[serde(default)]
    pub page_token: Option<String>,
    /// Rescale positions to this voxel size (nm).
    #[serde(default)]
    pub desired_resolution: Option<[f64; 3]>,
    /// Positions as `_x`/`_y`/`_z` columns.
    #[serde(default)]
    pub split_positions: bool,
}

/// One id or a list of ids (CAVE accepts both).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum IdList {
    /// One.
    One(u64),
    /// Several.
    Many(Vec<u64>),
}

impl IdList {
    fn into_vec(self) -> Vec<u64> {
        match self {
            IdList::One(i) => vec![i],
            IdList::Many(v) => v,
        }
    }
}

impl Services {
    /// Create an annotation table.
    pub async fn create_table(
        &self,
        ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
        spec: TableSpec,
    ) -> Result<Created> {
        self.annotations
            .create_table(ds, name, spec, ctx.principal.name())
            .await
    }

    /// A table with its columns and row count.
    pub async fn get_table(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
    ) -> Result<TableView> {
        let t = self.annotations.table(ds, name).await?;
        let row_count = self.annotations.live_count(&t).await?;
        Ok(TableView {
            record: (*t.record).clone(),
            dataset: ds.clone(),
            columns: t.schema.columns.clone(),
            row_count,
        })
    }

    /// Every table of a dataset.
    pub async fn list_tables(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
    ) -> Result<Vec<TableRecord>> {
        self.annotations.tables(ds).await
    }

    /// Delete a table.
    pub async fn delete_table(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
    ) -> Result<()> {
        self.annotations.delete_table(ds, name).await
    }

    async fn upload_rows<S, E>(
        &self,
        ds: &DatasetName,
        name: &TableName,
        format: UploadFormat,
        declared: Option<u64>,
        body: S,
    ) -> Result<(crate::annotations::ResolvedTable, Vec<upload::Incoming>)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let t = self.annotations.table(ds, name).await?;
        let limit = BodyLimit {
            bytes: self.config.max_upload_bytes,
            source: "server setting annotations.max_upload_bytes".into(),
            advice: "split the upload",
            idle: self.config.body_idle_timeout,
        };
        body::check_declared(declared, &limit)?;
        // Parsed rows take about twice their text.
        let _permit = self
            .admission
            .admit(declared.unwrap_or(limit.bytes).saturating_mul(3))?;
        let bytes = body::read(declared, body, &limit).await?;
        let computed = upload::computed_columns(&t.schema, t.record.spec.segmentation.is_some());
        let schema = t.schema.clone();
        // Small uploads (the single rows of a write storm) are parsed here;
        // big ones off the async executor.
        let rows = if bytes.len() < SMALL_UPLOAD {
            upload::parse(format, &bytes, &schema, &computed)?
        } else {
            tokio::task::spawn_blocking(move || upload::parse(format, &bytes, &schema, &computed))
                .await??
        };
        Ok((t, rows))
    }

    /// Insert rows from an upload; returns their ids in upload order.
    pub async fn insert_rows<S, E>(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
        format: UploadFormat,
        declared: Option<u64>,
        body: S,
    ) -> Result<Vec<u64>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (t, rows) = self.upload_rows(ds, name, format, declared, body).await?;
        self.annotations.insert(&t, rows).await
    }

    /// Update rows (each names the id it replaces); returns (old, new) ids.
    pub async fn update_rows<S, E>(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
        format: UploadFormat,
        declared: Option<u64>,
        body: S,
    ) -> Result<Vec<(u64, u64)>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        not_objects(&self.annotations.table(ds, name).await?, "updated")?;
        let (t, rows) = self.upload_rows(ds, name, format, declared, body).await?;
        self.annotations.update(&t, rows).await
    }

    /// Delete rows by id.
    pub async fn delete_rows(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
        ids: &[u64],
    ) -> Result<usize> {
        let t = self.annotations.table(ds, name).await?;
        not_objects(&t, "deleted")?;
        self.annotations.delete_rows(&t, ids).await
    }

    /// Query a table.
    pub async fn query_table(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
        req: QueryRequest,
        format: OutputFormat,
    ) -> Result<QueryOutput> {
        let t = self.annotations.table(ds, name).await?;
        self.annotations.query(&t, req, format).await
    }

    /// CAVE's `synapse_query`: synapses by pre and/or post root ids and a box.
    pub async fn synapse_query(
        &self,
        ctx: &RequestContext,
        ds: &DatasetName,
        q: SynapseQuery,
        format: OutputFormat,
    ) -> Result<QueryOutput> {
        let table = match q.table {
            Some(t) => t,
            None => synapse_table(&self.annotations, ds).await?,
        };
        let req = QueryRequest {
            filters: synapse_filters(
                q.pre_ids.map(IdList::into_vec),
                q.post_ids.map(IdList::into_vec),
                q.bounding_box,
            ),
            select_columns: q.select_columns,
            limit: q.limit,
            offset: q.offset,
            page_token: q.page_token,
            desired_resolution: q.desired_resolution,
            split_positions: q.split_positions,
            version: q.version,
            timestamp: q.timestamp,
            ..QueryRequest::default()
        };
        self.query_table(ctx, ds, &table, req, format).await
    }

    /// Rows of a table: in a version, at a timestamp, or (neither) valid now.
    pub async fn count_rows(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
        version: Option<u32>,
        timestamp: Option<Value>,
    ) -> Result<u64> {
        let t = self.annotations.table(ds, name).await?;
        match (version, timestamp) {
            (None, None) => self.annotations.live_count(&t).await,
            (Some(v), None) => {
                let rec = self.annotations.usable_version(ds, v).await?;
                rec.tables
                    .get(name.as_str())
                    .filter(|vt| vt.uid == t.uid())
                    .map(|vt| vt.rows)
                    .ok_or_else(|| ServiceError::TableNotInVersion {
                        dataset: ds.to_string(),
                        table: name.to_string(),
                        version: v,
                    })
            }
            (v, ts) => {
                // At a timestamp: count the rows valid then.
                let req = QueryRequest {
                    version: v,
                    timestamp: ts,
                    select_columns: Some(vec![]),
                    ..QueryRequest::default()
                };
                let out = self.annotations.query(&t, req, OutputFormat::Jsonl).await?;
                count_lines(out).await
            }
        }
    }

    /// Start materializing a version of a dataset's tables.
    pub async fn create_version(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        timestamp: Option<Value>,
        expires_in_days: Option<f64>,
    ) -> Result<(VersionRecord, JobRecord)> {
        let now = now_ms() as i64;
        let at = match &timestamp {
            Some(t) => crate::annotations::parse_time(t)?,
            None => now,
        };
        if at > now + 60_000 {
            return Err(ServiceError::field(
                "timestamp",
                "a version cannot be made of the future",
            ));
        }
        let expires = match expires_in_days {
            Some(d) if d.is_finite() && d > 0.0 => Some(now + (d * 86_400_000.0) as i64),
            Some(d) => {
                return Err(ServiceError::field(
                    "expires_in_days",
                    format!("expires_in_days {d} must be a positive number"),
                ));
            }
            None => None,
        };
        self.annotations.materialize(ds, at, expires).await
    }

    /// Every version of a dataset.
    pub async fn list_versions(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
    ) -> Result<Vec<VersionRecord>> {
        self.annotations.versions(ds).await
    }

    /// One version.
    pub async fn get_version(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        v: u32,
    ) -> Result<VersionRecord> {
        self.annotations.version(ds, v).await
    }

    /// The built-in schemas, or one by name.
    #[must_use]
    pub fn schemas(&self) -> Vec<Schema> {
        Schema::BUILTIN
            .iter()
            .filter_map(|n| Schema::builtin(n))
            .collect()
    }
}

/// The rows of a JSON-lines answer, counted as it streams.
pub(super) async fn count_lines(out: QueryOutput) -> Result<u64> {
    use futures::StreamExt;
    let mut n = 0u64;
    let mut body = out.body;
    while let Some(b) = body.next().await {
        n += b?.iter().filter(|c| **c == b'\n').count() as u64;
    }
    Ok(n)
}

/// The rows of an object table are objects whose id is their voxels'
/// label: the row routes would leave voxels behind (a delete) or give the
/// object a new id its voxels do not carry (an update, which supersedes).
fn not_objects(t: &crate::annotations::ResolvedTable, done: &str) -> Result<()> {
    if Schema::is_object_schema(&t.record.spec.schema) {
        return Err(ServiceError::field(
            "table",
            format!(
                "table '{}' holds objects (schema {}), whose ids are their voxels' labels: they are not {done} through the row routes. Delete an object with DELETE .../tables/{}/objects/{{id}} (which clears its voxels too); to change one, delete it and create it again with POST .../objects",
                t.name(),
                t.record.spec.schema,
                t.name()
            ),
        ));
    }
    Ok(())
}
