//! Neuroglancer precomputed volumes under `/precomputed/{ds}/{ch}`: the
//! `info`, the chunks by name, and the same with `jpeg/` for uint8 images;
//! the segment properties of segmentation channels;
//! and annotation tables under `/precomputed/{ds}/annotations/{table}`.
//! Every answer (errors too) carries `Access-Control-Allow-Origin: *` (set
//! by the middleware) so a Neuroglancer page served elsewhere can read
//! them; `OPTIONS` answers preflights. Chunks carry an `ETag` (304 on
//! `If-None-Match`); segmentation chunks and `info` are gzipped for
//! clients that accept it.

use std::io::Write;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_core::{ChannelName, DatasetName, TableName};
use neurocube_service::precomputed::ChunkEncoding;
use neurocube_service::{Access, RequestContext};

use crate::endpoint::{Endpoint, channel, segment, table};
use crate::error::ApiResult;
use crate::routes::tiles::etag_matches;
use crate::state::AppState;

/// Clients may reuse a chunk this long before revalidating with its ETag.
const CACHE_CONTROL: &str = "public, max-age=30";

fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.trim().split(';').next() == Some("gzip"))
}

/// `bytes`, gzipped (fast level) if the client accepts it and `worth` it.
fn body(
    req: &HttpRequest,
    r: &mut actix_web::HttpResponseBuilder,
    bytes: bytes::Bytes,
    worth: bool,
) -> bytes::Bytes {
    if worth && accepts_gzip(req) {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if z.write_all(&bytes).is_ok()
            && let Ok(out) = z.finish()
        {
            r.insert_header((header::CONTENT_ENCODING, "gzip"));
            return out.into();
        }
    }
    bytes
}

fn json_bytes(v: &serde_json::Value) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A 200 that clients revalidate every time (`info` and annotation files
/// follow the table and the catalog), gzipped when accepted.
fn uncached(req: &HttpRequest, content_type: &str, bytes: bytes::Bytes) -> HttpResponse {
    let mut r = HttpResponse::Ok();
    r.content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::VARY, "Accept-Encoding"));
    let b = body(req, &mut r, bytes, true);
    r.body(b)
}

/// `GET /precomputed/{ds}/{ch}/info` (and `.../jpeg/info`).
pub struct Info<const JPEG: bool>(DatasetName, ChannelName);

impl<const JPEG: bool> Endpoint for Info<JPEG> {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, c) = channel(req)?;
        Ok(Self(d, c))
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
        let info = state
            .services
            .precomputed_info(ctx, &self.0, &self.1, JPEG)
            .await?;
        Ok(uncached(req, "application/json", json_bytes(&info)))
    }
}

/// `GET /precomputed/{ds}/{ch}/segment_properties/info`.
pub struct SegmentProperties(DatasetName, ChannelName);

impl Endpoint for SegmentProperties {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, c) = channel(req)?;
        Ok(Self(d, c))
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
        let props = state
            .services
            .segment_properties(ctx, &self.0, &self.1)
            .await?;
        Ok(uncached(req, "application/json", json_bytes(&props)))
    }
}

/// `GET /precomputed/{ds}/{ch}/{scale}/{chunk}` (and `.../jpeg/...`).
pub struct Chunk<const JPEG: bool> {
    ds: DatasetName,
    ch: ChannelName,
    scale: String,
    chunk: String,
}

impl<const JPEG: bool> Endpoint for Chunk<JPEG> {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (ds, ch) = channel(req)?;
        Ok(Self {
            ds,
            ch,
            scale: segment(req, "scale")?.to_string(),
            chunk: segment(req, "chunk")?.to_string(),
        })
    }

    fn access(&self) -> Access {
        Access::Read(self.ds.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let c = state
            .services
            .precomputed_chunk(ctx, &self.ds, &self.ch, &self.scale, &self.chunk, JPEG)
            .await?;
        let etag = format!("\"{:08x}-{:x}\"", crc32fast::hash(&c.bytes), c.bytes.len());
        let fresh = etag_matches(req, &etag);
        let mut r = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        r.insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
            .insert_header((header::VARY, "Accept-Encoding"));
        if fresh {
            return Ok(r.finish());
        }
        let (content_type, gzip) = match c.encoding {
            ChunkEncoding::Jpeg => ("image/jpeg", false),
            // Label encodings shrink several times under gzip; EM voxels
            // (raw images) gain about 1.2x, not worth the CPU at read rates.
            ChunkEncoding::CompressedSegmentation(_) => ("application/octet-stream", true),
            ChunkEncoding::Raw => ("application/octet-stream", false),
        };
        r.content_type(content_type);
        let b = body(req, &mut r, c.bytes, gzip);
        Ok(r.body(b))
    }
}

/// `OPTIONS` on the precomputed paths: the CORS preflight of a viewer
/// served from another origin.
pub struct Preflight;

impl Endpoint for Preflight {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Preflight)
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
        Ok(HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Range, If-None-Match, Content-Type",
            ))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
            .finish())
    }
}

/// `GET /precomputed/{ds}/annotations/{table}/info`: a table as precomputed annotations.
pub struct AnnotationInfo(DatasetName, TableName);

impl Endpoint for AnnotationInfo {
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
        req: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let info = state
            .services
            .annotation_info(ctx, &self.0, &self.1)
            .await?;
        Ok(uncached(req, "application/json", json_bytes(&info)))
    }
}

/// `GET /precomputed/{ds}/annotations/{table}/{index}/{key}`: `by_id/{id}`,
/// `rel_{column}/{root id}` or `spatial0/0_0_0`.
pub struct AnnotationIndex {
    ds: DatasetName,
    table: TableName,
    index: String,
    key: String,
}

impl Endpoint for AnnotationIndex {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (ds, table) = table(req)?;
        Ok(Self {
            ds,
            table,
            index: segment(req, "index")?.to_string(),
            key: segment(req, "key")?.to_string(),
        })
    }

    fn access(&self) -> Access {
        Access::Read(self.ds.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let bytes = state
            .services
            .annotation_index(ctx, &self.ds, &self.table, &self.index, &self.key)
            .await?;
        Ok(uncached(req, "application/octet-stream", bytes))
    }
}
