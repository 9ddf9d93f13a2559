//! Jobs under `/v1/jobs`, and starting a channel's downsampling.

use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_core::{ChannelName, DatasetName};
use neurocube_service::jobs::{JobRecord, TaskSpec};
use neurocube_service::{Access, RequestContext};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::{Endpoint, channel, json_body, query, segment};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Job bodies are small (an ingest job lists its slabs).
const JOB_LIMIT: u64 = 16 << 20;

fn view(r: JobRecord) -> Value {
    serde_json::to_value(r.view()).unwrap_or_default()
}

fn id(req: &HttpRequest) -> ApiResult<String> {
    Ok(segment(req, "id")?.to_string())
}

/// `GET /v1/jobs`
pub struct ListJobs;

impl Endpoint for ListJobs {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(ListJobs)
    }

    fn access(&self) -> Access {
        Access::ServerRead
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let jobs: Vec<Value> = state
            .services
            .list_jobs(ctx)
            .await?
            .into_iter()
            .map(view)
            .collect();
        Ok(HttpResponse::Ok().json(json!({ "jobs": jobs })))
    }
}

/// Query of `GET /v1/jobs/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    #[serde(default)]
    tasks: bool,
}

/// `GET /v1/jobs/{id}[?tasks=true]`
pub struct GetJob {
    id: String,
    tasks: bool,
}

impl Endpoint for GetJob {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let q: GetQuery = query(req)?;
        Ok(Self {
            id: id(req)?,
            tasks: q.tasks,
        })
    }

    fn access(&self) -> Access {
        Access::ServerRead
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let (job, tasks) = state.services.get_job(ctx, &self.id, self.tasks).await?;
        let mut v = view(job);
        if let Some(tasks) = tasks {
            let tasks: Vec<Value> = tasks
                .into_iter()
                .map(|t| json!({"name": t.name, "phase": t.phase, "state": t.state, "holder": t.holder, "attempts": t.attempts}))
                .collect();
            v["tasks"] = Value::Array(tasks);
        }
        Ok(HttpResponse::Ok().json(v))
    }
}

/// `DELETE /v1/jobs/{id}`: cancel.
pub struct CancelJob(String);

impl Endpoint for CancelJob {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(id(req)?))
    }

    fn access(&self) -> Access {
        Access::ServerWrite
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let r = state.services.cancel_job(ctx, &self.0).await?;
        Ok(HttpResponse::Ok().json(view(r)))
    }
}

/// `POST /v1/datasets/{ds}/channels/{ch}/downsample`: start (or return the
/// running) downsample job of a channel.
pub struct Downsample(DatasetName, ChannelName);

impl Endpoint for Downsample {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        let (d, c) = channel(req)?;
        Ok(Self(d, c))
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
        let (job, created) = state
            .services
            .start_downsample(ctx, &self.0, &self.1)
            .await?;
        let mut v = view(job);
        v["created"] = json!(created);
        Ok(HttpResponse::Accepted().json(v))
    }
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
pub struct CreateJob;

impl Endpoint for CreateJob {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(CreateJob)
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
        let j: NewJob = json_body(req, body, JOB_LIMIT, "job").await?;
        if j.kind.is_empty() || j.key.is_empty() || j.tasks.is_empty() {
            return Err(ApiError::body(
                "a job needs a kind, a key and at least one task",
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
            .create_client_job(ctx, &j.key, &j.kind, j.params, &j.unit, tasks)
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
}

/// `POST /v1/jobs/{id}/tasks/{name}/done`: a client finished a task.
pub struct TaskDone(String, String);

impl Endpoint for TaskDone {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(id(req)?, segment(req, "name")?.to_string()))
    }

    fn access(&self) -> Access {
        Access::ServerWrite
    }

    async fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let r = state.services.complete_task(ctx, &self.0, &self.1).await?;
        Ok(HttpResponse::Ok().json(view(r)))
    }
}

/// Body of `POST /v1/jobs/{id}/fail`.
#[derive(Deserialize)]
struct Failure {
    error: String,
}

/// `POST /v1/jobs/{id}/fail`: a client stopped on an error.
pub struct FailJob(String);

impl Endpoint for FailJob {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(Self(id(req)?))
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
        let f: Failure = json_body(req, body, 1 << 20, "failure").await?;
        let r = state.services.fail_job(ctx, &self.0, f.error).await?;
        Ok(HttpResponse::Ok().json(view(r)))
    }
}
