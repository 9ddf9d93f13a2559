//! Wire encodings of cutouts: npy, raw and Blosc, both directions. Request
//! bodies are checked against the box before anything is stored.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::{self, BoxStream, FuturesOrdered};
use neurocube_core::blosc::{self, Blosc, PART_BYTES};
use neurocube_core::npy;

use crate::error::{Result, ServiceError};
use crate::volume::{CutoutStream, Target};

/// A cutout wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// numpy `.npy` (header + C-ordered data).
    Npy,
    /// Bare little-endian C-ordered voxels.
    Raw,
    /// One c-blosc v1 frame of the raw bytes (lz4, byte shuffle).
    Blosc,
}

impl Encoding {
    /// The URL word.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Npy => "npy",
            Encoding::Raw => "raw",
            Encoding::Blosc => "blosc",
        }
    }

    /// Parse the URL word.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "npy" => Some(Encoding::Npy),
            "raw" => Some(Encoding::Raw),
            "blosc" => Some(Encoding::Blosc),
            _ => None,
        }
    }

    /// MIME type of a response.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Npy => "application/x-npy",
            Encoding::Raw => "application/octet-stream",
            Encoding::Blosc => "application/blosc",
        }
    }
}

/// An encoded cutout ready to send.
pub struct Encoded {
    /// Bytes the body yields.
    pub len: u64,
    /// The body.
    pub body: BoxStream<'static, Result<Bytes>>,
}

/// Encode a cutout stream. npy and raw stream slab by slab. Blosc is one
/// c-blosc v1 frame, whose block offsets come before its blocks, so it goes
/// out once its last block is compressed; but it is compressed in parts of
/// 4 MiB as the slabs arrive, on every core, and never holds the raw box.
pub async fn encode(enc: Encoding, s: CutoutStream) -> Result<Encoded> {
    match enc {
        Encoding::Raw => Ok(Encoded {
            len: s.len,
            body: s.body,
        }),
        Encoding::Npy => {
            let shape = s.bbox.shape();
            let head = Bytes::from(npy::header(s.dtype, &[shape[2], shape[1], shape[0]]));
            Ok(Encoded {
                len: s.len + head.len() as u64,
                body: stream::once(async { Ok(head) }).chain(s.body).boxed(),
            })
        }
        Encoding::Blosc => {
            let codec = Blosc::lz4(s.dtype.size()).map_err(compress_error)?;
            let parts = compress_in_parts(codec, s.body).await?;
            let frame = blosc::join_parts(parts).map_err(compress_error)?;
            let len = frame.len() as u64;
            let head = Bytes::from(frame.head);
            let blocks = frame
                .parts
                .into_iter()
                .map(|(part, start)| Bytes::from(part).slice(start..));
            Ok(Encoded {
                len,
                body: stream::iter(std::iter::once(head).chain(blocks).map(Ok)).boxed(),
            })
        }
    }
}

fn compress_error(e: neurocube_core::error::BloscError) -> ServiceError {
    ServiceError::Internal {
        during: "compressing a Blosc response",
        reason: e.to_string(),
    }
}

/// Parts being compressed at once: both cores busy, and a bounded amount
/// of the box in memory (raw parts in flight plus the compressed ones).
const PARTS_IN_FLIGHT: usize = 3;

/// Raw bytes a Blosc response holds besides its slabs: the parts in flight
/// and up to two parts pending.
pub const BLOSC_PARTS_HELD: u64 = ((PARTS_IN_FLIGHT + 2) * PART_BYTES) as u64;

/// The slabs of `body` as Blosc frame parts (`Blosc::compress_part`), in
/// order. A task of its own reads the next slab while the parts of the
/// last one compress.
async fn compress_in_parts(
    codec: Blosc,
    mut body: BoxStream<'static, Result<Bytes>>,
) -> Result<Vec<Vec<u8>>> {
    let (tx, mut slabs) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn(async move {
        while let Some(slab) = body.next().await {
            let failed = slab.is_err();
            if tx.send(slab).await.is_err() || failed {
                break;
            }
        }
    });
    let _stop_reading = AbortOnDrop(reader);
    let spawn = |part: Bytes| tokio::task::spawn_blocking(move || codec.compress_part(&part));
    let mut pending = BytesMut::new();
    let mut running = FuturesOrdered::new();
    let mut parts = Vec::new();
    while let Some(slab) = slabs.recv().await {
        pending.extend_from_slice(&slab?);
        // The last part takes at least PART_BYTES, so parts line up.
        while pending.len() >= 2 * PART_BYTES {
            running.push_back(spawn(pending.split_to(PART_BYTES).freeze()));
            while running.len() >= PARTS_IN_FLIGHT {
                if let Some(done) = running.next().await {
                    parts.push(done?.map_err(compress_error)?);
                }
            }
        }
    }
    running.push_back(spawn(pending.freeze()));
    while let Some(done) = running.next().await {
        parts.push(done?.map_err(compress_error)?);
    }
    Ok(parts)
}

/// Stops a task when its owner is dropped (a response abandoned half way).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn bad(format: &'static str, reason: String) -> ServiceError {
    ServiceError::InvalidBody { format, reason }
}

/// Check a request body against the target and return its raw voxel bytes.
pub async fn decode(enc: Encoding, body: Bytes, t: &Target) -> Result<Bytes> {
    let want = t.bytes();
    let dtype = t.dtype();
    let shape = t.bbox.shape();
    let zyx = [shape[2], shape[1], shape[0]];
    match enc {
        Encoding::Raw => {
            if body.len() as u64 != want {
                return Err(bad(
                    "raw",
                    format!(
                        "raw body is {} bytes but box {} of {dtype} (z,y,x shape {zyx:?}) needs exactly {want}",
                        body.len(),
                        t.bbox
                    ),
                ));
            }
            Ok(body)
        }
        Encoding::Npy => {
            let (h, offset) = npy::parse(&body).map_err(|e| bad("npy", e.to_string()))?;
            if h.dtype != dtype {
                return Err(bad(
                    "npy",
                    format!(
                        "npy array is {} but channel '{}' is {dtype}; convert with arr.astype(numpy.{dtype})",
                        h.dtype, t.rc.channel.meta.name
                    ),
                ));
            }
            if h.shape != zyx {
                return Err(bad(
                    "npy",
                    format!(
                        "npy array has shape {:?} but box {} needs (z, y, x) = {zyx:?}",
                        h.shape, t.bbox
                    ),
                ));
            }
            if (body.len() - offset) as u64 != want {
                return Err(bad(
                    "npy",
                    format!(
                        "npy data is {} bytes but shape {zyx:?} of {dtype} needs {want}; the file is truncated or padded",
                        body.len() - offset
                    ),
                ));
            }
            Ok(body.slice(offset..))
        }
        Encoding::Blosc => {
            let declared =
                blosc::decompressed_len(&body).map_err(|e| bad("blosc", e.to_string()))?;
            if declared as u64 != want {
                return Err(bad(
                    "blosc",
                    format!(
                        "Blosc body decompresses to {declared} bytes but box {} of {dtype} (z,y,x shape {zyx:?}) needs exactly {want}",
                        t.bbox
                    ),
                ));
            }
            let raw = tokio::task::spawn_blocking(move || {
                let mut out = vec![0u8; declared];
                blosc::decompress_into(&body, &mut out).map(|()| out)
            })
            .await?
            .map_err(|e| bad("blosc", e.to_string()))?;
            Ok(Bytes::from(raw))
        }
    }
}
