//! Boxes in the voxel grid and the chunk grid laid over it.
//!
//! Coordinates are `[x, y, z]`; boxes are half-open `[start, end)`; arrays
//! that hold a box are in C order `(z, y, x)`, x varying fastest.

use crate::error::GeometryError;

/// A half-open box `[start, end)` in voxel coordinates, `[x, y, z]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Box3 {
    /// Inclusive lower corner.
    pub start: [u64; 3],
    /// Exclusive upper corner.
    pub end: [u64; 3],
}

impl Box3 {
    /// A box from its corners; refuses empty or inverted ranges.
    pub fn new(start: [u64; 3], end: [u64; 3]) -> Result<Self, GeometryError> {
        for axis in 0..3 {
            if end[axis] <= start[axis] {
                return Err(GeometryError::EmptyRange {
                    axis: AXES[axis],
                    start: start[axis],
                    end: end[axis],
                });
            }
        }
        Ok(Self { start, end })
    }

    /// A box from a corner and a shape (all positive).
    pub fn with_shape(start: [u64; 3], shape: [u64; 3]) -> Result<Self, GeometryError> {
        Self::new(
            start,
            [
                start[0] + shape[0],
                start[1] + shape[1],
                start[2] + shape[2],
            ],
        )
    }

    /// Edge lengths `[x, y, z]`.
    #[must_use]
    pub fn shape(&self) -> [u64; 3] {
        [
            self.end[0] - self.start[0],
            self.end[1] - self.start[1],
            self.end[2] - self.start[2],
        ]
    }

    /// Number of voxels (of a box already checked to be small: see
    /// [`Box3::checked_voxels`] for boxes from requests).
    #[must_use]
    pub fn voxels(&self) -> u64 {
        let s = self.shape();
        s[0] * s[1] * s[2]
    }

    /// Number of voxels, `None` past `u64::MAX` (boxes up to 2^40 per axis).
    #[must_use]
    pub fn checked_voxels(&self) -> Option<u64> {
        let s = self.shape();
        s[0].checked_mul(s[1])?.checked_mul(s[2])
    }

    /// Bytes the box holds at `elem` bytes per voxel, `None` past `u64::MAX`.
    #[must_use]
    pub fn checked_bytes(&self, elem: usize) -> Option<u64> {
        self.checked_voxels()?.checked_mul(elem as u64)
    }

    /// The common part of two boxes, if any.
    #[must_use]
    pub fn overlap(&self, other: &Box3) -> Option<Box3> {
        let mut start = [0; 3];
        let mut end = [0; 3];
        for a in 0..3 {
            start[a] = self.start[a].max(other.start[a]);
            end[a] = self.end[a].min(other.end[a]);
            if end[a] <= start[a] {
                return None;
            }
        }
        Some(Box3 { start, end })
    }

    /// True if `other` lies wholly inside `self`.
    #[must_use]
    pub fn contains(&self, other: &Box3) -> bool {
        (0..3).all(|a| self.start[a] <= other.start[a] && other.end[a] <= self.end[a])
    }

    /// This box moved so that `origin` becomes zero (`origin` must not exceed `start`).
    #[must_use]
    pub fn relative_to(&self, origin: [u64; 3]) -> Box3 {
        Box3 {
            start: [
                self.start[0] - origin[0],
                self.start[1] - origin[1],
                self.start[2] - origin[2],
            ],
            end: [
                self.end[0] - origin[0],
                self.end[1] - origin[1],
                self.end[2] - origin[2],
            ],
        }
    }
}

impl std::fmt::Display for Box3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "x {}..{}, y {}..{}, z {}..{}",
            self.start[0], self.end[0], self.start[1], self.end[1], self.start[2], self.end[2]
        )
    }
}

/// Axis names, for messages.
pub const AXES: [&str; 3] = ["x", "y", "z"];

/// Index of a chunk in the chunk grid, `[x, y, z]`.
pub type ChunkIndex = [u64; 3];

/// The regular grid of chunks laid over a level, anchored at voxel 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkGrid {
    /// Chunk edge lengths `[x, y, z]`.
    pub chunk: [u64; 3],
}

impl ChunkGrid {
    /// A grid of chunks of the given shape (all edges positive).
    pub fn new(chunk: [u64; 3]) -> Result<Self, GeometryError> {
        if chunk.contains(&0) {
            return Err(GeometryError::ZeroChunk);
        }
        Ok(Self { chunk })
    }

    /// Voxels in one chunk.
    #[must_use]
    pub fn chunk_voxels(&self) -> usize {
        (self.chunk[0] * self.chunk[1] * self.chunk[2]) as usize
    }

    /// The box a chunk covers.
    #[must_use]
    pub fn chunk_box(&self, idx: ChunkIndex) -> Box3 {
        let start = [
            idx[0] * self.chunk[0],
            idx[1] * self.chunk[1],
            idx[2] * self.chunk[2],
        ];
        Box3 {
            start,
            end: [
                start[0] + self.chunk[0],
                start[1] + self.chunk[1],
                start[2] + self.chunk[2],
            ],
        }
    }

    /// First and one-past-last chunk index touched by a box, per axis.
    #[must_use]
    pub fn chunk_range(&self, b: &Box3) -> ([u64; 3], [u64; 3]) {
        let lo = [
            b.start[0] / self.chunk[0],
            b.start[1] / self.chunk[1],
            b.start[2] / self.chunk[2],
        ];
        let hi = [
            b.end[0].div_ceil(self.chunk[0]),
            b.end[1].div_ceil(self.chunk[1]),
            b.end[2].div_ceil(self.chunk[2]),
        ];
        (lo, hi)
    }

    /// All chunks a box touches, in z, y, x order.
    #[must_use]
    pub fn chunks_in(&self, b: &Box3) -> Vec<ChunkIndex> {
        let (lo, hi) = self.chunk_range(b);
        let mut out =
            Vec::with_capacity(((hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])) as usize);
        for z in lo[2]..hi[2] {
            for y in lo[1]..hi[1] {
                for x in lo[0]..hi[0] {
                    out.push([x, y, z]);
                }
            }
        }
        out
    }

    /// True if the box covers the chunk completely.
    #[must_use]
    pub fn covers(&self, b: &Box3, idx: ChunkIndex) -> bool {
        b.contains(&self.chunk_box(idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_boxes_do_not_wrap() {
        let b = Box3::new([0; 3], [1 << 27, 1 << 27, 1 << 9]).unwrap();
        assert_eq!(b.checked_voxels(), Some(1 << 63));
        assert_eq!(b.checked_bytes(2), None);
        // The request of issue 9: 2^27 x 2^27 x 2^10 wraps to 0 unchecked.
        let w = Box3::new([0; 3], [1 << 27, 1 << 27, 1 << 10]).unwrap();
        assert_eq!(w.checked_voxels(), None);
        let c = Box3::new([0; 3], [1 << 40, 1 << 40, 1]).unwrap();
        assert_eq!(c.checked_voxels(), None);
    }

    #[test]
    fn empty_and_inverted_ranges_are_refused() {
        assert!(Box3::new([0, 0, 0], [1, 1, 1]).is_ok());
        let e = Box3::new([5, 0, 0], [5, 1, 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "empty or inverted x range 5,5: the end must be greater than the start"
        );
        assert!(Box3::new([0, 9, 0], [1, 3, 1]).is_err());
    }

    #[test]
    fn overlap_and_relative() {
        let a = Box3::new([0, 0, 0], [10, 10, 10]).unwrap();
        let b = Box3::new([5, 8, 9], [20, 12, 11]).unwrap();
        let o = a.overlap(&b).unwrap();
        assert_eq!(o, Box3::new([5, 8, 9], [10, 10, 10]).unwrap());
        assert_eq!(o.relative_to([5, 8, 9]).shape(), [5, 2, 1]);
        assert!(
            a.overlap(&Box3::new([10, 0, 0], [11, 1, 1]).unwrap())
                .is_none()
        );
        assert!(a.contains(&o));
        assert!(!o.contains(&a));
    }

    #[test]
    fn chunks_of_a_box() {
        let g = ChunkGrid::new([128, 128, 16]).unwrap();
        let b = Box3::new([100, 0, 15], [300, 128, 17]).unwrap();
        let c = g.chunks_in(&b);
        assert_eq!(c.len(), 3 * 2);
        assert_eq!(c[0], [0, 0, 0]);
        assert_eq!(c[5], [2, 0, 1]);
        assert!(g.covers(&Box3::new([0, 0, 0], [256, 128, 16]).unwrap(), [1, 0, 0]));
        assert!(!g.covers(&b, [1, 0, 0]));
        assert!(ChunkGrid::new([0, 1, 1]).is_err());
    }
}
