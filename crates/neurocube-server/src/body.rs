//! Request bodies read with a size limit checked before anything is
//! buffered: a too-large upload is refused from its Content-Length.

use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::{ApiError, ApiResult};

/// Read the whole body, refusing more than `limit` bytes with a 413.
pub async fn read(req: &HttpRequest, mut payload: web::Payload, limit: u64) -> ApiResult<Bytes> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit
    {
        return Err(ApiError::BodyTooLarge { bytes: n, limit });
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Payload(e.to_string()))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::BodyTooLarge {
                bytes: (buf.len() + chunk.len()) as u64,
                limit,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
