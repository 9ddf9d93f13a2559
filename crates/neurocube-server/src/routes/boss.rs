//! The BOSS API as `intern`'s `BossRemote` speaks it (docs/boss.md):
//! collections, experiments, coordinate frames and channels read from the
//! catalog, and Blosc cutouts at `/v1/cutout/{coll}/{exp}/{ch}/{res}/x0:x1/y0:y1/z0:z1/`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::TryStreamExt;
use neurocube_core::{ChannelName, DatasetName};
use neurocube_service::encoding::Encoding;
use neurocube_service::{Access, RequestContext, VolumeBox};
use serde_json::Value;

use crate::endpoint::{Endpoint, content_length, segment};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn collection(req: &HttpRequest) -> ApiResult<DatasetName> {
    Ok(DatasetName::parse(segment(req, "coll")?)?)
}

fn json(v: Value) -> HttpResponse {
    HttpResponse::Ok().json(v)
}

/// `GET /v1/collection`: the collections (datasets) the caller may read.
pub struct Collections;

impl Endpoint for Collections {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Collections)
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
        Ok(json(state.services.boss_collections(ctx).await?))
    }
}

/// `GET /v1/collection/{coll}`
pub struct Collection(DatasetName);

impl Endpoint for Collection {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(collection(req)?))
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
        Ok(json(state.services.boss_collection(ctx, &self.0).await?))
    }
}

/// `GET /v1/collection/{coll}/experiment`: its one experiment.
pub struct Experiments(DatasetName);

impl Endpoint for Experiments {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(collection(req)?))
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
        let c = state.services.boss_collection(ctx, &self.0).await?;
        Ok(json(serde_json::json!({ "experiments": c["experiments"] })))
    }
}

/// `GET /v1/collection/{coll}/experiment/{exp}` (and `.../channel`, its channel list).
pub struct Experiment<const CHANNELS: bool>(DatasetName, String);

impl<const CHANNELS: bool> Endpoint for Experiment<CHANNELS> {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(collection(req)?, segment(req, "exp")?.to_string()))
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
        let e = state
            .services
            .boss_experiment(ctx, &self.0, &self.1)
            .await?;
        if CHANNELS {
            return Ok(json(serde_json::json!({ "channels": e["channels"] })));
        }
        Ok(json(e))
    }
}

/// `GET /v1/collection/{coll}/experiment/{exp}/channel/{ch}`
pub struct Channel(DatasetName, String, ChannelName);

impl Endpoint for Channel {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(
            collection(req)?,
            segment(req, "exp")?.to_string(),
            ChannelName::parse(segment(req, "ch")?)?,
        ))
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
        Ok(json(
            state
                .services
                .boss_channel(ctx, &self.0, &self.1, &self.2)
                .await?,
        ))
    }
}

/// `GET /v1/coord/{frame}`: a dataset's coordinate frame (named like it).
pub struct CoordFrame(DatasetName);

impl Endpoint for CoordFrame {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(DatasetName::parse(segment(req, "frame")?)?))
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
        Ok(json(state.services.boss_coord_frame(ctx, &self.0).await?))
    }
}

/// `GET|POST /v1/cutout/{coll}/{exp}/{ch}/{res}/{x0:x1}/{y0:y1}/{z0:z1}`:
/// a Blosc cutout (C order, z y x), read or written.
pub struct Cutout {
    target: VolumeBox,
}

impl Endpoint for Cutout {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let ds = collection(req)?;
        neurocube_service::boss::check_experiment(&ds, segment(req, "exp")?)?;
        let ch = ChannelName::parse(segment(req, "ch")?)?;
        let (level, bbox) = crate::url::boss_box(
            segment(req, "res")?,
            [segment(req, "x")?, segment(req, "y")?, segment(req, "z")?],
        )
        .map_err(ApiError::path)?;
        if req.method() == actix_web::http::Method::GET {
            let accept: Vec<&str> = req
                .headers()
                .get_all(header::ACCEPT)
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| v.split(';').next().unwrap_or("").trim())
                .collect();
            let blosc = accept.is_empty()
                || accept
                    .iter()
                    .any(|a| matches!(*a, "application/blosc" | "application/*" | "*/*"));
            if !blosc {
                return Err(neurocube_service::ServiceError::field(
                    "Accept",
                    format!(
                        "{} is not served: cutouts here are application/blosc (what intern's get_cutout asks for), or npy and raw at /{{ds}}/{{ch}}/npy/...",
                        accept.join(", ")
                    ),
                )
                .into());
            }
        }
        Ok(Self {
            target: VolumeBox {
                dataset: ds,
                channel: ch,
                level,
                bbox,
            },
        })
    }

    fn access(&self) -> Access {
        Access::Read(self.target.dataset.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let c = state
            .services
            .read_cutout(ctx, &self.target, Encoding::Blosc)
            .await?;
        Ok(HttpResponse::Ok()
            .content_type("application/blosc")
            .insert_header(("X-Neurocube-Dtype", c.dtype.name()))
            .no_chunking(c.body.len)
            .streaming(c.body.body.map_err(ApiError::from)))
    }
}

/// `POST /v1/cutout/...`: write a Blosc cutout (intern's `create_cutout`).
pub struct WriteCutout(Cutout);

impl Endpoint for WriteCutout {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(Cutout::parse(req)?))
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
        state
            .services
            .write_cutout(
                ctx,
                &self.0.target,
                Encoding::Blosc,
                content_length(req),
                body,
            )
            .await?;
        Ok(HttpResponse::Created().finish())
    }
}
