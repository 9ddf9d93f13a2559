//! Cutouts and slices in the OCP URL grammar.

use actix_web::{HttpRequest, HttpResponse, web};
use futures::TryStreamExt;
use neurocube_core::render::ImageFormat;
use neurocube_service::encoding::{self, Encoding};
use neurocube_service::slice::RenderOptions;
use serde::Deserialize;
use serde_json::json;

use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::url::{self, DataKind, DataRequest};

type Segments = web::Path<(String, String, String, String, String, String, String)>;

fn parse(p: Segments) -> ApiResult<DataRequest> {
    let (ds, ch, fmt, level, a, b, c) = p.into_inner();
    url::parse([&ds, &ch, &fmt, &level, &a, &b, &c]).map_err(ApiError::BadRequest)
}

/// Query options of slices.
#[derive(Deserialize)]
pub struct SliceQuery {
    format: Option<String>,
    quality: Option<String>,
    window: Option<String>,
}

impl SliceQuery {
    fn options(&self) -> ApiResult<RenderOptions> {
        let quality = match &self.quality {
            None => 85,
            Some(q) => q
                .parse::<u8>()
                .ok()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("quality '{q}' must be an integer from 1 to 100"))
                })?,
        };
        let format = match self.format.as_deref() {
            None | Some("png") => ImageFormat::Png,
            Some("jpeg" | "jpg") => ImageFormat::Jpeg(quality),
            Some(f) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown image format '{f}': use png or jpeg"
                )));
            }
        };
        let window = self
            .window
            .as_deref()
            .map(url::window)
            .transpose()
            .map_err(ApiError::BadRequest)?;
        Ok(RenderOptions { format, window })
    }
}

fn shape_header(r: &DataRequest) -> String {
    let s = r.bbox.shape();
    format!("{},{},{}", s[2], s[1], s[0])
}

/// Read the first slab before the response starts, so a store that is
/// down answers 503 (with Retry-After) instead of a 200 whose connection is
/// then cut. A failure after the first slab still ends the body early.
async fn first_slab_read(
    mut s: neurocube_service::volume::CutoutStream,
) -> Result<neurocube_service::volume::CutoutStream, neurocube_service::ServiceError> {
    use futures::StreamExt;
    if let Some(first) = s.body.next().await {
        let first = first?;
        s.body = futures::stream::once(async move { Ok(first) })
            .chain(s.body)
            .boxed();
    }
    Ok(s)
}

/// `GET /{ds}/{ch}/{fmt}/{level}/{a}/{b}/{c}/`: a cutout or a slice.
pub async fn get(
    state: web::Data<AppState>,
    path: Segments,
    q: web::Query<SliceQuery>,
) -> ApiResult<HttpResponse> {
    let r = parse(path)?;
    let volumes = &state.services.volumes;
    let t = volumes
        .target(&r.dataset, &r.channel, r.level, r.bbox)
        .await?;
    let dtype = t.dtype();
    // A coarser level not yet recomputed after a write says so.
    let stale = state.services.pyramid.is_stale(&t).await?;
    let mut ok = HttpResponse::Ok();
    if stale {
        ok.insert_header(("X-Neurocube-Level-Stale", "true"));
    }
    match r.kind {
        DataKind::Cutout(enc) => {
            let e = encoding::encode(enc, first_slab_read(volumes.read(t)).await?).await?;
            Ok(ok
                .content_type(enc.content_type())
                .insert_header(("X-Neurocube-Dtype", dtype.name()))
                .insert_header(("X-Neurocube-Shape", shape_header(&r)))
                .no_chunking(e.len)
                .streaming(e.body.map_err(ApiError::from)))
        }
        DataKind::Slice(plane) => {
            let opts = q.options()?;
            let img = volumes.slice(plane, t, opts).await?;
            Ok(ok.content_type(opts.format.content_type()).body(img))
        }
    }
}

/// `PUT /{ds}/{ch}/{npy|raw|blosc}/{level}/{x0,x1}/{y0,y1}/{z0,z1}/`: write a cutout.
pub async fn put(
    state: web::Data<AppState>,
    path: Segments,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let r = parse(path)?;
    let DataKind::Cutout(enc) = r.kind else {
        return Err(ApiError::BadRequest(
            "slices are read-only: write with npy, raw or blosc cutout URLs".into(),
        ));
    };
    let volumes = &state.services.volumes;
    let t = volumes
        .target(&r.dataset, &r.channel, r.level, r.bbox)
        .await?;
    let body = body::read(&req, payload, state.body_limit).await?;
    let voxels = encoding::decode(enc, body, &t).await?;
    let summary = volumes.write(t, voxels).await?;
    Ok(HttpResponse::Created().json(json!({
        "chunks_written": summary.chunks_written,
        "chunks_deleted": summary.chunks_deleted,
        "format": match enc { Encoding::Npy => "npy", Encoding::Raw => "raw", Encoding::Blosc => "blosc" },
    })))
}
