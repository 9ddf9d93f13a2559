//! Health, metrics, the background workers and the API index.

use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_service::{Access, RequestContext};
use prometheus::Encoder;
use serde_json::json;

use crate::endpoint::Endpoint;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `GET /health`: the process is up, which store it uses, and its workers.
pub struct Health;

impl Endpoint for Health {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Health)
    }

    fn access(&self) -> Access {
        Access::Public
    }

    async fn handle(
        self,
        state: &AppState,
        _: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let s = &state.services;
        let workers = s.runner.statuses();
        let failing: Vec<&str> = workers
            .iter()
            .filter(|w| w.state == "retrying")
            .map(|w| w.name.as_str())
            .collect();
        Ok(HttpResponse::Ok().json(json!({
            "status": if failing.is_empty() { "ok" } else { "degraded" },
            "store": s.store.backend(),
            "workers": workers,
        })))
    }
}

/// `GET /metrics`: Prometheus text format.
pub struct Metrics;

impl Endpoint for Metrics {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Metrics)
    }

    fn access(&self) -> Access {
        Access::Metrics
    }

    async fn handle(
        self,
        state: &AppState,
        _: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let mut buf = Vec::new();
        let families = state.services.metrics.registry.gather();
        prometheus::TextEncoder::new()
            .encode(&families, &mut buf)
            .map_err(|e| {
                ApiError::from(neurocube_service::ServiceError::Internal {
                    during: "encoding the metrics",
                    reason: e.to_string(),
                })
            })?;
        Ok(HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(buf))
    }
}

/// `GET /v1/workers`: every background worker.
pub struct Workers;

impl Endpoint for Workers {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Workers)
    }

    fn access(&self) -> Access {
        Access::ServerRead
    }

    async fn handle(
        self,
        state: &AppState,
        _: &RequestContext,
        _: &HttpRequest,
        _: web::Payload,
    ) -> ApiResult<HttpResponse> {
        Ok(HttpResponse::Ok().json(json!({ "workers": state.services.runner.statuses() })))
    }
}

/// `GET /v1`: every route, from the route table (docs/api.md has the details).
pub struct Index;

impl Endpoint for Index {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Index)
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
        let endpoints: Vec<_> = super::table()
            .into_iter()
            .map(|r| json!({"method": r.method.as_str(), "path": r.path, "does": r.does}))
            .collect();
        Ok(HttpResponse::Ok().json(json!({
            "name": "neurocube",
            "version": env!("CARGO_PKG_VERSION"),
            "docs": "docs/api.md",
            "endpoints": endpoints,
        })))
    }
}
