//! Neuroglancer precomputed volumes, served straight from the store: the
//! multiscale `info` of a channel (one scale per level, chunked like the
//! stored chunks) and its chunks by name, `x0-x1_y0-y1_z0-z1`, in the
//! scale's encoding: `raw` for images, `compressed_segmentation` for
//! uint32/uint64 segmentation, `jpeg` for uint8 images on request. CloudVolume,
//! TensorStore and Neuroglancer read them unchanged.
//!
//! A chunk never written reads as zeros (200), as a precomputed volume on
//! disk with every chunk present would: clients need no `fill_missing`.

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use neurocube_core::meta::{ChannelType, Level};
use neurocube_core::{Box3, ChannelName, DType, DatasetName, compressed_segmentation as cseg};
use serde_json::{Value, json};

use crate::Services;
use crate::context::RequestContext;
use crate::encoding::Encoding;
use crate::error::{Result, ServiceError};
use crate::usecases::VolumeBox;

/// Block size of `compressed_segmentation` (clipped to small chunks).
const CSEG_BLOCK: u64 = 8;
/// Chunks of more voxels than this are served raw even for segmentation:
/// the format's 24-bit table offsets could overflow on noisy labels.
const CSEG_MAX_VOXELS: u64 = 1 << 22;
/// Quality of `jpeg` chunks.
const JPEG_QUALITY: u8 = 90;

/// How a scale's chunks are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkEncoding {
    /// Little-endian voxels, x fastest.
    Raw,
    /// One grayscale JPEG, `x` wide and `y·z` tall.
    Jpeg,
    /// Neuroglancer's block lookup-table encoding, with its block size.
    CompressedSegmentation([u64; 3]),
}

impl ChunkEncoding {
    /// The name in `info`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ChunkEncoding::Raw => "raw",
            ChunkEncoding::Jpeg => "jpeg",
            ChunkEncoding::CompressedSegmentation(_) => "compressed_segmentation",
        }
    }
}

/// A chunk, encoded.
#[derive(Clone, Debug)]
pub struct PrecomputedChunk {
    /// The bytes.
    pub bytes: Bytes,
    /// How they are encoded.
    pub encoding: ChunkEncoding,
}

/// A scale's key: its voxel size in nm, `4_4_40` (whole numbers without a
/// fraction, as CloudVolume names them).
#[must_use]
pub fn scale_key(l: &Level) -> String {
    let n = |v: f64| {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        }
    };
    format!(
        "{}_{}_{}",
        n(l.voxel_size[0]),
        n(l.voxel_size[1]),
        n(l.voxel_size[2])
    )
}

fn data_type(d: DType) -> &'static str {
    match d {
        DType::Uint8 => "uint8",
        DType::Uint16 => "uint16",
        DType::Uint32 => "uint32",
        DType::Uint64 => "uint64",
        DType::Float32 => "float32",
    }
}

/// Parse `x0-x1_y0-y1_z0-z1`.
fn parse_chunk_name(name: &str) -> Result<([u64; 3], [u64; 3])> {
    let bad = || {
        ServiceError::field(
            "chunk",
            format!(
                "chunk name '{name}' must look like x0-x1_y0-y1_z0-z1 (whole numbers, begin < end)"
            ),
        )
    };
    let parts: Vec<&str> = name.split('_').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let (mut start, mut end) = ([0u64; 3], [0u64; 3]);
    for (i, p) in parts.iter().enumerate() {
        let (a, b) = p.split_once('-').ok_or_else(bad)?;
        start[i] = a.parse().map_err(|_| bad())?;
        end[i] = b.parse().map_err(|_| bad())?;
        if start[i] >= end[i] {
            return Err(bad());
        }
    }
    Ok((start, end))
}

impl Services {
    /// The voxels of a precomputed chunk. A box inside one stored chunk
    /// (every cell when the level's offset is on the chunk grid) comes
    /// through the decoded-chunk cache the tiles use, so repeated reads of
    /// a chunk cost a copy; other boxes are read as cutouts.
    async fn precomputed_raw(&self, ctx: &RequestContext, b: &VolumeBox) -> Result<Bytes> {
        let t = self
            .volumes
            .target(&b.dataset, &b.channel, b.level, b.bbox)
            .await?;
        let grid = t.rc.channel.meta.grid();
        if let [idx] = grid.chunks_in(&b.bbox)[..] {
            let e = self.tiles.decoded_chunk(&t, idx).await?;
            let len = usize::try_from(t.bytes()).unwrap_or(usize::MAX);
            return Ok(match e.data {
                None => Bytes::from(vec![0u8; len]),
                Some(d) if e.bbox == b.bbox => Bytes::copy_from_slice(&d),
                Some(d) => {
                    let mut out = vec![0u8; len];
                    if let Some(overlap) = e.bbox.overlap(&b.bbox) {
                        neurocube_core::cutout::copy_region(
                            &d,
                            &e.bbox,
                            &mut out,
                            &b.bbox,
                            &overlap,
                            t.dtype().size(),
                        );
                    }
                    Bytes::from(out)
                }
            });
        }
        let r = self.read_cutout(ctx, b, Encoding::Raw).await?;
        let mut buf = BytesMut::with_capacity(usize::try_from(r.body.len).unwrap_or(0));
        let mut body = r.body.body;
        while let Some(part) = body.try_next().await? {
            buf.extend_from_slice(&part);
        }
        Ok(buf.freeze())
    }

    /// The encoding of a channel's chunks (`jpeg`: asked for JPEG).
    fn chunk_encoding(
        kind: ChannelType,
        dtype: DType,
        chunk: [u64; 3],
        jpeg: bool,
        ch: &ChannelName,
    ) -> Result<ChunkEncoding> {
        if jpeg {
            if kind == ChannelType::Image && dtype == DType::Uint8 {
                return Ok(ChunkEncoding::Jpeg);
            }
            return Err(ServiceError::field(
                "encoding",
                format!(
                    "jpeg is for uint8 image channels; '{ch}' is a {} {kind:?} channel: read /precomputed/DS/{ch}/info instead",
                    data_type(dtype)
                ),
            ));
        }
        let voxels = chunk.iter().product::<u64>();
        if kind == ChannelType::Segmentation
            && matches!(dtype, DType::Uint32 | DType::Uint64)
            && voxels <= CSEG_MAX_VOXELS
        {
            return Ok(ChunkEncoding::CompressedSegmentation(
                chunk.map(|c| c.min(CSEG_BLOCK)),
            ));
        }
        Ok(ChunkEncoding::Raw)
    }

    /// The precomputed `info` of a channel: one scale per level.
    pub async fn precomputed_info(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        ch: &ChannelName,
        jpeg: bool,
    ) -> Result<Value> {
        let rc = self.catalog.channel(ds, ch).await?;
        let c = &rc.channel.meta;
        let enc = Self::chunk_encoding(c.kind, c.dtype, c.chunk_size, jpeg, ch)?;
        let scales: Vec<Value> = rc
            .dataset
            .all_levels()
            .iter()
            .map(|l| {
                let mut s = json!({
                    "key": scale_key(l),
                    "size": l.extent,
                    "voxel_offset": l.offset,
                    "resolution": l.voxel_size,
                    "chunk_sizes": [c.chunk_size],
                    "encoding": enc.name(),
                });
                if let ChunkEncoding::CompressedSegmentation(b) = enc {
                    s["compressed_segmentation_block_size"] = json!(b);
                }
                s
            })
            .collect();
        let mut info = json!({
            "@type": "neuroglancer_multiscale_volume",
            "type": match c.kind {
                ChannelType::Image => "image",
                ChannelType::Segmentation => "segmentation",
            },
            "data_type": data_type(c.dtype),
            "num_channels": 1,
            "scales": scales,
        });
        if self.has_segment_properties(ds, ch, c.kind, c.dtype).await? {
            info["segment_properties"] = json!("segment_properties");
        }
        Ok(info)
    }

    /// One chunk of a scale, by its name, in the scale's encoding. The box
    /// must be a cell of the scale's chunk grid (edge cells end at the
    /// level's bound), as the `info` describes.
    pub async fn precomputed_chunk(
        &self,
        ctx: &RequestContext,
        ds: &DatasetName,
        ch: &ChannelName,
        key: &str,
        name: &str,
        jpeg: bool,
    ) -> Result<PrecomputedChunk> {
        let rc = self.catalog.channel(ds, ch).await?;
        let c = rc.channel.meta.clone();
        let levels = rc.dataset.all_levels();
        let level = levels.iter().find(|l| scale_key(l) == key).ok_or_else(|| {
            ServiceError::UnknownScale {
                key: key.to_string(),
                keys: levels.iter().map(scale_key).collect::<Vec<_>>().join(", "),
            }
        })?;
        let enc = Self::chunk_encoding(c.kind, c.dtype, c.chunk_size, jpeg, ch)?;
        let (start, end) = parse_chunk_name(name)?;
        for i in 0..3 {
            let (off, ext, cs) = (level.offset[i], level.extent[i], c.chunk_size[i]);
            let bound = off.saturating_add(ext);
            let aligned =
                start[i] >= off && (start[i] - off).is_multiple_of(cs) && start[i] < bound;
            if !aligned || end[i] != start[i].saturating_add(cs).min(bound) {
                return Err(ServiceError::field(
                    "chunk",
                    format!(
                        "chunk '{name}' is not a cell of scale {key}'s grid: along {} cells start at {off} + k·{cs} and end at the next or at {bound}",
                        ["x", "y", "z"][i]
                    ),
                ));
            }
        }
        let bbox = Box3::new(start, end)?;
        let b = VolumeBox {
            dataset: ds.clone(),
            channel: ch.clone(),
            level: level.level,
            bbox,
        };
        let raw = self.precomputed_raw(ctx, &b).await?;
        let shape = bbox
            .shape()
            .map(|v| usize::try_from(v).unwrap_or(usize::MAX));
        let bytes = match enc {
            ChunkEncoding::Raw => raw,
            ChunkEncoding::Jpeg => {
                let (w, h) = (bbox.shape()[0], bbox.shape()[1] * bbox.shape()[2]);
                let (w, h) = (u32::try_from(w), u32::try_from(h));
                let (Ok(w), Ok(h)) = (w, h) else {
                    return Err(ServiceError::field("chunk", "chunk too large for JPEG"));
                };
                Bytes::from(
                    neurocube_core::render::jpeg_gray(&raw, w, h, JPEG_QUALITY)
                        .map_err(|e| ServiceError::field("encoding", e.to_string()))?,
                )
            }
            ChunkEncoding::CompressedSegmentation(block) => {
                let block = block.map(|v| usize::try_from(v).unwrap_or(8));
                let encoded = tokio::task::spawn_blocking(move || match c.dtype {
                    DType::Uint64 => {
                        let v: Vec<u64> = raw
                            .chunks_exact(8)
                            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                            .collect();
                        cseg::encode(&v, shape, block)
                    }
                    _ => {
                        let v: Vec<u32> = raw
                            .chunks_exact(4)
                            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
                            .collect();
                        cseg::encode(&v, shape, block)
                    }
                })
                .await?
                .map_err(|e| ServiceError::Internal {
                    during: "encoding a compressed_segmentation chunk",
                    reason: e.to_string(),
                })?;
                Bytes::from(encoded)
            }
        };
        Ok(PrecomputedChunk {
            bytes,
            encoding: enc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_parse_or_say_what_they_should_look_like() {
        assert_eq!(
            parse_chunk_name("0-64_128-192_10-26").unwrap(),
            ([0, 128, 10], [64, 192, 26])
        );
        for bad in [
            "0-64_0-64",
            "0-64_0-64_5-5",
            "a-b_0-1_0-1",
            "0_0-1_0-1",
            "0-64_0-64_0-1_0-1",
        ] {
            let e = parse_chunk_name(bad).unwrap_err().to_string();
            assert!(e.contains("x0-x1_y0-y1_z0-z1"), "{bad}: {e}");
        }
    }

    #[test]
    fn scale_keys_name_the_voxel_size() {
        let l = |v: [f64; 3]| Level {
            level: 0,
            voxel_size: v,
            extent: [1, 1, 1],
            offset: [0, 0, 0],
            factor: [1, 1, 1],
        };
        assert_eq!(scale_key(&l([4.0, 4.0, 40.0])), "4_4_40");
        assert_eq!(scale_key(&l([3.5, 3.5, 40.0])), "3.5_3.5_40");
    }
}
