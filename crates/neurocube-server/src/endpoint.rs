//! Typed endpoints. Every route is an [`Endpoint`]: a type that parses its
//! request (path and query) into typed values, says what access it needs
//! (which names its dataset, if it has one), and handles it with one
//! service call. [`serve`] runs them all the same way: take the request
//! context built by the middleware, check the headers' size, resolve the
//! token into the caller, count it against its rate, parse, check access
//! once, handle.

use std::future::Future;
use std::time::Duration;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use neurocube_core::{ChannelName, DatasetName, TableName};
use neurocube_service::{Access, RequestContext};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A route's typed request.
pub trait Endpoint: Sized + 'static {
    /// Parse the path and query (the body is read by `handle`).
    fn parse(req: &HttpRequest) -> ApiResult<Self>;

    /// What the request needs to be allowed.
    fn access(&self) -> Access;

    /// Do it: one service call, and the response.
    fn handle(
        self,
        state: &AppState,
        ctx: &RequestContext,
        req: &HttpRequest,
        body: web::Payload,
    ) -> impl Future<Output = ApiResult<HttpResponse>>;
}

/// Run an endpoint: context, header limit, caller, rate, parse, the one
/// access check, handle.
pub async fn serve<E: Endpoint>(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let mut ctx = context(&req, state.request_timeout);
    let head = head_bytes(&req);
    if head > state.max_header_bytes {
        return Err(neurocube_service::ServiceError::HeadersTooLarge {
            bytes: head,
            limit: state.max_header_bytes,
        }
        .into());
    }
    let services = &state.services;
    // In open mode a header meant for something else (a proxy's Basic
    // credentials) is not an error: the request is simply anonymous.
    let token = match token(&req) {
        Ok(t) => t,
        Err(_) if services.auth.mode() == neurocube_service::auth::AuthMode::Open => None,
        Err(e) => return Err(e),
    };
    ctx.principal = services.auth.authenticate(token.as_deref()).await?;
    if services.auth.rate.enabled() {
        let client = match &ctx.principal {
            neurocube_service::context::Principal::User(id) => format!("user '{}'", id.user),
            _ => format!(
                "address {}",
                req.peer_addr()
                    .map_or_else(|| "unknown".into(), |a| a.ip().to_string())
            ),
        };
        services.auth.rate.admit(&client)?;
    }
    let e = E::parse(&req)?;
    services.authorize(&ctx, &e.access()).await?;
    e.handle(&state, &ctx, &req, body).await
}

/// Bytes of the request line and headers, as sent.
fn head_bytes(req: &HttpRequest) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// Query parameters that carry a token (CAVE's clients send
/// `middle_auth_token`); endpoints never see them as their own.
const TOKEN_PARAMS: [&str; 2] = ["token", "middle_auth_token"];
/// Cookies that carry a token.
const TOKEN_COOKIES: [&str; 2] = ["neurocube_token", "middle_auth_token"];

/// The token a request carries: `Authorization: Bearer` (or `Token`), else
/// a cookie, else `?token=`. Another `Authorization` scheme is refused by name.
fn token(req: &HttpRequest) -> ApiResult<Option<String>> {
    use actix_web::http::header::AUTHORIZATION;
    if let Some(v) = req.headers().get(AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        // `Token` is what BOSS clients (intern) send.
        let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
        if known && !rest.trim().is_empty() {
            return Ok(Some(rest.trim().to_string()));
        }
        return Err(neurocube_service::ServiceError::Unauthenticated {
            reason: "the Authorization header must be 'Bearer <token>' (or BOSS's 'Token <token>')"
                .into(),
        }
        .into());
    }
    let cookies = req
        .headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='));
    for (name, value) in cookies {
        if TOKEN_COOKIES.contains(&name) && !value.is_empty() {
            return Ok(Some(value.to_string()));
        }
    }
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    Ok(pairs
        .into_iter()
        .find(|(k, _)| TOKEN_PARAMS.contains(&k.as_str()))
        .map(|(_, v)| v))
}

/// The query string without its token parameters.
#[must_use]
pub fn query_string(req: &HttpRequest) -> std::borrow::Cow<'_, str> {
    let q = req.query_string();
    let is_token = |p: &str| TOKEN_PARAMS.contains(&p.split('=').next().unwrap_or(""));
    if !q.split('&').any(is_token) {
        return std::borrow::Cow::Borrowed(q);
    }
    std::borrow::Cow::Owned(
        q.split('&')
            .filter(|p| !is_token(p))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// The request's context (made by the middleware; made here for requests
/// that did not pass through it).
pub fn context(req: &HttpRequest, timeout: Option<Duration>) -> RequestContext {
    if let Some(ctx) = req.extensions().get::<RequestContext>() {
        return ctx.clone();
    }
    RequestContext::anonymous(new_request_id(), timeout)
}

/// A fresh request id.
#[must_use]
pub fn new_request_id() -> String {
    format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0)
}

/// A path segment by name (a route that matched has it).
pub fn segment<'a>(req: &'a HttpRequest, name: &str) -> ApiResult<&'a str> {
    req.match_info()
        .get(name)
        .ok_or_else(|| ApiError::path(format!("the URL lacks its {name} segment")))
}

/// The `{ds}` segment, validated.
pub fn dataset(req: &HttpRequest) -> ApiResult<DatasetName> {
    Ok(DatasetName::parse(segment(req, "ds")?)?)
}

/// The `{ds}` and `{ch}` segments, validated.
pub fn channel(req: &HttpRequest) -> ApiResult<(DatasetName, ChannelName)> {
    Ok((dataset(req)?, ChannelName::parse(segment(req, "ch")?)?))
}

/// The `{ds}` and `{table}` segments, validated.
pub fn table(req: &HttpRequest) -> ApiResult<(DatasetName, TableName)> {
    Ok((dataset(req)?, TableName::parse(segment(req, "table")?)?))
}

/// The query string as `T`.
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> ApiResult<T> {
    web::Query::<T>::from_query(&query_string(req))
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::query(format!("bad query string: {e}")))
}

/// The request's `Content-Length`, if it sent one.
#[must_use]
pub fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// A JSON body of at most `limit` bytes, parsed as `T`.
pub async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    body: web::Payload,
    limit: u64,
    what: &str,
) -> ApiResult<T> {
    let bytes = raw_body(req, body, limit, what).await?;
    // No body at all reads as `{}` (a POST with only defaults).
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(text).map_err(|e| ApiError::body(format!("invalid {what} JSON: {e}")))
}

/// A body of at most `limit` bytes, as sent.
pub async fn raw_body(
    req: &HttpRequest,
    body: web::Payload,
    limit: u64,
    what: &str,
) -> ApiResult<bytes::Bytes> {
    Ok(neurocube_service::body::read(
        content_length(req),
        body,
        &neurocube_service::body::BodyLimit {
            bytes: limit,
            source: format!("the largest {what} body"),
            advice: "send a smaller body",
            idle: req
                .app_data::<web::Data<AppState>>()
                .map_or(std::time::Duration::from_secs(10), |s| {
                    s.services.body_idle_timeout()
                }),
        },
    )
    .await?)
}
