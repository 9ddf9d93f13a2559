//! Datasets and channels under `/v1/datasets`.

use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_core::meta::{Channel, Dataset, Level};
use neurocube_service::catalog::{ChannelRecord, Created};
use serde::{Deserialize, Serialize};

use crate::body;
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

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    recursive: bool,
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid {what} JSON: {e}")))
}

fn check_name(body_name: &str, url_name: &str, what: &str) -> ApiResult<()> {
    if !body_name.is_empty() && body_name != url_name {
        return Err(ApiError::BadRequest(format!(
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
pub async fn list_datasets(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let all: Vec<DatasetView> = state
        .services
        .catalog
        .datasets()
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "datasets": all })))
}

/// `GET /v1/datasets/{ds}`
pub async fn get_dataset(
    state: web::Data<AppState>,
    ds: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let d = state.services.catalog.dataset(&ds).await?;
    Ok(HttpResponse::Ok().json(view((*d).clone())))
}

/// `PUT /v1/datasets/{ds}`
pub async fn put_dataset(
    state: web::Data<AppState>,
    ds: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let bytes = body::read(&req, payload, META_LIMIT).await?;
    let mut d: Dataset = parse_json(&bytes, "dataset")?;
    check_name(&d.name, &ds, "dataset")?;
    d.name = ds.into_inner();
    let c = state.services.catalog.create_dataset(d.clone()).await?;
    Ok(created(c).json(view(d)))
}

/// `DELETE /v1/datasets/{ds}[?recursive=true]`
pub async fn delete_dataset(
    state: web::Data<AppState>,
    ds: web::Path<String>,
    q: web::Query<DeleteQuery>,
) -> ApiResult<HttpResponse> {
    state.services.delete_dataset(&ds, q.recursive).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/datasets/{ds}/channels`
pub async fn list_channels(
    state: web::Data<AppState>,
    ds: web::Path<String>,
) -> ApiResult<HttpResponse> {
    state.services.catalog.dataset(&ds).await?;
    let recs: Vec<ChannelRecord> = state.services.catalog.channel_records(&ds).await?;
    let views: Vec<ChannelView<'_>> = recs
        .iter()
        .map(|r| ChannelView {
            channel: &r.meta,
            dataset: &ds,
            level_status: None,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "channels": views })))
}

/// `GET /v1/datasets/{ds}/channels/{ch}`
pub async fn get_channel(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ds, ch) = path.into_inner();
    let rc = state.services.catalog.channel(&ds, &ch).await?;
    let level_status = state.services.pyramid.status(&rc).await?;
    Ok(HttpResponse::Ok().json(ChannelView {
        channel: &rc.channel.meta,
        dataset: &ds,
        level_status: Some(level_status),
    }))
}

/// `PUT /v1/datasets/{ds}/channels/{ch}`
pub async fn put_channel(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (ds, ch) = path.into_inner();
    let bytes = body::read(&req, payload, META_LIMIT).await?;
    let mut c: Channel = parse_json(&bytes, "channel")?;
    check_name(&c.name, &ch, "channel")?;
    c.name = ch;
    let created_ = state
        .services
        .catalog
        .create_channel(&ds, c.clone())
        .await?;
    Ok(created(created_).json(ChannelView {
        channel: &c,
        dataset: &ds,
        level_status: None,
    }))
}

/// `DELETE /v1/datasets/{ds}/channels/{ch}`
pub async fn delete_channel(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ds, ch) = path.into_inner();
    state.services.delete_channel(&ds, &ch).await?;
    Ok(HttpResponse::NoContent().finish())
}
