//! Tiles: `/v1/tiles/{ds}/{ch}/{plane}/{size}/{level}/{slice}/{row}/{col}.{png|jpg}`
//! and CATMAID's `/catmaid/{ds}/{ch}/{plane}/{z}/{row}_{col}_{level}.{png|jpg}`
//! (512-pixel tiles, `z` in level-0 sections). Responses carry an `ETag`
//! and `Cache-Control`; `If-None-Match` with the same tag gets 304.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_service::slice::Plane;
use neurocube_service::tiles::{
    CATMAID_TILE_SIZE, SliceSpace, Tile as CachedTile, TileFormat, TileRequest,
};
use neurocube_service::{Access, RequestContext};

use crate::endpoint::{Endpoint, channel, segment};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Browsers may reuse a tile this long without asking; then they revalidate
/// with its ETag (writes change the tag).
const CACHE_CONTROL: &str = "public, max-age=30";

fn number<T: std::str::FromStr>(s: &str, what: &str) -> ApiResult<T> {
    s.parse()
        .map_err(|_| ApiError::path(format!("{what} '{s}' must be a non-negative integer")))
}

fn plane(s: &str) -> ApiResult<Plane> {
    Plane::parse(s).ok_or_else(|| ApiError::path(format!("unknown plane '{s}': use xy, xz or yz")))
}

/// Split `name.ext` into the name and the tile format.
fn file(s: &str) -> ApiResult<(&str, TileFormat)> {
    let (name, ext) = s.rsplit_once('.').ok_or_else(|| {
        ApiError::path(format!("tile file '{s}' needs an extension: .png or .jpg"))
    })?;
    let format = TileFormat::parse(ext)
        .ok_or_else(|| ApiError::path(format!("unknown tile format '{ext}': use png or jpg")))?;
    Ok((name, format))
}

/// Whether the request's `If-None-Match` names `etag` (or `*`).
pub(crate) fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag)
        })
}

fn respond(req: &HttpRequest, tile: &CachedTile) -> HttpResponse {
    let fresh = etag_matches(req, &tile.etag);
    let mut r = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    r.insert_header((header::ETAG, tile.etag.clone()))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL));
    if fresh {
        r.finish()
    } else {
        r.content_type(tile.content_type).body(tile.bytes.clone())
    }
}

async fn serve_tile(
    state: &AppState,
    ctx: &RequestContext,
    req: &HttpRequest,
    r: &TileRequest,
) -> ApiResult<HttpResponse> {
    let t = state.services.tile(ctx, r).await?;
    Ok(respond(req, &t))
}

/// `GET /v1/tiles/{ds}/{ch}/{plane}/{size}/{level}/{slice}/{row}/{col}.{png|jpg}`.
pub struct Tile(TileRequest);

impl Endpoint for Tile {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (dataset, channel) = channel(req)?;
        let (col, format) = file(segment(req, "col")?)?;
        Ok(Self(TileRequest {
            plane: plane(segment(req, "plane")?)?,
            size: number(segment(req, "size")?, "tile size")?,
            level: number(segment(req, "level")?, "level")?,
            slice: number(segment(req, "slice")?, "slice")?,
            slice_space: SliceSpace::Level,
            row: number(segment(req, "row")?, "tile row")?,
            col: number(col, "tile column")?,
            format,
            dataset,
            channel,
        }))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.dataset.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        serve_tile(state, ctx, req, &self.0).await
    }
}

/// `GET /catmaid/{ds}/{ch}/{plane}/{z}/{row}_{col}_{level}.{png|jpg}`: CATMAID
/// tile source type 1 with 512-pixel tiles; `z` counts level-0 sections.
pub struct Catmaid(TileRequest);

impl Endpoint for Catmaid {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (dataset, channel) = channel(req)?;
        let last = segment(req, "tile")?;
        let (name, format) = file(last)?;
        let parts: Vec<&str> = name.split('_').collect();
        let [row, col, level] = parts[..] else {
            return Err(ApiError::path(format!(
                "CATMAID tile '{last}' must look like {{row}}_{{col}}_{{level}}.png"
            )));
        };
        Ok(Self(TileRequest {
            plane: plane(segment(req, "plane")?)?,
            size: CATMAID_TILE_SIZE,
            level: number(level, "level")?,
            slice: number(segment(req, "z")?, "section")?,
            slice_space: SliceSpace::Full,
            row: number(row, "tile row")?,
            col: number(col, "tile column")?,
            format,
            dataset,
            channel,
        }))
    }

    fn access(&self) -> Access {
        Access::Read(self.0.dataset.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        serve_tile(state, ctx, req, &self.0).await
    }
}
