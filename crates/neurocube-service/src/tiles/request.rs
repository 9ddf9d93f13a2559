//! What a tile request names: sizes, formats, the request itself, and where
//! a tile lies in the volume.

use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use neurocube_core::Box3;
use neurocube_core::geometry::AXES;
use neurocube_core::render::ImageFormat;

use crate::catalog::ResolvedChannel;
use crate::error::{Result, ServiceError};
use crate::slice::Plane;
use crate::volume::Target;

/// Tile edge lengths offered, in pixels.
pub const TILE_SIZES: [u32; 3] = [256, 512, 1024];
/// Edge of CATMAID tiles.
pub const CATMAID_TILE_SIZE: u32 = 512;
/// JPEG quality of tiles.
pub const JPEG_QUALITY: u8 = 85;

/// Settings of the tile cache (`[tiles]` in the configuration).
#[derive(Clone, Debug)]
pub struct TileConfig {
    /// Budget of encoded tiles, in bytes.
    pub tile_cache_bytes: u64,
    /// Budget of decoded chunks, in bytes.
    pub chunk_cache_bytes: u64,
    /// Render predicted tiles ahead of requests.
    pub prefetch: bool,
    /// Most predictions waiting at once.
    pub prefetch_queue: usize,
    /// Background prefetch threads.
    pub prefetch_workers: usize,
    /// How long a tile or decoded chunk may be served from memory (`None`:
    /// until a write of this server drops it). Set when several servers
    /// share one store: another server's writes are then seen within it.
    pub max_age: Option<std::time::Duration>,
}

impl Default for TileConfig {
    fn default() -> Self {
        Self {
            tile_cache_bytes: 256 << 20,
            chunk_cache_bytes: 512 << 20,
            prefetch: true,
            prefetch_queue: 64,
            prefetch_workers: 1,
            max_age: None,
        }
    }
}

/// Image format of a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileFormat {
    /// PNG (lossless; `png`'s Fast setting).
    Png,
    /// JPEG at quality [`JPEG_QUALITY`].
    Jpeg,
}

impl TileFormat {
    /// Parse a file extension.
    #[must_use]
    pub fn parse(ext: &str) -> Option<Self> {
        match ext {
            "png" => Some(TileFormat::Png),
            "jpg" | "jpeg" => Some(TileFormat::Jpeg),
            _ => None,
        }
    }

    pub(super) fn image(self) -> ImageFormat {
        match self {
            TileFormat::Png => ImageFormat::Png,
            TileFormat::Jpeg => ImageFormat::Jpeg(JPEG_QUALITY),
        }
    }
}

/// How the slice number of a request counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceSpace {
    /// In voxels of the requested level.
    Level,
    /// In voxels of level 0 (CATMAID's section numbers).
    Full,
}

/// A tile as asked for by URL.
#[derive(Clone, Debug)]
pub struct TileRequest {
    /// Dataset name.
    pub dataset: neurocube_core::DatasetName,
    /// Channel name.
    pub channel: neurocube_core::ChannelName,
    /// Plane.
    pub plane: Plane,
    /// Edge length in pixels (one of [`TILE_SIZES`]).
    pub size: u32,
    /// Resolution level.
    pub level: u8,
    /// Coordinate on the axis normal to the plane (absolute, like OCP slices).
    pub slice: u64,
    /// How `slice` counts.
    pub slice_space: SliceSpace,
    /// Tile row (rows go down the plane's second axis), from the level's first voxel.
    pub row: u64,
    /// Tile column (along the plane's first axis).
    pub col: u64,
    /// Image format.
    pub format: TileFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TileKey {
    pub(super) uid: u64,
    pub(super) level: u8,
    pub(super) plane: Plane,
    pub(super) size: u32,
    pub(super) slice: u64,
    pub(super) row: u64,
    pub(super) col: u64,
    pub(super) format: TileFormat,
}

/// One encoded tile.
#[derive(Debug)]
pub struct Tile {
    /// The image.
    pub bytes: Bytes,
    /// Strong validator, quoted (content hash).
    pub etag: String,
    /// MIME type.
    pub content_type: &'static str,
    /// Voxels the tile shows (one thick across its plane).
    pub bbox: Box3,
    pub(super) prefetched: AtomicBool,
}

/// The axes of a plane: columns, rows, normal.
pub(super) fn axes(plane: Plane) -> (usize, usize, usize) {
    match plane {
        Plane::Xy => (0, 1, 2),
        Plane::Xz => (0, 2, 1),
        Plane::Yz => (1, 2, 0),
    }
}

pub(super) fn plane_name(plane: Plane) -> &'static str {
    match plane {
        Plane::Xy => "xy",
        Plane::Xz => "xz",
        Plane::Yz => "yz",
    }
}

/// Where a tile lies; `None`-like errors say why it does not exist.
#[allow(clippy::too_many_arguments)]
pub(super) fn locate(
    rc: &ResolvedChannel,
    plane: Plane,
    size: u32,
    level: u8,
    slice: u64,
    row: u64,
    col: u64,
    format: TileFormat,
) -> Result<(TileKey, Target)> {
    let ds = &rc.dataset;
    if level >= ds.levels {
        return Err(ServiceError::UnknownLevel {
            dataset: ds.name.clone(),
            level,
            last: ds.levels - 1,
        });
    }
    let lv = ds.level(level);
    let b = lv.bounds();
    let (u, v, n) = axes(plane);
    if slice < b.start[n] || slice >= b.end[n] {
        return Err(ServiceError::SliceOutsideLevel {
            dataset: ds.name.clone(),
            level,
            axis: AXES[n],
            slice,
            start: b.start[n],
            end: b.end[n],
        });
    }
    let s = u64::from(size);
    let cols = (b.end[u] - b.start[u]).div_ceil(s);
    let rows = (b.end[v] - b.start[v]).div_ceil(s);
    if row >= rows || col >= cols {
        return Err(ServiceError::TileOutsideLevel {
            dataset: ds.name.clone(),
            level,
            plane: plane_name(plane),
            size,
            row,
            col,
            rows,
            cols,
        });
    }
    let mut start = [0u64; 3];
    let mut end = [0u64; 3];
    start[u] = b.start[u] + col * s;
    end[u] = (start[u] + s).min(b.end[u]);
    start[v] = b.start[v] + row * s;
    end[v] = (start[v] + s).min(b.end[v]);
    start[n] = slice;
    end[n] = slice + 1;
    let key = TileKey {
        uid: rc.channel.uid,
        level,
        plane,
        size,
        slice,
        row,
        col,
        format,
    };
    Ok((
        key,
        Target {
            rc: rc.clone(),
            level: lv,
            bbox: Box3 { start, end },
        },
    ))
}
