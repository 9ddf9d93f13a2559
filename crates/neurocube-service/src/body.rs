//! Request bodies read with a limit checked before anything is buffered: a
//! declared length over the limit is refused at once, and a body that
//! grows past it is cut off, never buffered whole. A body that stops
//! arriving part way is given up after an idle time (408), so a slow
//! client cannot hold a worker and its reserved memory.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::error::{Result, ServiceError};

/// The most a body may hold, and why.
#[derive(Clone, Debug)]
pub struct BodyLimit {
    /// Bytes.
    pub bytes: u64,
    /// Where the limit comes from, for the error message.
    pub source: String,
    /// What to do instead, for the error message.
    pub advice: &'static str,
    /// Longest pause between two parts of the body.
    pub idle: Duration,
}

fn too_large(bytes: u64, limit: &BodyLimit) -> ServiceError {
    ServiceError::TooLarge {
        what: "request body",
        bytes: Some(bytes),
        limit: limit.bytes,
        limit_source: limit.source.clone(),
        advice: limit.advice,
    }
}

/// Refuse a declared length (Content-Length) over the limit.
pub fn check_declared(declared: Option<u64>, limit: &BodyLimit) -> Result<()> {
    match declared {
        Some(n) if n > limit.bytes => Err(too_large(n, limit)),
        _ => Ok(()),
    }
}

/// Read a whole body of at most `limit` bytes; `declared` is its
/// Content-Length, if sent.
pub async fn read<S, E>(declared: Option<u64>, body: S, limit: &BodyLimit) -> Result<Bytes>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    check_declared(declared, limit)?;
    let capacity = usize::try_from(declared.unwrap_or(0).min(limit.bytes)).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(capacity);
    let mut body = body;
    loop {
        let Ok(next) = tokio::time::timeout(limit.idle, body.next()).await else {
            return Err(ServiceError::BodyStalled {
                idle: limit.idle,
                received: buf.len() as u64,
            });
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ServiceError::InvalidBody {
            format: "http",
            reason: format!("reading the request body failed: {e}"),
        })?;
        let len = (buf.len() + chunk.len()) as u64;
        if len > limit.bytes {
            return Err(too_large(len, limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u64) -> BodyLimit {
        BodyLimit {
            bytes: n,
            source: "test".into(),
            advice: "send less",
            idle: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_before_or_while_reading() {
        let chunks = || {
            futures::stream::iter(vec![
                Ok::<_, String>(Bytes::from_static(b"abc")),
                Ok(Bytes::from_static(b"defg")),
            ])
        };
        assert_eq!(
            read(Some(7), chunks(), &limit(7)).await.unwrap(),
            Bytes::from_static(b"abcdefg")
        );
        let e = read(Some(1 << 30), chunks(), &limit(7)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the request body is 1073741824 bytes, over the limit of 7 bytes (test); send less"
        );
        // No Content-Length: cut off as soon as it grows past the limit.
        let e = read(None, chunks(), &limit(5)).await.unwrap_err();
        assert!(
            e.to_string().starts_with("the request body is 7 bytes"),
            "{e}"
        );
        // A body that stops part way is given up after the idle time.
        let stalled = futures::stream::iter(vec![Ok::<_, String>(Bytes::from_static(b"abc"))])
            .chain(futures::stream::pending());
        let mut l = limit(100);
        l.idle = Duration::from_millis(50);
        let e = read(Some(10), Box::pin(stalled), &l).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the request body stalled: no bytes arrived for 0.05 s after 3 bytes (server setting limits.body_idle_timeout_secs); send the body without pauses"
        );
        let broken = futures::stream::iter(vec![Err::<Bytes, _>("connection reset")]);
        let e = read(None, broken, &limit(5)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "reading the request body failed: connection reset"
        );
    }
}
