//! Jobs under `/v1/jobs`, and starting a channel's downsampling.

use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_service::jobs::{JobRecord, TaskSpec};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Job bodies are small (an ingest job lists its slabs).
const JOB_LIMIT: u64 = 16 << 20;

fn view(r: JobRecord) -> Value {
    serde_json::to_value(r.view()).unwrap_or_default()
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid {what} JSON: {e}")))
}

/// `GET /v1/jobs`
pub async fn list(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let jobs: Vec<Value> = state
        .services
        .jobs
        .list()
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "jobs": jobs })))
}

/// Query of `GET /v1/jobs/{id}`.
#[derive(Deserialize)]
pub struct GetQuery {
    #[serde(default)]
    tasks: bool,
}

/// `GET /v1/jobs/{id}[?tasks=true]`
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<GetQuery>,
) -> ApiResult<HttpResponse> {
    let jobs = &state.services.jobs;
    let mut v = view(jobs.get(&id).await?);
    if q.tasks {
        let tasks: Vec<Value> = jobs
            .tasks(&id, None)
            .await?
            .into_iter()
            .map(|(_, t)| json!({"name": t.name, "phase": t.phase, "state": t.state, "holder": t.holder, "attempts": t.attempts}))
            .collect();
        v["tasks"] = Value::Array(tasks);
    }
    Ok(HttpResponse::Ok().json(v))
}

/// `DELETE /v1/jobs/{id}`: cancel.
pub async fn cancel(state: web::Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let r = state.services.jobs.cancel(&id).await?;
    Ok(HttpResponse::Ok().json(view(r)))
}

/// `POST /v1/datasets/{ds}/channels/{ch}/downsample`: start (or return the
/// running) downsample job of a channel.
pub async fn downsample(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ds, ch) = path.into_inner();
    let (job, created) = state.services.pyramid.start_downsample(&ds, &ch).await?;
    let mut v = view(job);
    v["created"] = json!(created);
    Ok(HttpResponse::Accepted().json(v))
}

/// A task of a client-run job.
#[derive(Deserialize)]
struct NewTask {
    name: String,
    #[serde(default)]
    units: u64,
}

/// Body of `POST /v1/jobs`: a job run by a client (the ingest command).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJob {
    kind: String,
    key: String,
    #[serde(default)]
    params: Value,
    #[serde(default = "bytes_unit")]
    unit: String,
    tasks: Vec<NewTask>,
}

fn bytes_unit() -> String {
    "bytes".into()
}

/// `POST /v1/jobs`: create a client-run job, or return the one made for its key.
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let bytes = body::read(&req, payload, JOB_LIMIT).await?;
    let j: NewJob = parse_json(&bytes, "job")?;
    if j.kind.is_empty() || j.key.is_empty() || j.tasks.is_empty() {
        return Err(ApiError::BadRequest(
            "a job needs a kind, a key and at least one task".into(),
        ));
    }
    let tasks = j
        .tasks
        .into_iter()
        .map(|t| TaskSpec {
            name: t.name,
            units: t.units,
            spec: Value::Null,
        })
        .collect();
    let (rec, created) = state
        .services
        .jobs
        .create_external(&j.key, &j.kind, j.params, &j.unit, tasks)
        .await?;
    let mut v = view(rec);
    v["created"] = json!(created);
    Ok(if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
    .json(v))
}

/// `POST /v1/jobs/{id}/tasks/{name}/done`: a client finished a task.
pub async fn task_done(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (id, name) = path.into_inner();
    let r = state.services.jobs.complete_task(&id, &name).await?;
    Ok(HttpResponse::Ok().json(view(r)))
}

/// Body of `POST /v1/jobs/{id}/fail`.
#[derive(Deserialize)]
struct Failure {
    error: String,
}

/// `POST /v1/jobs/{id}/fail`: a client stopped on an error.
pub async fn fail(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let bytes = body::read(&req, payload, 1 << 20).await?;
    let f: Failure = parse_json(&bytes, "failure")?;
    let r = state.services.jobs.fail(&id, f.error).await?;
    Ok(HttpResponse::Ok().json(view(r)))
}
