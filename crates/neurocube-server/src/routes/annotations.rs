//! Annotation tables, rows, queries and versions under
//! `/v1/datasets/{ds}/tables`, `/synapse_query` and `/versions`, and the
//! built-in schemas under `/v1/schemas`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::TryStreamExt;
use neurocube_core::annotation::Schema;
use neurocube_core::{DatasetName, TableName};
use neurocube_service::annotations::{
    OutputFormat, QueryOutput, QueryRequest, TableSpec, UploadFormat, VersionRecord,
};
use neurocube_service::{Access, RequestContext, SynapseQuery};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::{Endpoint, content_length, dataset, json_body, query, segment, table};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Metadata and query bodies are small; id lists for joins can be long.
const QUERY_LIMIT: u64 = 64 << 20;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FormatQuery {
    format: Option<String>,
}

/// The result format: `?format=`, else `Accept`, else JSON lines.
fn output_format(req: &HttpRequest) -> ApiResult<OutputFormat> {
    let q: FormatQuery = query(req)?;
    if let Some(f) = q.format {
        return OutputFormat::parse(&f).ok_or_else(|| {
            ApiError::query(format!("unknown format '{f}': use arrow, csv or jsonl"))
        });
    }
    Ok(req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(OutputFormat::from_accept)
        .unwrap_or(OutputFormat::Jsonl))
}

fn upload_format(req: &HttpRequest) -> ApiResult<UploadFormat> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    UploadFormat::from_content_type(ct).ok_or_else(|| ApiError::Malformed {
        part: "header",
        message: format!(
            "Content-Type '{ct}' is not an upload format: send application/json, application/x-ndjson, text/csv or application/vnd.apache.arrow.stream"
        ),
    })
}

fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    )
}

fn version_view(v: &VersionRecord) -> Value {
    let now = neurocube_service::jobs::now_ms() as i64;
    json!({
        "version": v.version,
        "time_stamp": time_text(v.time_stamp_ms),
        "expires_on": v.expires_ms.map(time_text),
        "valid": v.valid_at(now),
        "status": v.status,
        "job": v.job,
        "tables": v.tables,
        "purged": v.purged,
    })
}

fn stream_query(format: OutputFormat, out: QueryOutput) -> HttpResponse {
    let mut r = HttpResponse::Ok();
    r.content_type(format.content_type())
        .insert_header((
            "X-Neurocube-Version",
            out.version
                .map_or_else(|| "live".to_string(), |v| v.to_string()),
        ))
        .insert_header(("X-Neurocube-Timestamp", time_text(out.time_stamp_ms)))
        .insert_header(("X-Neurocube-Plan", out.plan.clone()))
        .insert_header((
            "dataframe_resolution",
            format!(
                "{:?}, {:?}, {:?}",
                out.resolution[0], out.resolution[1], out.resolution[2]
            ),
        ));
    if let Some(next) = &out.next_page {
        r.insert_header(("X-Neurocube-Next-Page", next.clone()));
    }
    r.streaming(out.body.map_err(ApiError::from))
}

/// `GET /v1/schemas`: the built-in schemas.
pub struct ListSchemas;

impl Endpoint for ListSchemas {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(ListSchemas)
    }

    fn access(&self) -> Access {
        Access::Public
    }

    async fn handle(
        self,
        state: &AppState,
        _: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        Ok(HttpResponse::Ok().json(json!({ "schemas": state.services.schemas() })))
    }
}

/// `GET /v1/schemas/{name}`: one built-in schema.
pub struct GetSchema(String);

impl Endpoint for GetSchema {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(segment(req, "name")?.to_string()))
    }

    fn access(&self) -> Access {
        Access::Public
    }

    async fn handle(
        self,
        _: &AppState,
        _: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let s = Schema::builtin(&self.0).ok_or_else(|| ApiError::NoRoute {
            method: "GET".into(),
            path: format!(
                "/v1/schemas/{} (no such schema: {} are built in)",
                self.0,
                Schema::BUILTIN.join(", ")
            ),
        })?;
        Ok(HttpResponse::Ok().json(s))
    }
}

/// `GET /v1/datasets/{ds}/tables`
pub struct ListTables(DatasetName);

impl Endpoint for ListTables {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let tables = state.services.list_tables(ctx, &self.0).await?;
        Ok(HttpResponse::Ok().json(json!({ "tables": tables })))
    }
}

/// `GET /v1/datasets/{ds}/tables/{table}`: declaration, columns, row count.
pub struct GetTable(DatasetName, TableName);

impl Endpoint for GetTable {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        Ok(Self(d, t))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let v = state.services.get_table(ctx, &self.0, &self.1).await?;
        Ok(HttpResponse::Ok().json(v))
    }
}

/// `PUT /v1/datasets/{ds}/tables/{table}`: declare a table.
pub struct PutTable(DatasetName, TableName);

impl Endpoint for PutTable {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        Ok(Self(d, t))
    }

    fn access(&self) -> Access {
        Access::Admin(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let spec: TableSpec = json_body(req, body, 1 << 20, "table").await?;
        let created = state
            .services
            .create_table(ctx, &self.0, &self.1, spec)
            .await?;
        let view = state.services.get_table(ctx, &self.0, &self.1).await?;
        Ok(match created {
            neurocube_service::catalog::Created::New => HttpResponse::Created(),
            neurocube_service::catalog::Created::Unchanged => HttpResponse::Ok(),
        }
        .json(view))
    }
}

/// `DELETE /v1/datasets/{ds}/tables/{table}`
pub struct DeleteTable(DatasetName, TableName);

impl Endpoint for DeleteTable {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        Ok(Self(d, t))
    }

    fn access(&self) -> Access {
        Access::Admin(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        state.services.delete_table(ctx, &self.0, &self.1).await?;
        Ok(HttpResponse::NoContent().finish())
    }
}

/// `POST /v1/datasets/{ds}/tables/{table}/rows`: insert rows (JSON, NDJSON,
/// CSV or Arrow IPC, by Content-Type).
pub struct InsertRows(DatasetName, TableName, UploadFormat);

impl Endpoint for InsertRows {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        Ok(Self(d, t, upload_format(req)?))
    }

    fn access(&self) -> Access {
        Access::Write(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let ids = state
            .services
            .insert_rows(ctx, &self.0, &self.1, self.2, content_length(req), body)
            .await?;
        Ok(HttpResponse::Created().json(json!({ "rows": ids.len(), "ids": ids })))
    }
}

/// `PUT /v1/datasets/{ds}/tables/{table}/rows`: update rows (each names the
/// `id` it replaces; a new row supersedes it).
pub struct UpdateRows(DatasetName, TableName, UploadFormat);

impl Endpoint for UpdateRows {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        Ok(Self(d, t, upload_format(req)?))
    }

    fn access(&self) -> Access {
        Access::Write(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let pairs = state
            .services
            .update_rows(ctx, &self.0, &self.1, self.2, content_length(req), body)
            .await?;
        let updated: Vec<Value> = pairs
            .into_iter()
            .map(|(old, new)| json!({"id": old, "superceded_id": new}))
            .collect();
        Ok(HttpResponse::Ok().json(json!({ "updated": updated })))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsBody {
    ids: Vec<u64>,
}

/// `DELETE /v1/datasets/{ds}/tables/{table}/rows` with `{"ids": [...]}`.
pub struct DeleteRows(DatasetName, TableName);

impl Endpoint for DeleteRows {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        Ok(Self(d, t))
    }

    fn access(&self) -> Access {
        Access::Write(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let b: IdsBody = json_body(req, body, 64 << 20, "delete").await?;
        let n = state
            .services
            .delete_rows(ctx, &self.0, &self.1, &b.ids)
            .await?;
        Ok(HttpResponse::Ok().json(json!({ "deleted": n })))
    }
}

/// `POST /v1/datasets/{ds}/tables/{table}/query`: CAVE's filters, streamed.
pub struct QueryTable(DatasetName, TableName, OutputFormat);

impl Endpoint for QueryTable {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        Ok(Self(d, t, output_format(req)?))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let v: Value = json_body(req, body, QUERY_LIMIT, "query").await?;
        let q = QueryRequest::from_json(v)?;
        let out = state
            .services
            .query_table(ctx, &self.0, &self.1, q, self.2)
            .await?;
        Ok(stream_query(self.2, out))
    }
}

/// `POST /v1/datasets/{ds}/synapse_query`: CAVE's synapse_query.
pub struct SynapseQueryEndpoint(DatasetName, OutputFormat);

impl Endpoint for SynapseQueryEndpoint {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?, output_format(req)?))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let q: SynapseQuery = json_body(req, body, QUERY_LIMIT, "synapse_query").await?;
        let out = state
            .services
            .synapse_query(ctx, &self.0, q, self.1)
            .await?;
        Ok(stream_query(self.1, out))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CountQuery {
    version: Option<u32>,
    timestamp: Option<String>,
}

/// `GET /v1/datasets/{ds}/tables/{table}/count[?version=|?timestamp=]`
pub struct CountRows(DatasetName, TableName, CountQuery);

impl Endpoint for CountRows {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        Ok(Self(d, t, query(req)?))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let n = state
            .services
            .count_rows(
                ctx,
                &self.0,
                &self.1,
                self.2.version,
                self.2.timestamp.map(Value::String),
            )
            .await?;
        Ok(HttpResponse::Ok().json(json!({ "count": n })))
    }
}

/// `GET /v1/datasets/{ds}/versions`
pub struct ListVersions(DatasetName);

impl Endpoint for ListVersions {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let v: Vec<Value> = state
            .services
            .list_versions(ctx, &self.0)
            .await?
            .iter()
            .map(version_view)
            .collect();
        Ok(HttpResponse::Ok().json(json!({ "versions": v })))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewVersion {
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    expires_in_days: Option<f64>,
}

/// `POST /v1/datasets/{ds}/versions`: materialize a version (a job; 202).
pub struct CreateVersion(DatasetName);

impl Endpoint for CreateVersion {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?))
    }

    fn access(&self) -> Access {
        Access::Write(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let b: NewVersion = json_body(req, body, 1 << 20, "version").await?;
        let (v, job) = state
            .services
            .create_version(ctx, &self.0, b.timestamp, b.expires_in_days)
            .await?;
        let mut out = version_view(&v);
        out["job"] = json!(job.id);
        Ok(HttpResponse::Accepted().json(out))
    }
}

/// `GET /v1/datasets/{ds}/versions/{v}`
pub struct GetVersion(DatasetName, u32);

impl Endpoint for GetVersion {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let v = segment(req, "v")?;
        let n = v
            .parse()
            .map_err(|_| ApiError::path(format!("version '{v}' must be a version number")))?;
        Ok(Self(dataset(req)?, n))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let v = state.services.get_version(ctx, &self.0, self.1).await?;
        Ok(HttpResponse::Ok().json(version_view(&v)))
    }
}
