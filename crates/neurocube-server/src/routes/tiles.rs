//! Tiles: `/v1/tiles/{ds}/{ch}/{plane}/{size}/{level}/{slice}/{row}/{col}.{png|jpg}`
//! and CATMAID's `/catmaid/{ds}/{ch}/{plane}/{z}/{row}_{col}_{level}.{png|jpg}`
//! (512-pixel tiles, `z` in level-0 sections). Responses carry an `ETag`
//! and `Cache-Control`; `If-None-Match` with the same tag gets 304.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_service::slice::Plane;
use neurocube_service::tiles::{CATMAID_TILE_SIZE, SliceSpace, Tile, TileFormat, TileRequest};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Browsers may reuse a tile this long without asking; then they revalidate
/// with its ETag (writes change the tag).
const CACHE_CONTROL: &str = "public, max-age=30";

type TilePath = web::Path<(
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
)>;
type CatmaidPath = web::Path<(String, String, String, String, String)>;

fn number<T: std::str::FromStr>(s: &str, what: &str) -> ApiResult<T> {
    s.parse()
        .map_err(|_| ApiError::BadRequest(format!("{what} '{s}' must be a non-negative integer")))
}

fn plane(s: &str) -> ApiResult<Plane> {
    Plane::parse(s)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown plane '{s}': use xy, xz or yz")))
}

/// Split `name.ext` into the name and the tile format.
fn file(s: &str) -> ApiResult<(&str, TileFormat)> {
    let (name, ext) = s.rsplit_once('.').ok_or_else(|| {
        ApiError::BadRequest(format!("tile file '{s}' needs an extension: .png or .jpg"))
    })?;
    let format = TileFormat::parse(ext).ok_or_else(|| {
        ApiError::BadRequest(format!("unknown tile format '{ext}': use png or jpg"))
    })?;
    Ok((name, format))
}

fn respond(req: &HttpRequest, tile: &Tile) -> HttpResponse {
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag == tile.etag || tag.strip_prefix("W/") == Some(tile.etag.as_str())
        });
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

/// `GET /v1/tiles/{ds}/{ch}/{plane}/{size}/{level}/{slice}/{row}/{col}.{png|jpg}`.
pub async fn tile(
    state: web::Data<AppState>,
    path: TilePath,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (dataset, channel, p, size, level, slice, row, last) = path.into_inner();
    let (col, format) = file(&last)?;
    let r = TileRequest {
        plane: plane(&p)?,
        size: number(&size, "tile size")?,
        level: number(&level, "level")?,
        slice: number(&slice, "slice")?,
        slice_space: SliceSpace::Level,
        row: number(&row, "tile row")?,
        col: number(col, "tile column")?,
        format,
        dataset,
        channel,
    };
    let t = state.services.tiles.tile(&r).await?;
    Ok(respond(&req, &t))
}

/// `GET /catmaid/{ds}/{ch}/{plane}/{z}/{row}_{col}_{level}.{png|jpg}`: CATMAID
/// tile source type 1 with 512-pixel tiles; `z` counts level-0 sections.
pub async fn catmaid(
    state: web::Data<AppState>,
    path: CatmaidPath,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (dataset, channel, p, z, last) = path.into_inner();
    let (name, format) = file(&last)?;
    let parts: Vec<&str> = name.split('_').collect();
    let [row, col, level] = parts[..] else {
        return Err(ApiError::BadRequest(format!(
            "CATMAID tile '{last}' must look like {{row}}_{{col}}_{{level}}.png"
        )));
    };
    let r = TileRequest {
        plane: plane(&p)?,
        size: CATMAID_TILE_SIZE,
        level: number(level, "level")?,
        slice: number(&z, "section")?,
        slice_space: SliceSpace::Full,
        row: number(row, "tile row")?,
        col: number(col, "tile column")?,
        format,
        dataset,
        channel,
    };
    let t = state.services.tiles.tile(&r).await?;
    Ok(respond(&req, &t))
}
