//! Annotation objects (RAMON) under
//! `/v1/datasets/{ds}/tables/{table}/objects`: create (one or many, with
//! their voxels), read, delete, and their voxels, bounding box and cutout.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::TryStreamExt;
use neurocube_core::{Box3, DatasetName, TableName};
use neurocube_service::annotations::UploadFormat;
use neurocube_service::encoding::Encoding;
use neurocube_service::objects::{Conflict, ObjectVoxels};
use neurocube_service::{Access, RequestContext, VoxelsBody};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::{Endpoint, content_length, query, segment, table};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn object(req: &HttpRequest) -> ApiResult<(DatasetName, TableName, u64)> {
    let (d, t) = table(req)?;
    let raw = segment(req, "id")?;
    let id = raw.parse::<u64>().ok().filter(|i| *i > 0).ok_or_else(|| {
        ApiError::path(format!(
            "object id '{raw}' is not an id: use a positive integer"
        ))
    })?;
    Ok((d, t, id))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConflictQuery {
    conflict: Option<String>,
}

fn conflict(c: Option<&str>) -> ApiResult<Conflict> {
    c.map_or(Ok(Conflict::Overwrite), |c| {
        Conflict::parse(c).map_err(|e| ApiError::query(e.to_string()))
    })
}

fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The `x=x0,x1&y=y0,y1&z=z0,z1` box of a query, if it has one.
fn query_box(x: Option<&str>, y: Option<&str>, z: Option<&str>) -> ApiResult<Option<Box3>> {
    let (x, y, z) = match (x, y, z) {
        (None, None, None) => return Ok(None),
        (Some(x), Some(y), Some(z)) => (x, y, z),
        _ => {
            return Err(ApiError::query(
                "a box needs all of x=x0,x1&y=y0,y1&z=z0,z1 (half-open voxel ranges at level 0)",
            ));
        }
    };
    let mut start = [0; 3];
    let mut end = [0; 3];
    for (a, r) in [x, y, z].iter().enumerate() {
        let bad = || {
            ApiError::query(format!(
                "malformed {} range '{r}': use two integers a,b (half-open)",
                ["x", "y", "z"][a]
            ))
        };
        let (lo, hi) = r.split_once(',').ok_or_else(bad)?;
        start[a] = lo.trim().parse().map_err(|_| bad())?;
        end[a] = hi.trim().parse().map_err(|_| bad())?;
    }
    Box3::new(start, end)
        .map(Some)
        .map_err(|e| ApiError::query(e.to_string()))
}

fn voxels_view(v: &ObjectVoxels) -> Value {
    json!({
        "id": v.id,
        "count": v.voxels.len(),
        "bounding_box": v.bbox.map(|b| json!({"start": b.start, "end": b.end})),
        // OCP's names: the box's corner and its dimensions.
        "bbcorner": v.bbox.map(|b| b.start),
        "bbdim": v.bbox.map(|b| b.shape()),
    })
}

/// `POST /v1/datasets/{ds}/tables/{table}/objects`: create objects with
/// their voxels (one JSON object, an array, NDJSON or Arrow IPC).
pub struct CreateObjects(DatasetName, TableName, UploadFormat, Conflict);

impl Endpoint for CreateObjects {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t) = table(req)?;
        let q: ConflictQuery = query(req)?;
        let ct = content_type(req);
        let format = match UploadFormat::from_content_type(&ct) {
            Some(f @ (UploadFormat::Json | UploadFormat::Ndjson | UploadFormat::Arrow)) => f,
            _ => {
                return Err(ApiError::Malformed {
                    part: "header",
                    message: format!(
                        "Content-Type '{ct}' is not an objects upload: send application/json, application/x-ndjson or application/vnd.apache.arrow.stream"
                    ),
                });
            }
        };
        Ok(Self(d, t, format, conflict(q.conflict.as_deref())?))
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
            .create_objects(
                ctx,
                &self.0,
                &self.1,
                self.2,
                self.3,
                content_length(req),
                body,
            )
            .await?;
        Ok(HttpResponse::Created().json(json!({ "objects": ids.len(), "ids": ids })))
    }
}

/// `GET /v1/datasets/{ds}/tables/{table}/objects/{id}`: its row, voxel
/// count and bounding box.
pub struct GetObject(DatasetName, TableName, u64);

impl Endpoint for GetObject {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t, id) = object(req)?;
        Ok(Self(d, t, id))
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
        let o = state.services.object(ctx, &self.0, &self.1, self.2).await?;
        let mut v = o.row;
        if let Value::Object(m) = &mut v {
            m.insert("voxel_count".into(), o.voxels.voxels.len().into());
            m.insert(
                "bounding_box".into(),
                json!(
                    o.voxels
                        .bbox
                        .map(|b| json!({"start": b.start, "end": b.end}))
                ),
            );
        }
        Ok(HttpResponse::Ok().json(v))
    }
}

/// `DELETE /v1/datasets/{ds}/tables/{table}/objects/{id}`: clear its
/// voxels and delete its row.
pub struct DeleteObject(DatasetName, TableName, u64);

impl Endpoint for DeleteObject {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t, id) = object(req)?;
        Ok(Self(d, t, id))
    }

    fn access(&self) -> Access {
        Access::Write(self.0.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let cleared = state
            .services
            .delete_object(ctx, &self.0, &self.1, self.2)
            .await?;
        Ok(HttpResponse::Ok()
            .json(json!({ "id": self.2, "deleted": true, "voxels_cleared": cleared })))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VoxelsQuery {
    conflict: Option<String>,
    x: Option<String>,
    y: Option<String>,
    z: Option<String>,
}

/// `PUT /v1/datasets/{ds}/tables/{table}/objects/{id}/voxels`: label
/// voxels, as a JSON list or a dense mask (npy, Blosc or raw) of the box
/// `x=..&y=..&z=..`.
pub struct PutVoxels(DatasetName, TableName, u64, VoxelsBody, Conflict);

impl Endpoint for PutVoxels {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t, id) = object(req)?;
        let q: VoxelsQuery = query(req)?;
        let bbox = query_box(q.x.as_deref(), q.y.as_deref(), q.z.as_deref())?;
        let ct = content_type(req);
        let enc = match ct.as_str() {
            "" | "application/json" => None,
            "application/x-npy" | "application/npy" => Some(Encoding::Npy),
            "application/blosc" => Some(Encoding::Blosc),
            "application/octet-stream" => Some(Encoding::Raw),
            other => {
                return Err(ApiError::Malformed {
                    part: "header",
                    message: format!(
                        "Content-Type '{other}' is not a voxel upload: send application/json ({{\"voxels\": [[x, y, z], ...]}}), or a mask as application/x-npy, application/blosc or application/octet-stream with x=x0,x1&y=y0,y1&z=z0,z1"
                    ),
                });
            }
        };
        let how = match (enc, bbox) {
            (None, None) => VoxelsBody::List,
            (None, Some(_)) => {
                return Err(ApiError::query(
                    "a voxel list carries its own coordinates: drop x, y and z, or send a mask",
                ));
            }
            (Some(e), Some(b)) => VoxelsBody::Mask(e, b),
            (Some(_), None) => {
                return Err(ApiError::query(
                    "a mask needs the box it covers: add x=x0,x1&y=y0,y1&z=z0,z1 (level 0 voxels)",
                ));
            }
        };
        Ok(Self(d, t, id, how, conflict(q.conflict.as_deref())?))
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
        let w = state
            .services
            .put_object_voxels(
                ctx,
                &self.0,
                &self.1,
                self.2,
                self.3,
                self.4,
                content_length(req),
                body,
            )
            .await?;
        Ok(HttpResponse::Ok().json(json!({
            "id": self.2,
            "voxels_written": w.written,
            "voxels_preserved": w.preserved,
        })))
    }
}

/// `GET /v1/datasets/{ds}/tables/{table}/objects/{id}/voxels`: the voxel
/// list.
pub struct GetVoxels(DatasetName, TableName, u64);

impl Endpoint for GetVoxels {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t, id) = object(req)?;
        Ok(Self(d, t, id))
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
        let v = state
            .services
            .object_voxels(ctx, &self.0, &self.1, self.2)
            .await?;
        let mut body = voxels_view(&v);
        body["voxels"] = json!(v.voxels);
        Ok(HttpResponse::Ok().json(body))
    }
}

/// `GET /v1/datasets/{ds}/tables/{table}/objects/{id}/boundingbox`
pub struct GetBoundingBox(DatasetName, TableName, u64);

impl Endpoint for GetBoundingBox {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t, id) = object(req)?;
        Ok(Self(d, t, id))
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
        let v = state
            .services
            .object_voxels(ctx, &self.0, &self.1, self.2)
            .await?;
        Ok(HttpResponse::Ok().json(voxels_view(&v)))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CutoutQuery {
    format: Option<String>,
    x: Option<String>,
    y: Option<String>,
    z: Option<String>,
}

/// `GET /v1/datasets/{ds}/tables/{table}/objects/{id}/cutout`: the
/// object's labels over its bounding box (or `x=..&y=..&z=..`), every
/// other label 0, as npy (default), Blosc or raw.
pub struct GetObjectCutout(DatasetName, TableName, u64, Option<Box3>, Encoding);

impl Endpoint for GetObjectCutout {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, t, id) = object(req)?;
        let q: CutoutQuery = query(req)?;
        let bbox = query_box(q.x.as_deref(), q.y.as_deref(), q.z.as_deref())?;
        let enc = match q.format.as_deref() {
            None => Encoding::Npy,
            Some(f) => Encoding::parse(f).ok_or_else(|| {
                ApiError::query(format!("unknown format '{f}': use npy, blosc or raw"))
            })?,
        };
        Ok(Self(d, t, id, bbox, enc))
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
        let (b, dtype, body) = state
            .services
            .object_cutout(ctx, &self.0, &self.1, self.2, self.3, self.4)
            .await?;
        let s = b.shape();
        Ok(HttpResponse::Ok()
            .content_type(self.4.content_type())
            .insert_header(("X-Neurocube-Dtype", dtype.name()))
            .insert_header(("X-Neurocube-Shape", format!("{},{},{}", s[2], s[1], s[0])))
            .insert_header((
                "X-Neurocube-Offset",
                format!("{},{},{}", b.start[0], b.start[1], b.start[2]),
            ))
            .no_chunking(body.len)
            .streaming(body.body.map_err(ApiError::from)))
    }
}
