//! Dataset and channel metadata, as users send and read them in JSON, and the
//! geometry of each resolution level.

use serde::{Deserialize, Serialize};

use crate::blosc::Compressor;
use crate::dtype::DType;
use crate::geometry::{Box3, ChunkGrid};
use crate::morton;
pub use crate::names::{RESERVED, validate_name};

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
    /// CAVE's datastack setting: the annotation table of synapses that
    /// CAVE clients and the graph use by default. Unset, the dataset's
    /// table of the `synapse` schema is found by schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synapse_table: Option<String>,
    /// CAVE's datastack setting: the table of somas (a `nucleus` or `point`
    /// table). Unset, the first `nucleus` table by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soma_table: Option<String>,
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

/// Metadata that cannot be stored: which field, and why (a sentence with the fix).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MetaError {
    /// The JSON field at fault.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl MetaError {
    /// An error on `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Most levels a dataset may have.
pub const MAX_LEVELS: u8 = 20;

impl Dataset {
    /// Whether `other` describes the same voxel space: name and geometry
    /// (what never changes after creation; the description and the
    /// datastack tables may).
    #[must_use]
    pub fn same_geometry(&self, other: &Dataset) -> bool {
        self.name == other.name
            && self.voxel_size == other.voxel_size
            && self.extent == other.extent
            && self.offset == other.offset
            && self.levels == other.levels
            && self.scaling == other.scaling
    }

    /// Check the metadata; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), MetaError> {
        validate_name(&self.name, "dataset").map_err(|e| MetaError::new("name", e.to_string()))?;
        if self.voxel_size.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            return Err(MetaError::new(
                "voxel_size",
                format!(
                    "voxel_size {:?} must be three positive numbers (nm)",
                    self.voxel_size
                ),
            ));
        }
        if self.extent.contains(&0) {
            return Err(MetaError::new(
                "extent",
                format!(
                    "extent {:?} must be three positive voxel counts",
                    self.extent
                ),
            ));
        }
        if self.levels == 0 || self.levels > MAX_LEVELS {
            return Err(MetaError::new(
                "levels",
                format!("levels {} must be between 1 and {MAX_LEVELS}", self.levels),
            ));
        }
        let limit = 1u64 << 40;
        if (0..3).any(|a| self.offset[a].saturating_add(self.extent[a]) > limit) {
            return Err(MetaError::new(
                "extent",
                format!("offset + extent must stay below {limit} voxels per axis"),
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
    pub fn validate(&self, ds: &Dataset) -> Result<(), MetaError> {
        validate_name(&self.name, "channel").map_err(|e| MetaError::new("name", e.to_string()))?;
        if self.kind == ChannelType::Segmentation && self.dtype == DType::Float32 {
            return Err(MetaError::new(
                "dtype",
                "a segmentation channel needs an integer dtype (uint8, uint16, uint32 or uint64)",
            ));
        }
        if self.chunk_size.contains(&0) {
            return Err(MetaError::new(
                "chunk_size",
                format!(
                    "chunk_size {:?} must be three positive edge lengths",
                    self.chunk_size
                ),
            ));
        }
        // Checked: edges near 2^32 must not wrap past the limit.
        let bytes = self
            .chunk_size
            .iter()
            .try_fold(self.dtype.size() as u64, |acc, &e| acc.checked_mul(e));
        if bytes.is_none_or(|b| b > MAX_CHUNK_BYTES) {
            let size = bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string());
            return Err(MetaError::new(
                "chunk_size",
                format!(
                    "chunk_size {:?} of {} is {size} bytes; at most {MAX_CHUNK_BYTES} are allowed",
                    self.chunk_size, self.dtype
                ),
            ));
        }
        let end = ds.level(0).bounds().end;
        if (0..3).any(|a| end[a].div_ceil(self.chunk_size[a]) > morton::MAX_INDEX) {
            return Err(MetaError::new(
                "chunk_size",
                format!(
                    "the dataset spans more than {} chunks of {:?} on an axis; use larger chunks",
                    morton::MAX_INDEX,
                    self.chunk_size
                ),
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
            synapse_table: None,
            soma_table: None,
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
                .message
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
                ..ch.clone()
            }
            .validate(&kasthuri())
            .is_err()
        );
        // Edges whose product wraps around 2^64 are refused, not let through.
        for edges in [
            [1u64 << 32, 1 << 32, 1],
            [1 << 21, 1 << 21, 1 << 22],
            [1 << 63, 2, 1],
        ] {
            let e = Channel {
                kind: ChannelType::Image,
                dtype: DType::Uint8,
                chunk_size: edges,
                ..ch.clone()
            }
            .validate(&kasthuri())
            .unwrap_err();
            assert_eq!(e.field, "chunk_size");
            assert!(e.message.contains("at most 67108864 are allowed"), "{e}");
        }
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
