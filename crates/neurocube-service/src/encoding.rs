//! Wire encodings of cutouts: npy, raw and Blosc, both directions. Request
//! bodies are checked against the box before anything is stored.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use neurocube_core::blosc::{self, Blosc};
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

/// Encode a cutout stream. npy and raw stream slab by slab; Blosc needs the
/// whole array for its single frame.
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
            let elem = s.dtype.size();
            let mut raw = Vec::with_capacity(s.len as usize);
            let mut body = s.body;
            while let Some(slab) = body.next().await {
                raw.extend_from_slice(&slab?);
            }
            let z = tokio::task::spawn_blocking(move || {
                Blosc::lz4(elem).and_then(|c| c.compress(&raw))
            })
            .await?
            .map_err(|e| ServiceError::Internal {
                during: "compressing a Blosc response",
                reason: e.to_string(),
            })?;
            let z = Bytes::from(z);
            Ok(Encoded {
                len: z.len() as u64,
                body: stream::once(async { Ok(z) }).boxed(),
            })
        }
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
