//! The one error table: every failure becomes a status and a JSON body
//! `{"code", "error", "message", ...fields}`: `code` is the class of the
//! status (`invalid_request`, `not_found`, ...), `error` the exact kind
//! (`unknown_dataset`, `box_outside_level`, ...), `message` a sentence for
//! people, and the kind's structured fields beside them. 503s carry
//! `Retry-After`.
//!
//! The table ([`status_of`]) matches every [`ServiceError`] variant with no
//! wildcard arm. `ServiceError` lives in another crate and is not
//! `#[non_exhaustive]`, so rustc accepts this match only while it names
//! every variant: a new variant is a compile error (E0004) here until it
//! is given a status, and `clippy::wildcard_enum_match_arm` (denied below)
//! keeps anyone from adding a catch-all arm instead.

#![deny(clippy::wildcard_enum_match_arm)]

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use neurocube_core::names::NameError;
use neurocube_service::ServiceError;
use neurocube_store::StoreError;
use serde_json::{Map, Value, json};

/// An error on its way to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the service layer (boxed: it is large, and errors are rare).
    #[error(transparent)]
    Service(Box<ServiceError>),
    /// The URL or query could not be parsed (400).
    #[error("{message}")]
    Malformed {
        /// Which part: `path`, `query`, `header`, `body`.
        part: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// No such route (404).
    #[error(
        "no route for {method} {path}; GET /v1 lists the API, data URLs look like /{{dataset}}/{{channel}}/npy/{{level}}/x0,x1/y0,y1/z0,z1/"
    )]
    NoRoute {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
}

impl ApiError {
    /// A malformed part of the URL.
    pub fn path(message: impl Into<String>) -> Self {
        ApiError::Malformed {
            part: "path",
            message: message.into(),
        }
    }

    /// A malformed query string.
    pub fn query(message: impl Into<String>) -> Self {
        ApiError::Malformed {
            part: "query",
            message: message.into(),
        }
    }

    /// A malformed JSON body.
    pub fn body(message: impl Into<String>) -> Self {
        ApiError::Malformed {
            part: "body",
            message: message.into(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::Service(Box::new(e))
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ServiceError::InvalidField {
            field: e.what().to_string(),
            reason: e.to_string(),
        }
        .into()
    }
}

const BAD: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "invalid_request");
const NOT_FOUND: (StatusCode, &str) = (StatusCode::NOT_FOUND, "not_found");
const CONFLICT: (StatusCode, &str) = (StatusCode::CONFLICT, "conflict");
const UNAVAILABLE: (StatusCode, &str) = (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
const INTERNAL: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "internal");

/// The status and code of a service error: the table.
#[must_use]
pub fn status_of(e: &ServiceError) -> (StatusCode, &'static str) {
    match e {
        ServiceError::UnknownDataset { .. }
        | ServiceError::UnknownChannel { .. }
        | ServiceError::UnknownLevel { .. }
        | ServiceError::UnknownJob { .. }
        | ServiceError::UnknownUser { .. }
        | ServiceError::UnknownExperiment { .. }
        | ServiceError::UnknownScale { .. }
        | ServiceError::UnknownToken { .. }
        | ServiceError::UnknownTask { .. }
        | ServiceError::SliceOutsideLevel { .. }
        | ServiceError::TileOutsideLevel { .. }
        | ServiceError::UnknownTable { .. }
        | ServiceError::UnknownRow { .. }
        | ServiceError::UnknownVersion { .. }
        | ServiceError::TableNotInVersion { .. } => NOT_FOUND,
        ServiceError::InvalidRow { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rows"),
        ServiceError::VersionExpired { .. } => (StatusCode::GONE, "gone"),
        ServiceError::BoxOutsideLevel { .. }
        | ServiceError::InvalidBox { .. }
        | ServiceError::InvalidField { .. }
        | ServiceError::InvalidBody { .. } => BAD,
        ServiceError::DatasetExists { .. }
        | ServiceError::ChannelExists { .. }
        | ServiceError::DatasetNotEmpty { .. }
        | ServiceError::JobEnded { .. }
        | ServiceError::ChannelReplaced { .. }
        | ServiceError::TableExists { .. }
        | ServiceError::TableReferenced { .. }
        | ServiceError::TableReplaced { .. }
        | ServiceError::RowNotValid { .. }
        | ServiceError::LabelConflict { .. }
        | ServiceError::VersionNotReady { .. } => CONFLICT,
        ServiceError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ServiceError::BodyStalled { .. } => (StatusCode::REQUEST_TIMEOUT, "body_stalled"),
        ServiceError::Overloaded { .. }
        | ServiceError::Contended { .. }
        | ServiceError::DeadlineExceeded { .. }
        | ServiceError::ShuttingDown => UNAVAILABLE,
        ServiceError::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        ServiceError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        ServiceError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ServiceError::HeadersTooLarge { .. } => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
        ServiceError::Corrupt { .. } | ServiceError::Internal { .. } => INTERNAL,
        ServiceError::Store(s) => match s {
            StoreError::Unavailable { .. } => UNAVAILABLE,
            StoreError::BadPageToken { .. } => BAD,
            StoreError::Engine { .. } => INTERNAL,
        },
    }
}

impl ApiError {
    fn code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Service(e) => status_of(e),
            ApiError::Malformed { .. } => BAD,
            ApiError::NoRoute { .. } => NOT_FOUND,
        }
    }

    /// The exact kind and structured fields of the error.
    fn details(&self) -> (&'static str, Map<String, Value>) {
        match self {
            ApiError::Service(e) => (e.kind(), e.fields()),
            ApiError::Malformed { part, .. } => {
                let mut m = Map::new();
                m.insert("part".into(), json!(part));
                ("malformed", m)
            }
            ApiError::NoRoute { method, path } => {
                let mut m = Map::new();
                m.insert("method".into(), json!(method));
                m.insert("path".into(), json!(path));
                ("no_route", m)
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.code();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, source = ?std::error::Error::source(self), "request failed");
        }
        let mut r = HttpResponse::build(status);
        let retry = match self {
            ApiError::Service(e) => e.retry_after(),
            ApiError::Malformed { .. } | ApiError::NoRoute { .. } => None,
        };
        if let Some(after) = retry.filter(|_| {
            status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS
        }) {
            // Whole seconds, rounded up: a client waiting that long is let in.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            r.insert_header(("Retry-After", secs.max(1).to_string()));
        }
        let (kind, fields) = self.details();
        let mut body = Map::new();
        body.insert("code".into(), json!(code));
        body.insert("error".into(), json!(kind));
        body.insert("message".into(), json!(self.to_string()));
        for (k, v) in fields {
            body.entry(k).or_insert(v);
        }
        r.json(Value::Object(body))
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::body::MessageBody;

    use super::*;

    fn body_of(e: ApiError) -> (u16, Option<String>, Value) {
        let r = e.error_response();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("Retry-After")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = r.into_body().try_into_bytes().unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn bodies_carry_code_kind_message_and_fields() {
        let (status, retry, v) = body_of(
            ServiceError::UnknownChannel {
                dataset: "d".into(),
                name: "c".into(),
            }
            .into(),
        );
        assert_eq!((status, retry), (404, None));
        assert_eq!(
            v,
            json!({
                "code": "not_found", "error": "unknown_channel", "dataset": "d", "channel": "c",
                "message": "channel 'c' does not exist in dataset 'd'; GET /v1/datasets/d/channels lists them",
            })
        );
        let (status, retry, v) = body_of(
            ServiceError::Overloaded {
                resource: "decoded bytes in flight",
                limit: 10,
                setting: "limits.max_inflight_bytes",
                retry_after: Duration::from_secs(2),
            }
            .into(),
        );
        assert_eq!((status, retry.as_deref()), (503, Some("2")));
        assert_eq!(v["error"], "overloaded");
        assert_eq!(v["retry_after"], 2);
        assert_eq!(v["setting"], "limits.max_inflight_bytes");
    }
}
