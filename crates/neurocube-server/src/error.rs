//! The one error table: every failure becomes a status and a JSON body
//! `{"code": ..., "message": ...}`; `Display` text is for people.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use neurocube_service::ServiceError;
use neurocube_store::StoreError;
use serde::Serialize;

/// An error on its way to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the service layer.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The URL or query could not be parsed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such route (404).
    #[error("{0}")]
    NoRoute(String),
    /// The request body is over the limit (413).
    #[error(
        "the request body is {bytes} bytes, over the limit of {limit} bytes (server setting limits.max_cutout_bytes); send smaller boxes"
    )]
    BodyTooLarge {
        /// Body size.
        bytes: u64,
        /// Limit.
        limit: u64,
    },
    /// The body could not be received.
    #[error("reading the request body failed: {0}")]
    Payload(String),
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    fn code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) | ApiError::Payload(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Service(e) => match e {
                ServiceError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                ServiceError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
                ServiceError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                ServiceError::Store(StoreError::Unavailable { .. }) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
                }
                ServiceError::Store(StoreError::BadPageToken { .. }) => {
                    (StatusCode::BAD_REQUEST, "invalid_request")
                }
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.code();
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(self), "request failed");
        }
        let mut r = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.insert_header(("Retry-After", "5"));
        }
        r.json(Body {
            code,
            message: self.to_string(),
        })
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
