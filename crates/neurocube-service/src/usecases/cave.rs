//! CAVE's protocol use cases (`crate::cave` has the wire shapes): a
//! dataset's datastack settings (`PATCH /v1/datasets/{ds}`), the datastack
//! info, the schema service, the materialization engine's
//! versions, table metadata, counts and queries, and the chunkedgraph calls
//! a live query makes.

use neurocube_core::annotation::Schema;
use neurocube_core::meta::{ChannelType, Dataset};
use neurocube_core::{DatasetName, TableName};
use serde_json::{Map, Value as J, json};

use crate::Services;
use crate::annotations::{OutputFormat, QueryOutput, TableRecord, VersionRecord, VersionStatus};
use crate::cave::{self, CaveBody, CaveParams, Mapped};
use crate::context::RequestContext;
use crate::error::{Result, ServiceError};
use crate::jobs::now_ms;

/// A CAVE query's answer: rows, or their number (`count=True`).
pub enum CaveAnswer {
    /// Rows as an Arrow stream.
    Rows(QueryOutput),
    /// `count=True`: the number, and the resolution to report.
    Count(u64, [f64; 3]),
}

/// What `PATCH /v1/datasets/{ds}` changes. A field left `None` stays as
/// it is; a table setting `Some(None)` is cleared (found by schema again).
#[derive(Debug, Default)]
pub struct DatasetPatch {
    /// Free text.
    pub description: Option<String>,
    /// CAVE's `synapse_table`: a table of the `synapse` schema.
    pub synapse_table: Option<Option<String>>,
    /// CAVE's `soma_table`: a table of the `nucleus` or `point` schema.
    pub soma_table: Option<Option<String>>,
}

/// The schemas a datastack's synapse table may have.
const SYNAPSE_SCHEMAS: &[&str] = &["synapse"];
/// The schemas a datastack's soma table may have.
const SOMA_SCHEMAS: &[&str] = &["nucleus", "point"];

fn schema_name(ds: &DatasetName, t: &TableRecord) -> String {
    if t.spec.schema == "custom" {
        format!("{ds}__{}", t.name)
    } else {
        t.spec.schema.clone()
    }
}

impl Services {
    /// Checks that `name` is a table of `ds` with one of `schemas`.
    async fn check_table_setting(
        &self,
        ds: &DatasetName,
        field: &'static str,
        name: &str,
        schemas: &[&str],
    ) -> Result<()> {
        let t = TableName::parse(name).map_err(|e| ServiceError::field(field, e.to_string()))?;
        let table = self.annotations.table(ds, &t).await?;
        let schema = &table.record.spec.schema;
        if schemas.contains(&schema.as_str()) {
            Ok(())
        } else {
            Err(ServiceError::field(
                field,
                format!(
                    "table '{name}' has the {schema} schema; {field} names a table of the {} schema",
                    schemas.join(" or ")
                ),
            ))
        }
    }

    /// `PATCH /v1/datasets/{ds}`: change a dataset's description and its
    /// datastack settings (the tables named must exist, of the right
    /// schema). Returns the dataset as stored.
    pub async fn update_dataset(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        patch: DatasetPatch,
    ) -> Result<Dataset> {
        if let Some(Some(t)) = &patch.synapse_table {
            self.check_table_setting(ds, "synapse_table", t, SYNAPSE_SCHEMAS)
                .await?;
        }
        if let Some(Some(t)) = &patch.soma_table {
            self.check_table_setting(ds, "soma_table", t, SOMA_SCHEMAS)
                .await?;
        }
        self.catalog
            .update_dataset(ds, |d| {
                if let Some(text) = &patch.description {
                    d.description.clone_from(text);
                }
                if let Some(t) = &patch.synapse_table {
                    d.synapse_table.clone_from(t);
                }
                if let Some(t) = &patch.soma_table {
                    d.soma_table.clone_from(t);
                }
            })
            .await
    }

    /// A creation that names datastack tables: a new dataset has no tables
    /// yet (a re-creation of an existing one changes nothing, these
    /// included).
    pub(super) async fn check_created_settings(&self, ds: &Dataset) -> Result<()> {
        if ds.synapse_table.is_none() && ds.soma_table.is_none() {
            return Ok(());
        }
        let name =
            DatasetName::parse(&ds.name).map_err(|e| ServiceError::field("name", e.to_string()))?;
        match self.catalog.dataset(&name).await {
            Ok(_) => Ok(()),
            Err(ServiceError::UnknownDataset { .. }) => Err(ServiceError::field(
                if ds.synapse_table.is_some() {
                    "synapse_table"
                } else {
                    "soma_table"
                },
                format!(
                    "a new dataset has no tables yet: create the dataset, then its tables, then name them with PATCH /v1/datasets/{name}"
                ),
            )),
            Err(e) => Err(e),
        }
    }

    /// The datastack's synapse (or soma) table: the one the dataset names
    /// if it still exists, else found among the tables of `schemas`.
    async fn cave_setting(
        &self,
        ds: &DatasetName,
        set: Option<&str>,
        schemas: &[&str],
    ) -> Result<Option<String>> {
        if let Some(name) = set
            && let Ok(t) = TableName::parse(name)
            && self.annotations.table(ds, &t).await.is_ok()
        {
            return Ok(Some(name.to_owned()));
        }
        self.cave_table_of(ds, schemas).await
    }

    /// The table of a schema to name as the datastack's synapse (or soma)
    /// table: the only one, else the first by name.
    async fn cave_table_of(&self, ds: &DatasetName, schemas: &[&str]) -> Result<Option<String>> {
        let mut names: Vec<String> = self
            .annotations
            .tables(ds)
            .await?
            .into_iter()
            .filter(|t| schemas.contains(&t.spec.schema.as_str()))
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        Ok(names.into_iter().next())
    }

    /// `GET /info/api/v2/datastack/full/{ds}`: the dataset as a datastack;
    /// `local` is the server's own base URL (no trailing slash).
    pub async fn cave_datastack(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        local: &str,
    ) -> Result<J> {
        let d = self.catalog.dataset(ds).await?;
        let channels = self.catalog.channel_records(ds).await?;
        let first = |kind: ChannelType| {
            channels
                .iter()
                .find(|c| c.meta.kind == kind)
                .map(|c| format!("precomputed://{local}/precomputed/{ds}/{}", c.meta.name))
        };
        // A stable small id (CAVE's are database keys).
        let id = ds
            .as_str()
            .bytes()
            .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b))
            % 1_000_000;
        Ok(json!({
            "datastack": ds.as_str(),
            "description": d.description,
            "aligned_volume": {
                "name": ds.as_str(),
                "id": id,
                "description": d.description,
                "image_source": first(ChannelType::Image),
                "display_name": ds.as_str(),
            },
            "local_server": local,
            "segmentation_source": format!("graphene://{local}/segmentation/table/{ds}"),
            "flat_segmentation_source": first(ChannelType::Segmentation),
            "synapse_table": self.cave_setting(ds, d.synapse_table.as_deref(), SYNAPSE_SCHEMAS).await?,
            "soma_table": self.cave_setting(ds, d.soma_table.as_deref(), &["nucleus", "nucleus_detection"]).await?,
            "analysis_database": null,
            "viewer_site": format!("{local}/viewer/?dataset={ds}"),
            "viewer_resolution_x": d.voxel_size[0],
            "viewer_resolution_y": d.voxel_size[1],
            "viewer_resolution_z": d.voxel_size[2],
        }))
    }

    /// `GET /info/api/v2/datastacks`: the datasets the caller may read.
    pub async fn cave_datastacks(&self, ctx: &RequestContext) -> Result<Vec<String>> {
        Ok(self
            .list_datasets(ctx)
            .await?
            .into_iter()
            .map(|d| d.name)
            .collect())
    }

    /// `GET /schema/api/v2/types_all`: every built-in schema, and the
    /// custom schemas of the datasets the caller may read (named
    /// `{dataset}__{table}`), as JSON Schema.
    pub async fn cave_schemas(&self, ctx: &RequestContext) -> Result<Map<String, J>> {
        let mut all = Map::new();
        for n in Schema::BUILTIN {
            if let Some(s) = Schema::builtin(n) {
                all.insert(n.to_string(), cave::schema_json(n, &s));
            }
        }
        for d in self.list_datasets(ctx).await? {
            let Ok(ds) = DatasetName::parse(&d.name) else {
                continue;
            };
            for t in self.annotations.tables(&ds).await? {
                if t.spec.schema == "custom"
                    && let Ok(rt) = self.annotations.table(&ds, &t.name).await
                {
                    let name = schema_name(&ds, &t);
                    all.insert(name.clone(), cave::schema_json(&name, &rt.schema));
                }
            }
        }
        Ok(all)
    }

    /// One schema by name (`/schema/api/v2/type/{name}`).
    pub async fn cave_schema(&self, ctx: &RequestContext, name: &str) -> Result<J> {
        self.cave_schemas(ctx).await?.remove(name).ok_or_else(|| {
            ServiceError::field(
                "schema",
                format!(
                    "no schema '{name}': the built-in ones are {}",
                    Schema::BUILTIN.join(", ")
                ),
            )
        })
    }

    /// The versions CAVE lists: available ones, and (with `expired`) the
    /// expired ones too; never those still materializing or failed.
    pub async fn cave_version_records(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        expired: bool,
    ) -> Result<Vec<VersionRecord>> {
        self.catalog.dataset(ds).await?;
        let now = now_ms() as i64;
        Ok(self
            .annotations
            .versions(ds)
            .await?
            .into_iter()
            .filter(|v| v.status == VersionStatus::Available && (expired || v.valid_at(now)))
            .collect())
    }

    /// `GET .../version/{v}`: one version (any state but in progress).
    pub async fn cave_version(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        v: u32,
    ) -> Result<VersionRecord> {
        let rec = self.annotations.version(ds, v).await?;
        if rec.status != VersionStatus::Available {
            // Materializing or failed: the usable-version error says which.
            self.annotations.usable_version(ds, v).await?;
        }
        Ok(rec)
    }

    /// The tables of a usable version, with their current records (a table
    /// dropped since, or made again under the same name, is left out).
    async fn cave_version_tables(
        &self,
        ds: &DatasetName,
        v: u32,
    ) -> Result<(VersionRecord, Vec<TableRecord>)> {
        let rec = self.annotations.usable_version(ds, v).await?;
        let tables = self
            .annotations
            .tables(ds)
            .await?
            .into_iter()
            .filter(|t| {
                rec.tables
                    .get(t.name.as_str())
                    .is_some_and(|vt| vt.uid == t.uid)
            })
            .collect();
        Ok((rec, tables))
    }

    /// `GET .../version/{v}/tables`: the names.
    pub async fn cave_tables(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        v: u32,
    ) -> Result<Vec<String>> {
        Ok(self
            .cave_version_tables(ds, v)
            .await?
            .1
            .into_iter()
            .map(|t| t.name.to_string())
            .collect())
    }

    fn cave_table_json(ds: &DatasetName, v: &VersionRecord, t: &TableRecord) -> J {
        let s = &t.spec;
        json!({
            "table_name": t.name.as_str(),
            "annotation_table": t.name.as_str(),
            "schema": schema_name(ds, t),
            "schema_type": schema_name(ds, t),
            "reference_table": s.reference_table.as_ref().map(TableName::as_str),
            "voxel_resolution_x": s.voxel_resolution[0],
            "voxel_resolution_y": s.voxel_resolution[1],
            "voxel_resolution_z": s.voxel_resolution[2],
            "description": s.description,
            "notice_text": null,
            "user_id": s.owner,
            "aligned_volume": ds.as_str(),
            "valid": true,
            "created": cave::time_text(i64::try_from(t.created_ms).unwrap_or(i64::MAX)),
            "segmentation_source": s.segmentation.as_ref().map(|c| format!("{ds}/{c}")),
            "row_count": v.tables.get(t.name.as_str()).map(|vt| vt.rows),
            "read_permission": "PUBLIC",
            "write_permission": "PRIVATE",
        })
    }

    /// `GET .../version/{v}/tables/metadata`: every table of the version.
    pub async fn cave_tables_metadata(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        v: u32,
    ) -> Result<Vec<J>> {
        let (rec, tables) = self.cave_version_tables(ds, v).await?;
        Ok(tables
            .iter()
            .map(|t| Self::cave_table_json(ds, &rec, t))
            .collect())
    }

    /// `GET .../version/{v}/table/{t}/metadata`.
    pub async fn cave_table_metadata(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        v: u32,
        table: &TableName,
    ) -> Result<J> {
        let (rec, tables) = self.cave_version_tables(ds, v).await?;
        let t = self
            .cave_table_in(ds, &rec, &tables, table.as_str())
            .await?;
        Ok(Self::cave_table_json(ds, &rec, t))
    }

    /// A table of the version by name: 404 naming what is wrong.
    async fn cave_table_in<'a>(
        &self,
        ds: &DatasetName,
        rec: &VersionRecord,
        tables: &'a [TableRecord],
        name: &str,
    ) -> Result<&'a TableRecord> {
        if let Some(t) = tables.iter().find(|t| t.name.as_str() == name) {
            return Ok(t);
        }
        // Unknown to the dataset (404 unknown_table), or not in this version.
        let parsed =
            TableName::parse(name).map_err(|e| ServiceError::field("table", e.to_string()))?;
        self.annotations.table(ds, &parsed).await?;
        Err(ServiceError::TableNotInVersion {
            dataset: ds.to_string(),
            table: name.to_string(),
            version: rec.version,
        })
    }

    /// `POST .../version/{v}/table/{t}/query` (one table) or
    /// `.../version/{v}/query` (a join, `table` = None): Arrow rows.
    pub async fn cave_query(
        &self,
        ctx: &RequestContext,
        ds: &DatasetName,
        v: u32,
        table: Option<&TableName>,
        body: &[u8],
        params: &CaveParams,
    ) -> Result<CaveAnswer> {
        let body = CaveBody::parse(body)?;
        let (rec, tables) = self.cave_version_tables(ds, v).await?;
        let mapped: Mapped = match table {
            Some(t) => {
                let r = self.cave_table_in(ds, &rec, &tables, t.as_str()).await?;
                body.one_table(t.as_str(), r.spec.voxel_resolution, v)?
            }
            None => {
                let named = body.join_tables().unwrap_or_default();
                for (n, _) in named {
                    self.cave_table_in(ds, &rec, &tables, n).await?;
                }
                let find = |n: &str| tables.iter().find(|t| t.name.as_str() == n);
                body.join(
                    |n| find(n).map(|t| t.spec.voxel_resolution),
                    |n| {
                        find(n)
                            .and_then(|t| t.spec.reference_table.as_ref())
                            .map(ToString::to_string)
                    },
                    v,
                )?
            }
        };
        let name = TableName::parse(&mapped.table)
            .map_err(|e| ServiceError::field("table", e.to_string()))?;
        let mut request = mapped.request;
        if params.count() {
            request.select_columns = Some(vec![]);
            request.limit = None;
            request.offset = None;
            let t = self.annotations.table(ds, &name).await?;
            let res = request
                .desired_resolution
                .unwrap_or(t.record.spec.voxel_resolution);
            let out = self
                .annotations
                .query(&t, request, OutputFormat::Jsonl)
                .await?;
            let n = super::annotations::count_lines(out).await?;
            return Ok(CaveAnswer::Count(n, res));
        }
        if let Some(n) = params.random_sample {
            // A sample of about `n` rows: every k-th row of the table.
            let total = rec.tables.get(name.as_str()).map_or(0, |vt| vt.rows);
            request.sample_every = Some(total.div_ceil(n.max(1)).max(1));
        }
        let out = self
            .query_table(ctx, ds, &name, request, OutputFormat::Arrow)
            .await?;
        Ok(CaveAnswer::Rows(out))
    }

    /// `POST /segmentation/api/v1/table/{ds}/roots_binary`: the root id of
    /// each supervoxel. Supervoxel ids are the segmentation's labels, and a
    /// label is its own root until the labels are rewritten.
    pub async fn cave_roots(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        ids: &[u64],
    ) -> Result<Vec<u64>> {
        self.catalog.dataset(ds).await?;
        Ok(ids.to_vec())
    }

    /// Root ids as of a timestamp are the same ids (the chunkedgraph's
    /// `is_latest_roots`, `past_id_mapping` and `root_timestamps`): the
    /// dataset must exist; the answer is the static one.
    pub async fn cave_static_roots(&self, _ctx: &RequestContext, ds: &DatasetName) -> Result<i64> {
        let _ = self.catalog.dataset(ds).await?;
        // The first version's time, or now: roots existed before any query
        // of a version.
        let first = self
            .annotations
            .versions(ds)
            .await?
            .first()
            .map(|v| v.time_stamp_ms);
        Ok(first.unwrap_or_else(|| now_ms() as i64))
    }
}
