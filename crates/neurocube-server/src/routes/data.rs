//! Cutouts and slices in the OCP URL grammar.

use actix_web::{HttpRequest, HttpResponse, web};
use futures::TryStreamExt;
use neurocube_core::render::ImageFormat;
use neurocube_service::slice::RenderOptions;
use neurocube_service::{Access, RequestContext};
use serde::Deserialize;
use serde_json::json;

use crate::endpoint::{Endpoint, content_length, query, segment};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::url::{self, DataKind, DataRequest};

fn parse(req: &HttpRequest) -> ApiResult<DataRequest> {
    let s = |n| segment(req, n);
    url::parse([
        s("ds")?,
        s("ch")?,
        s("fmt")?,
        s("level")?,
        s("a")?,
        s("b")?,
        s("c")?,
    ])
}

/// Query options of slices.
#[derive(Deserialize, Default)]
struct SliceQuery {
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
                    ApiError::query(format!("quality '{q}' must be an integer from 1 to 100"))
                })?,
        };
        let format = match self.format.as_deref() {
            None | Some("png") => ImageFormat::Png,
            Some("jpeg" | "jpg") => ImageFormat::Jpeg(quality),
            Some(f) => {
                return Err(ApiError::query(format!(
                    "unknown image format '{f}': use png or jpeg"
                )));
            }
        };
        let window = self
            .window
            .as_deref()
            .map(url::window)
            .transpose()
            .map_err(ApiError::query)?;
        Ok(RenderOptions { format, window })
    }
}

fn shape_header(s: [u64; 3]) -> String {
    format!("{},{},{}", s[2], s[1], s[0])
}

/// `GET /{ds}/{ch}/{fmt}/{level}/{a}/{b}/{c}/`: a cutout or a slice.
pub struct Get {
    r: DataRequest,
    render: Option<RenderOptions>,
}

impl Endpoint for Get {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let r = parse(req)?;
        let render = match r.kind {
            DataKind::Slice(_) => Some(query::<SliceQuery>(req)?.options()?),
            DataKind::Cutout(_) | DataKind::Chunks | DataKind::Ids => None,
        };
        Ok(Self { r, render })
    }

    fn access(&self) -> Access {
        Access::Read(self.r.target.dataset.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let s = &state.services;
        let mut ok = HttpResponse::Ok();
        match (self.r.kind, self.render) {
            (DataKind::Cutout(enc), _) => {
                let c = s.read_cutout(ctx, &self.r.target, enc).await?;
                if c.stale {
                    ok.insert_header(("X-Neurocube-Level-Stale", "true"));
                }
                Ok(ok
                    .content_type(enc.content_type())
                    .insert_header(("X-Neurocube-Dtype", c.dtype.name()))
                    .insert_header(("X-Neurocube-Shape", shape_header(c.shape)))
                    .no_chunking(c.body.len)
                    .streaming(c.body.body.map_err(ApiError::from)))
            }
            (DataKind::Chunks, _) => {
                let c = s.read_chunks(ctx, &self.r.target).await?;
                if c.stale {
                    ok.insert_header(("X-Neurocube-Level-Stale", "true"));
                }
                let [cx, cy, cz] = c.chunk_size;
                Ok(ok
                    .content_type(neurocube_core::chunkstream::CONTENT_TYPE)
                    .insert_header(("X-Neurocube-Dtype", c.dtype.name()))
                    .insert_header(("X-Neurocube-Shape", shape_header(c.shape)))
                    .insert_header(("X-Neurocube-Chunk-Size", format!("{cx},{cy},{cz}")))
                    .streaming(c.body.map_err(ApiError::from)))
            }
            (DataKind::Ids, _) => {
                let ids = s.ids_in_box(ctx, &self.r.target).await?;
                Ok(ok.json(json!({ "ids": ids })))
            }
            (DataKind::Slice(plane), render) => {
                let opts = render.unwrap_or(RenderOptions {
                    format: ImageFormat::Png,
                    window: None,
                });
                let img = s.read_slice(ctx, &self.r.target, plane, opts).await?;
                if img.stale {
                    ok.insert_header(("X-Neurocube-Level-Stale", "true"));
                }
                Ok(ok.content_type(opts.format.content_type()).body(img.image))
            }
        }
    }
}

/// `PUT /{ds}/{ch}/{npy|raw|blosc}/{level}/{x0,x1}/{y0,y1}/{z0,z1}/`: write a cutout.
pub struct Put(DataRequest);

impl Endpoint for Put {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let r = parse(req)?;
        match r.kind {
            DataKind::Slice(_) => {
                return Err(ApiError::path(
                    "slices are read-only: write with npy, raw or blosc cutout URLs",
                ));
            }
            DataKind::Chunks => {
                return Err(ApiError::path(
                    "chunk streams are read-only: write with npy, raw or blosc cutout URLs",
                ));
            }
            DataKind::Ids => {
                return Err(ApiError::path(
                    "ids are read-only: write labels with npy, raw or blosc cutout URLs or through objects",
                ));
            }
            DataKind::Cutout(_) => {}
        }
        Ok(Self(r))
    }

    fn access(&self) -> Access {
        Access::Write(self.0.target.dataset.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let DataKind::Cutout(enc) = self.0.kind else {
            return Err(ApiError::path("slices are read-only"));
        };
        let summary = state
            .services
            .write_cutout(ctx, &self.0.target, enc, content_length(req), body)
            .await?;
        Ok(HttpResponse::Created().json(json!({
            "chunks_written": summary.chunks_written,
            "chunks_deleted": summary.chunks_deleted,
            "format": enc.name(),
        })))
    }
}
