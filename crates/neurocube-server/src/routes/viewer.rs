//! The viewer page at `/viewer/`: plain HTML and JavaScript compiled into
//! the binary (no build step, nothing to install).

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::error::{ApiError, ApiResult};

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
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /viewer/{file}`: its script and style sheet.
pub async fn file(name: web::Path<String>) -> ApiResult<HttpResponse> {
    match name.as_str() {
        "index.html" => Ok(asset("text/html; charset=utf-8", INDEX)),
        "viewer.js" => Ok(asset("text/javascript; charset=utf-8", SCRIPT)),
        "viewer.css" => Ok(asset("text/css; charset=utf-8", STYLE)),
        other => Err(ApiError::NoRoute(format!(
            "the viewer has no file '{other}': open /viewer/"
        ))),
    }
}
