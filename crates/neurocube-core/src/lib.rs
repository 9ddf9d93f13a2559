//! Pure domain code of neurocube, with no IO: boxes and the chunk grid,
//! Morton keys, voxel types, codecs (Blosc, npy, PNG/JPEG), the cutout copy
//! loop and dataset/channel metadata.
//!
//! ```
//! use neurocube_core::{geometry::{Box3, ChunkGrid}, cutout::copy_region};
//! let grid = ChunkGrid::new([128, 128, 16]).unwrap();
//! let cutout = Box3::new([100, 0, 0], [300, 10, 1]).unwrap();
//! assert_eq!(grid.chunks_in(&cutout).len(), 3);
//! let chunk = grid.chunk_box([1, 0, 0]);
//! let data = vec![7u8; grid.chunk_voxels()];
//! let mut out = vec![0u8; cutout.voxels() as usize];
//! copy_region(&data, &chunk, &mut out, &cutout, &chunk.overlap(&cutout).unwrap(), 1);
//! assert_eq!(out.iter().filter(|&&v| v == 7).count(), 128 * 10);
//! ```

pub mod annotation;
pub mod blosc;
pub mod chunkstream;
pub mod compressed_segmentation;
pub mod cutout;
pub mod downsample;
pub mod dtype;
pub mod error;
pub mod geometry;
pub mod graph;
pub mod labels;
pub mod meta;
pub mod morton;
pub mod names;
pub mod npy;
pub mod render;

pub use dtype::DType;
pub use geometry::{Box3, ChunkGrid, ChunkIndex};
pub use names::{ChannelName, DatasetName, TableName};
