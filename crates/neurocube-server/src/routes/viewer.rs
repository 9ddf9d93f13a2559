//! The viewer page at `/viewer/`: plain HTML and JavaScript compiled into
//! the binary (no build step, nothing to install).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use neurocube_service::{Access, RequestContext};

use crate::endpoint::{Endpoint, segment};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const INDEX: &str = include_str!("../../static/viewer/index.html");
const SCRIPT: &str = include_str!("../../static/viewer/viewer.js");
const STYLE: &str = include_str!("../../static/viewer/viewer.css");

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /viewer/`: the page.
pub struct Page;

impl Endpoint for Page {
    fn parse(_: &HttpRequest) -> ApiResult<Self> {
        Ok(Page)
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
        Ok(asset("text/html; charset=utf-8", INDEX))
    }
}

/// `GET /viewer/{file}`: its script and style sheet.
pub struct File(String);

impl Endpoint for File {
    fn parse(req: &HttpRequest) -> ApiResult<Self> {
        Ok(File(segment(req, "file")?.to_string()))
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
        match self.0.as_str() {
            "index.html" => Ok(asset("text/html; charset=utf-8", INDEX)),
            "viewer.js" => Ok(asset("text/javascript; charset=utf-8", SCRIPT)),
            "viewer.css" => Ok(asset("text/css; charset=utf-8", STYLE)),
            other => Err(ApiError::NoRoute {
                method: "GET".into(),
                path: format!("/viewer/{other} (the viewer has no such file: open /viewer/)"),
            }),
        }
    }
}
