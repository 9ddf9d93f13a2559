//! The row stream of a query: offset, limit and encoding into the body.

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};

use super::{Cursor, Encoder, Record};
use crate::error::Result;

/// Rows per output batch.
pub(super) const BATCH: usize = 8192;

pub(super) fn skip_rows(
    s: BoxStream<'static, Result<Vec<(Record, Cursor)>>>,
    offset: u64,
) -> BoxStream<'static, Result<Vec<(Record, Cursor)>>> {
    if offset == 0 {
        return s;
    }
    s.scan(offset, |left, batch| {
        let out = batch.map(|mut b| {
            let drop = (*left).min(b.len() as u64) as usize;
            *left -= drop as u64;
            b.drain(..drop);
            b
        });
        futures::future::ready(Some(out))
    })
    .filter(|b| futures::future::ready(b.as_ref().map_or(true, |b| !b.is_empty())))
    .boxed()
}

pub(super) fn encode_stream(
    rows: BoxStream<'static, Result<Vec<(Record, Cursor)>>>,
    encoder: Encoder,
    limit: Option<u64>,
) -> BoxStream<'static, Result<Bytes>> {
    struct S {
        rows: BoxStream<'static, Result<Vec<(Record, Cursor)>>>,
        enc: Encoder,
        left: u64,
        started: bool,
        wrote_batch: bool,
        done: bool,
    }
    let s = S {
        rows,
        enc: encoder,
        left: limit.unwrap_or(u64::MAX),
        started: false,
        wrote_batch: false,
        done: false,
    };
    stream::try_unfold(s, |mut s| async move {
        if s.done {
            return Ok(None);
        }
        let mut out = BytesMut::new();
        if !s.started {
            s.started = true;
            out.extend_from_slice(&s.enc.header()?);
        }
        let next = if s.left == 0 {
            None
        } else {
            s.rows.next().await
        };
        match next {
            Some(batch) => {
                let mut batch = batch?;
                if batch.len() as u64 > s.left {
                    batch.truncate(s.left as usize);
                }
                s.left -= batch.len() as u64;
                let recs: Vec<Record> = batch.into_iter().map(|(r, _)| r).collect();
                for chunk in recs.chunks(BATCH) {
                    // The first part whole (no copy when it is the only one).
                    let part = s.enc.batch(chunk)?;
                    if out.is_empty() {
                        out = BytesMut::from(part);
                    } else {
                        out.extend_from_slice(&part);
                    }
                    s.wrote_batch = true;
                }
            }
            None => {
                // An empty result still carries its schema (and one empty batch).
                if !s.wrote_batch {
                    out.extend_from_slice(&s.enc.batch(&[])?);
                }
                out.extend_from_slice(&s.enc.finish()?);
                s.done = true;
            }
        }
        Ok(Some((out.freeze(), s)))
    })
    .boxed()
}
