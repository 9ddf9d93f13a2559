//! Datasets and channels under `/v1/datasets`.

use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_core::meta::{Channel, Dataset, Level};
use neurocube_core::{ChannelName, DatasetName};
use neurocube_service::catalog::Created;
use neurocube_service::{Access, RequestContext};
use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, channel, dataset, json_body, query};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Metadata bodies are small.
const META_LIMIT: u64 = 1 << 20;

#[derive(Serialize)]
struct DatasetView {
    #[serde(flatten)]
    dataset: Dataset,
    /// Geometry of every level.
    level_info: Vec<Level>,
}

fn view(d: Dataset) -> DatasetView {
    DatasetView {
        level_info: d.all_levels(),
        dataset: d,
    }
}

#[derive(Serialize)]
struct ChannelView<'a> {
    #[serde(flatten)]
    channel: &'a Channel,
    dataset: &'a str,
    /// State of each resolution level (single-channel GET only).
    #[serde(skip_serializing_if = "Option::is_none")]
    level_status: Option<Vec<neurocube_service::pyramid::LevelStatus>>,
}

fn check_name(body_name: &str, url_name: &str, what: &str) -> ApiResult<()> {
    if !body_name.is_empty() && body_name != url_name {
        return Err(ApiError::body(format!(
            "{what} name '{body_name}' in the body differs from '{url_name}' in the URL"
        )));
    }
    Ok(())
}

fn created(c: Created) -> actix_web::HttpResponseBuilder {
    match c {
        Created::New => HttpResponse::Created(),
        Created::Unchanged => HttpResponse::Ok(),
    }
}

/// `GET /v1/datasets`
pub struct ListDatasets;

impl Endpoint for ListDatasets {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(ListDatasets)
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
        let all: Vec<DatasetView> = state
            .services
            .list_datasets(ctx)
            .await?
            .into_iter()
            .map(view)
            .collect();
        Ok(HttpResponse::Ok().json(serde_json::json!({ "datasets": all })))
    }
}

/// `GET /v1/datasets/{ds}`
pub struct GetDataset(DatasetName);

impl Endpoint for GetDataset {
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
        let d = state.services.get_dataset(ctx, &self.0).await?;
        Ok(HttpResponse::Ok().json(view((*d).clone())))
    }
}

/// `PUT /v1/datasets/{ds}`
pub struct PutDataset(DatasetName);

impl Endpoint for PutDataset {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?))
    }

    fn access(&self) -> Access {
        Access::ServerWrite
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let mut d: Dataset = json_body(req, body, META_LIMIT, "dataset").await?;
        check_name(&d.name, &self.0, "dataset")?;
        d.name = self.0.to_string();
        let c = state.services.create_dataset(ctx, d.clone()).await?;
        // A re-creation changes nothing: answer with what is stored.
        if c == Created::Unchanged {
            d = (*state.services.get_dataset(ctx, &self.0).await?).clone();
        }
        Ok(created(c).json(view(d)))
    }
}

/// Body of `PATCH /v1/datasets/{ds}`: the fields that may change. A table
/// setting given as `null` is cleared.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetPatchBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    synapse_table: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    soma_table: Option<Option<String>>,
}

/// A field that is present, `null` or not: absent fields stay `None`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `PATCH /v1/datasets/{ds}`: the description and CAVE's datastack
/// settings (`synapse_table`, `soma_table`); the geometry never changes.
pub struct PatchDataset(DatasetName);

impl Endpoint for PatchDataset {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(dataset(req)?))
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
        let b: DatasetPatchBody = json_body(req, body, META_LIMIT, "dataset change").await?;
        let patch = neurocube_service::DatasetPatch {
            description: b.description,
            synapse_table: b.synapse_table,
            soma_table: b.soma_table,
        };
        let d = state.services.update_dataset(ctx, &self.0, patch).await?;
        Ok(HttpResponse::Ok().json(view(d)))
    }
}

/// Query of `DELETE /v1/datasets/{ds}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    recursive: bool,
}

/// `DELETE /v1/datasets/{ds}[?recursive=true]`
pub struct DeleteDataset {
    ds: DatasetName,
    recursive: bool,
}

impl Endpoint for DeleteDataset {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let q: DeleteQuery = query(req)?;
        Ok(Self {
            ds: dataset(req)?,
            recursive: q.recursive,
        })
    }

    fn access(&self) -> Access {
        Access::Admin(self.ds.clone())
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        state
            .services
            .delete_dataset(ctx, &self.ds, self.recursive)
            .await?;
        Ok(HttpResponse::NoContent().finish())
    }
}

/// `GET /v1/datasets/{ds}/channels`
pub struct ListChannels(DatasetName);

impl Endpoint for ListChannels {
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
        let recs = state.services.list_channels(ctx, &self.0).await?;
        let views: Vec<ChannelView<'_>> = recs
            .iter()
            .map(|r| ChannelView {
                channel: &r.meta,
                dataset: &self.0,
                level_status: None,
            })
            .collect();
        Ok(HttpResponse::Ok().json(serde_json::json!({ "channels": views })))
    }
}

/// `GET /v1/datasets/{ds}/channels/{ch}`
pub struct GetChannel(DatasetName, ChannelName);

impl Endpoint for GetChannel {
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
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let (rc, level_status) = state.services.get_channel(ctx, &self.0, &self.1).await?;
        Ok(HttpResponse::Ok().json(ChannelView {
            channel: &rc.channel.meta,
            dataset: &self.0,
            level_status: Some(level_status),
        }))
    }
}

/// `PUT /v1/datasets/{ds}/channels/{ch}`
pub struct PutChannel(DatasetName, ChannelName);

impl Endpoint for PutChannel {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, c) = channel(req)?;
        Ok(Self(d, c))
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
        let mut c: Channel = json_body(req, body, META_LIMIT, "channel").await?;
        check_name(&c.name, &self.1, "channel")?;
        c.name = self.1.to_string();
        let created_ = state
            .services
            .create_channel(ctx, &self.0, c.clone())
            .await?;
        Ok(created(created_).json(ChannelView {
            channel: &c,
            dataset: &self.0,
            level_status: None,
        }))
    }
}

/// `DELETE /v1/datasets/{ds}/channels/{ch}`
pub struct DeleteChannel(DatasetName, ChannelName);

impl Endpoint for DeleteChannel {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, c) = channel(req)?;
        Ok(Self(d, c))
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
        state.services.delete_channel(ctx, &self.0, &self.1).await?;
        Ok(HttpResponse::NoContent().finish())
    }
}
