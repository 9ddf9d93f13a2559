//! Voxel data types. All multi-byte values are little-endian, in storage,
//! on the wire (raw, npy, Blosc) and in memory on the supported platforms.

use serde::{Deserialize, Serialize};

/// The data type of a channel's voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 8-bit unsigned (EM images).
    Uint8,
    /// 16-bit unsigned.
    Uint16,
    /// 32-bit unsigned (segmentation).
    Uint32,
    /// 64-bit unsigned (segmentation).
    Uint64,
    /// 32-bit float (probability maps).
    Float32,
}

impl DType {
    /// All types, in order of size.
    pub const ALL: [DType; 5] = [
        DType::Uint8,
        DType::Uint16,
        DType::Uint32,
        DType::Uint64,
        DType::Float32,
    ];

    /// Bytes per voxel.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            DType::Uint8 => 1,
            DType::Uint16 => 2,
            DType::Uint32 | DType::Float32 => 4,
            DType::Uint64 => 8,
        }
    }

    /// The name used in metadata, headers and messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DType::Uint8 => "uint8",
            DType::Uint16 => "uint16",
            DType::Uint32 => "uint32",
            DType::Uint64 => "uint64",
            DType::Float32 => "float32",
        }
    }

    /// The numpy `descr` string written into npy headers.
    #[must_use]
    pub fn npy_descr(self) -> &'static str {
        match self {
            DType::Uint8 => "|u1",
            DType::Uint16 => "<u2",
            DType::Uint32 => "<u4",
            DType::Uint64 => "<u8",
            DType::Float32 => "<f4",
        }
    }

    /// The type a numpy `descr` names, if supported (`<u1`, `|u1`, `u1`, `<u2`, ...).
    #[must_use]
    pub fn from_npy_descr(descr: &str) -> Option<DType> {
        let (order, code) = match descr.chars().next() {
            Some(c @ ('<' | '|' | '=' | '>')) => (c, &descr[1..]),
            _ => ('=', descr),
        };
        let t = match code {
            "u1" => DType::Uint8,
            "u2" => DType::Uint16,
            "u4" => DType::Uint32,
            "u8" => DType::Uint64,
            "f4" => DType::Float32,
            _ => return None,
        };
        // Big-endian multi-byte data would need swapping; refuse it plainly.
        if order == '>' && t.size() > 1 {
            return None;
        }
        Some(t)
    }

    /// Parse a type name (`uint8`, ...).
    #[must_use]
    pub fn parse(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descr_round_trip() {
        for t in DType::ALL {
            assert_eq!(DType::from_npy_descr(t.npy_descr()), Some(t));
            assert_eq!(DType::parse(t.name()), Some(t));
        }
        assert_eq!(DType::from_npy_descr("<u1"), Some(DType::Uint8));
        assert_eq!(DType::from_npy_descr(">u2"), None);
        assert_eq!(DType::from_npy_descr("<i2"), None);
    }
}
