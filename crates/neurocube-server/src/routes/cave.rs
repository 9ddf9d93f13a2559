//! CAVE's protocol as caveclient 8.x speaks it (docs/cave.md): the info
//! service (`/info`), the schema service (`/schema`), the materialization
//! engine (`/materialize`) and the chunkedgraph calls of live queries
//! (`/segmentation`). One server is both CAVE's global and local server.

use actix_web::{HttpRequest, HttpResponse, web};
use futures::TryStreamExt;
use neurocube_core::{DatasetName, TableName};
use neurocube_service::cave::{self, CaveParams};
use neurocube_service::{Access, CaveAnswer, RequestContext};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::{Endpoint, dataset, query, raw_body, segment};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Query bodies carry id lists (seed 000 sends thousands).
const QUERY_LIMIT: u64 = 64 << 20;

fn ok(v: Value) -> HttpResponse {
    HttpResponse::Ok().json(v)
}

/// CAVE's booleans in query strings: `True`/`False` (also lower case).
fn flag(v: Option<&str>, name: &str) -> ApiResult<bool> {
    match v {
        None => Ok(false),
        Some(s) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(true),
        Some(s) if s.eq_ignore_ascii_case("false") || s == "0" => Ok(false),
        Some(s) => Err(ApiError::query(format!(
            "{name}={s} is not a boolean: use True or False"
        ))),
    }
}

fn version(req: &HttpRequest) -> ApiResult<u32> {
    let v = segment(req, "v")?;
    v.parse().map_err(|_| {
        ApiError::path(format!(
            "version '{v}' is not a version number (GET .../versions lists them)"
        ))
    })
}

/// The server's own base URL, as the client reached it.
fn local_server(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// A fixed JSON answer of the protocol's discovery routes.
pub struct Fixed<const WHICH: u8>;

impl<const WHICH: u8> Endpoint for Fixed<WHICH> {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Self)
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
        Ok(ok(match WHICH {
            INFO_VERSION => json!(cave::INFO_VERSION),
            SCHEMA_VERSIONS => json!([1, 2]),
            MATERIALIZE_APIS => json!([2, 3]),
            MATERIALIZE_VERSION => json!(cave::MATERIALIZE_VERSION),
            _ => json!([0, 1]),
        }))
    }
}

/// `GET /info/version`.
pub const INFO_VERSION: u8 = 0;
/// `GET /schema/versions`.
pub const SCHEMA_VERSIONS: u8 = 1;
/// `GET /materialize/api/versions`.
pub const MATERIALIZE_APIS: u8 = 2;
/// `GET /materialize/version`.
pub const MATERIALIZE_VERSION: u8 = 3;
/// `GET /segmentation/api/versions`.
pub const SEGMENTATION_APIS: u8 = 4;

/// `GET /info/api/v2/datastacks`: the datasets the caller may read.
pub struct Datastacks;

impl Endpoint for Datastacks {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Self)
    }

    fn access(&self) -> Access {
        Access::Public
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        Ok(ok(json!(state.services.cave_datastacks(ctx).await?)))
    }
}

/// `GET /info/api/v2/datastack/full/{ds}`: the dataset as a datastack.
pub struct Datastack(DatasetName);

impl Endpoint for Datastack {
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
        req: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let local = local_server(req);
        Ok(ok(state
            .services
            .cave_datastack(ctx, &self.0, &local)
            .await?))
    }
}

/// `GET /schema/api/v2/types_all`, `.../type` (names) and `.../type/{name}`.
pub struct Schemas<const ALL: bool>(Option<String>);

impl<const ALL: bool> Endpoint for Schemas<ALL> {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(req.match_info().get("name").map(str::to_string)))
    }

    fn access(&self) -> Access {
        Access::Public
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let s = &state.services;
        Ok(ok(match (&self.0, ALL) {
            (Some(name), _) => s.cave_schema(ctx, name).await?,
            (None, true) => Value::Object(s.cave_schemas(ctx).await?),
            (None, false) => json!(s.cave_schemas(ctx).await?.keys().collect::<Vec<_>>()),
        }))
    }
}

#[derive(Deserialize, Default)]
struct Expired {
    expired: Option<String>,
}

/// `GET M/v3/versions?expired=` (the numbers) and `M/v3/metadata?expired=`
/// (each version's record).
pub struct Versions<const META: bool>(DatasetName, bool);

impl<const META: bool> Endpoint for Versions<META> {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let q: Expired = query(req)?;
        Ok(Self(dataset(req)?, flag(q.expired.as_deref(), "expired")?))
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
        let recs = state
            .services
            .cave_version_records(ctx, &self.0, self.1)
            .await?;
        let now = neurocube_service::jobs::now_ms() as i64;
        Ok(ok(if META {
            json!(
                recs.iter()
                    .map(|r| cave::version_json(self.0.as_str(), r, now))
                    .collect::<Vec<_>>()
            )
        } else {
            json!(recs.iter().map(|r| r.version).collect::<Vec<_>>())
        }))
    }
}

/// `GET M/v3/version/{v}`: one version.
pub struct Version(DatasetName, u32);

impl Endpoint for Version {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?, version(req)?))
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
        let rec = state.services.cave_version(ctx, &self.0, self.1).await?;
        let now = neurocube_service::jobs::now_ms() as i64;
        Ok(ok(cave::version_json(self.0.as_str(), &rec, now)))
    }
}

/// `GET M/v2/version/{v}/tables` (names) and `M/v3/.../tables/metadata`.
pub struct Tables<const META: bool>(DatasetName, u32);

impl<const META: bool> Endpoint for Tables<META> {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?, version(req)?))
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
        let s = &state.services;
        Ok(ok(if META {
            json!(s.cave_tables_metadata(ctx, &self.0, self.1).await?)
        } else {
            json!(s.cave_tables(ctx, &self.0, self.1).await?)
        }))
    }
}

fn version_table(req: &HttpRequest) -> ApiResult<(DatasetName, u32, TableName)> {
    Ok((
        dataset(req)?,
        version(req)?,
        TableName::parse(segment(req, "table")?)?,
    ))
}

/// `GET M/v3/version/{v}/table/{table}/metadata` and `M/v2/.../count`.
pub struct Table<const COUNT: bool>(DatasetName, u32, TableName);

impl<const COUNT: bool> Endpoint for Table<COUNT> {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, v, t) = version_table(req)?;
        Ok(Self(d, v, t))
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
        let s = &state.services;
        Ok(ok(if COUNT {
            // The metadata call checks the table is in the version.
            s.cave_table_metadata(ctx, &self.0, self.1, &self.2).await?;
            json!(
                s.count_rows(ctx, &self.0, &self.2, Some(self.1), None)
                    .await?
            )
        } else {
            s.cave_table_metadata(ctx, &self.0, self.1, &self.2).await?
        }))
    }
}

/// `POST M/v3/version/{v}/table/{table}/query` and (a join, no table)
/// `POST M/v3/version/{v}/query`: an Arrow stream, `Content-Type:
/// data.arrow`, with `dataframe_resolution`.
pub struct Query(DatasetName, u32, Option<TableName>, CaveParams);

impl Endpoint for Query {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let table = req
            .match_info()
            .get("table")
            .map(TableName::parse)
            .transpose()?;
        Ok(Self(dataset(req)?, version(req)?, table, query(req)?))
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
        let body = raw_body(req, body, QUERY_LIMIT, "query").await?;
        let answer = state
            .services
            .cave_query(ctx, &self.0, self.1, self.2.as_ref(), &body, &self.3)
            .await?;
        // `", "`-separated: caveclient splits on exactly that.
        let resolution = |[x, y, z]: [f64; 3]| format!("{x:?}, {y:?}, {z:?}");
        let out = match answer {
            CaveAnswer::Count(n, res) => {
                return Ok(HttpResponse::Ok()
                    .content_type("data.arrow")
                    .insert_header(("dataframe_resolution", resolution(res)))
                    .body(cave::count_arrow(n)?));
            }
            CaveAnswer::Rows(out) => out,
        };
        let mut r = HttpResponse::Ok();
        r.content_type("data.arrow")
            .insert_header(("dataframe_resolution", resolution(out.resolution)))
            .insert_header(("X-Neurocube-Plan", out.plan.clone()));
        if out.next_page.is_some() {
            // caveclient turns this into its "limited query" warning.
            let limit = cave_limit(&body).unwrap_or_default();
            r.insert_header((
                "Warning",
                format!("201 - \"Limited query to {limit} rows\""),
            ));
        }
        Ok(r.streaming(out.body.map_err(ApiError::from)))
    }
}

fn cave_limit(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("limit")?
        .as_u64()
}

/// The chunkedgraph calls of caveclient's live query, for a segmentation
/// that changes only when its labels are rewritten: every root is the
/// latest, a supervoxel is its own root, and ids map to themselves.
pub struct Chunkedgraph<const WHICH: u8>(DatasetName);

/// `POST .../is_latest_roots`.
pub const IS_LATEST: u8 = 0;
/// `POST .../root_timestamps`.
pub const ROOT_TIMESTAMPS: u8 = 1;
/// `GET .../past_id_mapping` (a JSON body on a GET).
pub const PAST_ID_MAPPING: u8 = 2;
/// `POST .../roots_binary`.
pub const ROOTS_BINARY: u8 = 3;

#[derive(Deserialize)]
struct Ids {
    #[serde(alias = "root_ids")]
    node_ids: Vec<u64>,
}

impl<const WHICH: u8> Endpoint for Chunkedgraph<WHICH> {
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
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let body = raw_body(req, body, QUERY_LIMIT, "chunkedgraph").await?;
        let s = &state.services;
        if WHICH == ROOTS_BINARY {
            if body.len() % 8 != 0 {
                return Err(ApiError::body(format!(
                    "roots_binary takes little-endian uint64 supervoxel ids: {} bytes is not a multiple of 8",
                    body.len()
                )));
            }
            let ids: Vec<u64> = body
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect();
            let roots = s.cave_roots(ctx, &self.0, &ids).await?;
            let out: Vec<u8> = roots.iter().flat_map(|r| r.to_le_bytes()).collect();
            return Ok(HttpResponse::Ok()
                .content_type("application/octet-stream")
                .body(out));
        }
        let ids: Ids = serde_json::from_slice(&body).map_err(|e| {
            ApiError::body(format!(
                "the body must be {{\"node_ids\": [ids]}} (or root_ids): {e}"
            ))
        })?;
        let since_ms = s.cave_static_roots(ctx, &self.0).await?;
        Ok(ok(match WHICH {
            IS_LATEST => json!({ "is_latest": vec![true; ids.node_ids.len()] }),
            ROOT_TIMESTAMPS => {
                json!({ "timestamp": vec![since_ms as f64 / 1000.0; ids.node_ids.len()] })
            }
            _ => {
                let map: serde_json::Map<String, Value> = ids
                    .node_ids
                    .iter()
                    .map(|i| (i.to_string(), json!([i])))
                    .collect();
                json!({ "past_id_map": map, "future_id_map": map })
            }
        }))
    }
}
