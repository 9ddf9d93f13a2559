//! Dataset and channel metadata, as users send and read them in JSON, and the
//! geometry of each resolution level.

use serde::{Deserialize, Serialize};

use crate::blosc::Compressor;
use crate::dtype::DType;
use crate::geometry::{Box3, ChunkGrid};
use crate::morton;

/// Words that cannot name a dataset or channel: they are the first segment
/// of other URLs, now or planned.
pub const RESERVED: &[&str] = &[
    "v1",
    "ocp",
    "ca",
    "sd",
    "nd",
    "metrics",
    "health",
    "viewer",
    "catmaid",
    "api",
    "static",
    "tiles",
    "tile",
    "info",
    "jobs",
    "graph",
    "neuroglancer",
    "boss",
    "docs",
    "admin",
    "favicon.ico",
];

/// How levels shrink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Halve x and y while z is coarser than x, then halve all three (EM sections).
    #[default]
    Anisotropic,
    /// Halve x, y and z at every level.
    Isotropic,
}

/// A dataset (OCP "token", CAVE "datastack"): the voxel space channels share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Validated name (set from the URL).
    #[serde(default)]
    pub name: String,
    /// Voxel size at level 0 in nm, `[x, y, z]`.
    pub voxel_size: [f64; 3],
    /// Size of level 0 in voxels, `[x, y, z]`.
    pub extent: [u64; 3],
    /// First voxel of level 0, `[x, y, z]`.
    #[serde(default)]
    pub offset: [u64; 3],
    /// Number of resolution levels (level 0 is full resolution).
    #[serde(default = "one")]
    pub levels: u8,
    /// How levels shrink.
    #[serde(default)]
    pub scaling: Scaling,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn one() -> u8 {
    1
}

/// Geometry of one level of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Level {
    /// Level number.
    pub level: u8,
    /// Voxel size in nm.
    pub voxel_size: [f64; 3],
    /// Size in voxels of this level.
    pub extent: [u64; 3],
    /// First voxel of this level.
    pub offset: [u64; 3],
    /// Level-0 voxels per voxel of this level, per axis.
    pub factor: [u64; 3],
}

impl Level {
    /// The box of valid voxels at this level.
    #[must_use]
    pub fn bounds(&self) -> Box3 {
        Box3 {
            start: self.offset,
            end: [
                self.offset[0] + self.extent[0],
                self.offset[1] + self.extent[1],
                self.offset[2] + self.extent[2],
            ],
        }
    }
}

/// Most levels a dataset may have.
pub const MAX_LEVELS: u8 = 20;

impl Dataset {
    /// Check the metadata; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name, "dataset")?;
        if self.voxel_size.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            return Err(format!(
                "voxel_size {:?} must be three positive numbers (nm)",
                self.voxel_size
            ));
        }
        if self.extent.contains(&0) {
            return Err(format!(
                "extent {:?} must be three positive voxel counts",
                self.extent
            ));
        }
        if self.levels == 0 || self.levels > MAX_LEVELS {
            return Err(format!(
                "levels {} must be between 1 and {MAX_LEVELS}",
                self.levels
            ));
        }
        let limit = 1u64 << 40;
        if (0..3).any(|a| self.offset[a].saturating_add(self.extent[a]) > limit) {
            return Err(format!(
                "offset + extent must stay below {limit} voxels per axis"
            ));
        }
        Ok(())
    }

    /// Downsampling factor from level `l - 1` to level `l` (`l >= 1`).
    #[must_use]
    pub fn step(&self, l: u8) -> [u64; 3] {
        let prev = self.level_factor(l - 1);
        match self.scaling {
            Scaling::Isotropic => [2, 2, 2],
            Scaling::Anisotropic => {
                let vx = self.voxel_size[0] * prev[0] as f64;
                let vz = self.voxel_size[2] * prev[2] as f64;
                if vz > vx { [2, 2, 1] } else { [2, 2, 2] }
            }
        }
    }

    fn level_factor(&self, l: u8) -> [u64; 3] {
        let mut f = [1u64; 3];
        for k in 1..=l {
            let s = self.step(k);
            f = [f[0] * s[0], f[1] * s[1], f[2] * s[2]];
        }
        f
    }

    /// Geometry of level `l` (which must be below `levels`).
    #[must_use]
    pub fn level(&self, l: u8) -> Level {
        let f = self.level_factor(l);
        let mut offset = [0; 3];
        let mut extent = [0; 3];
        for a in 0..3 {
            offset[a] = self.offset[a] / f[a];
            extent[a] = (self.offset[a] + self.extent[a]).div_ceil(f[a]) - offset[a];
        }
        Level {
            level: l,
            voxel_size: [
                self.voxel_size[0] * f[0] as f64,
                self.voxel_size[1] * f[1] as f64,
                self.voxel_size[2] * f[2] as f64,
            ],
            extent,
            offset,
            factor: f,
        }
    }

    /// All levels.
    #[must_use]
    pub fn all_levels(&self) -> Vec<Level> {
        (0..self.levels).map(|l| self.level(l)).collect()
    }
}

/// What a channel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    /// Intensities (EM, light).
    Image,
    /// Labels: 0 is background, other values are segment ids.
    Segmentation,
}

/// Chunk compression of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Blosc, LZ4, byte shuffle (fast; the default).
    #[default]
    BloscLz4,
    /// Blosc, Zstandard, byte shuffle (smaller, slower writes).
    BloscZstd,
}

impl Compression {
    /// The Blosc compressor.
    #[must_use]
    pub fn compressor(self) -> Compressor {
        match self {
            Compression::BloscLz4 => Compressor::Lz4,
            Compression::BloscZstd => Compressor::Zstd,
        }
    }
}

/// A channel of a dataset: one volume of one type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Validated name (set from the URL).
    #[serde(default)]
    pub name: String,
    /// What the channel holds.
    #[serde(rename = "type")]
    pub kind: ChannelType,
    /// Voxel type.
    pub dtype: DType,
    /// Chunk shape `[x, y, z]` at every level.
    #[serde(default = "default_chunk")]
    pub chunk_size: [u64; 3],
    /// Chunk compression.
    #[serde(default)]
    pub compression: Compression,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// OCP's chunk for anisotropic EM: 128 × 128 × 16.
#[must_use]
pub fn default_chunk() -> [u64; 3] {
    [128, 128, 16]
}

/// Largest decoded chunk.
pub const MAX_CHUNK_BYTES: u64 = 64 << 20;

impl Channel {
    /// Check the metadata against its dataset.
    pub fn validate(&self, ds: &Dataset) -> Result<(), String> {
        validate_name(&self.name, "channel")?;
        if self.kind == ChannelType::Segmentation && self.dtype == DType::Float32 {
            return Err(
                "a segmentation channel needs an integer dtype (uint8, uint16, uint32 or uint64)"
                    .into(),
            );
        }
        if self.chunk_size.contains(&0) {
            return Err(format!(
                "chunk_size {:?} must be three positive edge lengths",
                self.chunk_size
            ));
        }
        let bytes = self.chunk_size.iter().product::<u64>() * self.dtype.size() as u64;
        if bytes > MAX_CHUNK_BYTES {
            return Err(format!(
                "chunk_size {:?} of {} is {bytes} bytes; at most {MAX_CHUNK_BYTES} are allowed",
                self.chunk_size, self.dtype
            ));
        }
        let end = ds.level(0).bounds().end;
        if (0..3).any(|a| end[a].div_ceil(self.chunk_size[a]) > morton::MAX_INDEX) {
            return Err(format!(
                "the dataset spans more than {} chunks of {:?} on an axis; use larger chunks",
                morton::MAX_INDEX,
                self.chunk_size
            ));
        }
        Ok(())
    }

    /// The chunk grid (the same at every level).
    #[must_use]
    pub fn grid(&self) -> ChunkGrid {
        ChunkGrid {
            chunk: self.chunk_size,
        }
    }
}

/// Names: 1–64 of `A-Z a-z 0-9 _ -`, starting with a letter or digit, not reserved.
pub fn validate_name(name: &str, what: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 64 || !ok_chars || !first_ok {
        return Err(format!(
            "{what} name '{name}' is invalid: use 1 to 64 letters, digits, '_' or '-', starting with a letter or digit"
        ));
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{what} name '{name}' is reserved (it starts other URLs); choose another"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kasthuri() -> Dataset {
        Dataset {
            name: "kasthuri11".into(),
            voxel_size: [3.0, 3.0, 30.0],
            extent: [21504, 26624, 1850],
            offset: [0, 0, 1],
            levels: 6,
            scaling: Scaling::Anisotropic,
            description: String::new(),
        }
    }

    #[test]
    fn anisotropic_levels_halve_xy_until_z_is_not_coarser() {
        let d = kasthuri();
        let f: Vec<_> = d.all_levels().iter().map(|l| l.factor).collect();
        assert_eq!(
            f,
            vec![
                [1, 1, 1],
                [2, 2, 1],
                [4, 4, 1],
                [8, 8, 1],
                [16, 16, 1],
                [32, 32, 2]
            ]
        );
        let l1 = d.level(1);
        assert_eq!(l1.extent, [10752, 13312, 1850]);
        assert_eq!(l1.voxel_size, [6.0, 6.0, 30.0]);
        let l5 = d.level(5);
        assert_eq!(l5.offset, [0, 0, 0]);
        assert_eq!(l5.extent, [672, 832, 926]);
    }

    #[test]
    fn isotropic_levels_halve_everything() {
        let d = Dataset {
            scaling: Scaling::Isotropic,
            voxel_size: [4.0; 3],
            extent: [100, 100, 100],
            levels: 3,
            ..kasthuri()
        };
        assert_eq!(d.level(2).factor, [4, 4, 4]);
        assert_eq!(d.level(2).extent, [25, 25, 26]);
    }

    #[test]
    fn names() {
        assert!(validate_name("kasthuri11", "dataset").is_ok());
        assert!(validate_name("a-b_c", "dataset").is_ok());
        for bad in [
            "",
            "../etc",
            "a/b",
            "a b",
            "_x",
            "x.y",
            "v1",
            "Metrics",
            "viewer",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad, "dataset").is_err(), "{bad}");
        }
        assert_eq!(
            validate_name("ocp", "dataset").unwrap_err(),
            "dataset name 'ocp' is reserved (it starts other URLs); choose another"
        );
    }

    #[test]
    fn dataset_validation() {
        assert!(kasthuri().validate().is_ok());
        assert!(
            Dataset {
                voxel_size: [0.0, 1.0, 1.0],
                ..kasthuri()
            }
            .validate()
            .is_err()
        );
        assert!(
            Dataset {
                extent: [0, 1, 1],
                ..kasthuri()
            }
            .validate()
            .is_err()
        );
        assert!(
            Dataset {
                levels: 0,
                ..kasthuri()
            }
            .validate()
            .is_err()
        );
        let ch = Channel {
            name: "image".into(),
            kind: ChannelType::Segmentation,
            dtype: DType::Float32,
            chunk_size: default_chunk(),
            compression: Compression::BloscLz4,
            description: String::new(),
        };
        assert!(
            ch.validate(&kasthuri())
                .unwrap_err()
                .contains("integer dtype")
        );
        assert!(
            Channel {
                kind: ChannelType::Image,
                ..ch.clone()
            }
            .validate(&kasthuri())
            .is_ok()
        );
        assert!(
            Channel {
                kind: ChannelType::Image,
                chunk_size: [4096, 4096, 16],
                ..ch
            }
            .validate(&kasthuri())
            .is_err()
        );
    }

    #[test]
    fn json_defaults() {
        let d: Dataset =
            serde_json::from_str(r#"{"voxel_size":[4,4,40],"extent":[1024,1024,64]}"#).unwrap();
        assert_eq!(
            (d.levels, d.offset, d.scaling),
            (1, [0, 0, 0], Scaling::Anisotropic)
        );
        let c: Channel = serde_json::from_str(r#"{"type":"image","dtype":"uint8"}"#).unwrap();
        assert_eq!(
            (c.chunk_size, c.compression),
            ([128, 128, 16], Compression::BloscLz4)
        );
        assert!(serde_json::from_str::<Channel>(r#"{"type":"image","dtype":"int8"}"#).is_err());
        assert!(
            serde_json::from_str::<Channel>(r#"{"type":"image","dtype":"uint8","bogus":1}"#)
                .is_err()
        );
    }
}
