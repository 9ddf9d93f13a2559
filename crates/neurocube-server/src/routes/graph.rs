//! The connectivity graph: `GET|POST /v1/datasets/{ds}/graph` and
//! `.../graph/stats`. GET takes the fields as a query string (lists
//! comma-separated); POST the same fields as JSON, for long id lists.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::TryStreamExt;
use neurocube_core::DatasetName;
use neurocube_service::graph::{GraphFormat, GraphRequest};
use neurocube_service::{Access, RequestContext};

use crate::endpoint::{Endpoint, dataset, json_body};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest graph request body (a million ids as JSON).
const GRAPH_BODY_LIMIT: u64 = 32 << 20;

/// The request from the query string (GET) or the JSON body (POST).
async fn graph_request(req: &HttpRequest, body: web::Payload) -> ApiResult<GraphRequest> {
    if req.method() == actix_web::http::Method::POST {
        let v: serde_json::Value = json_body(req, body, GRAPH_BODY_LIMIT, "graph").await?;
        if !crate::endpoint::query_string(req).is_empty() {
            return Err(ApiError::query(
                "a POST graph request takes its fields in the JSON body, not the query string",
            ));
        }
        return Ok(GraphRequest::from_json(v)?);
    }
    let pairs: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(&crate::endpoint::query_string(req))
            .map(web::Query::into_inner)
            .map_err(|e| ApiError::query(format!("bad query string: {e}")))?;
    Ok(GraphRequest::from_query(&pairs)?)
}

/// `GET|POST /v1/datasets/{ds}/graph`
pub struct GetGraph(DatasetName);

impl Endpoint for GetGraph {
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
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let g = graph_request(req, body).await?;
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(GraphFormat::from_accept);
        let out = state.services.graph(ctx, &self.0, g, accept).await?;
        let mut r = HttpResponse::Ok();
        r.content_type(out.format.content_type())
            .insert_header((
                "X-Neurocube-Version",
                out.version
                    .map_or_else(|| "live".to_string(), |v| v.to_string()),
            ))
            .insert_header(("X-Neurocube-Plan", out.plan.clone()))
            .insert_header(("X-Neurocube-Nodes", out.nodes.to_string()))
            .insert_header(("X-Neurocube-Edges", out.edges.to_string()))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!(
                    "inline; filename=\"{}-graph.{}\"",
                    self.0,
                    out.format.extension()
                ),
            ));
        Ok(r.streaming(out.body.map_err(ApiError::from)))
    }
}

/// `GET|POST /v1/datasets/{ds}/graph/stats`
pub struct GraphStats(DatasetName);

impl Endpoint for GraphStats {
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
        req: &HttpRequest,
        body: web::Payload,
    ) -> ApiResult<HttpResponse> {
        let g = graph_request(req, body).await?;
        let s = state.services.graph_stats(ctx, &self.0, g).await?;
        Ok(HttpResponse::Ok().json(s))
    }
}
