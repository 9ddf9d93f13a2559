//! Encoders of connectivity graphs: a scipy.sparse CSR matrix in `.npz`
//! form ([`npz`]) and a PNG heatmap ordered by cell type ([`heatmap`]).

pub mod heatmap;
pub mod npz;

use thiserror::Error;

/// Why a connectivity graph could not be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GraphEncodeError {
    /// More nodes than the PNG heatmap draws.
    #[error(
        "the connectivity PNG draws at most {max} nodes, not {nodes}; select fewer nodes (ids, pre_ids, select_table) or ask for format=npz"
    )]
    TooManyNodes {
        /// Nodes asked for.
        nodes: usize,
        /// The limit.
        max: usize,
    },
    /// The heatmap's `max_side` is 0 or too large.
    #[error("the connectivity PNG's max_side is {max_side} pixels; give 1..={max} pixels")]
    BadSide {
        /// Given side.
        max_side: u32,
        /// The limit.
        max: u32,
    },
    /// A cell names a node index that is not below the number of nodes.
    #[error(
        "connectivity cell (row {row}, column {col}) is outside the {nodes}×{nodes} matrix; row and column must be node indices below {nodes}"
    )]
    CellOutOfRange {
        /// Row (presynaptic node index).
        row: u32,
        /// Column (postsynaptic node index).
        col: u32,
        /// Number of nodes.
        nodes: usize,
    },
    /// CSR cells are not sorted by (row, column) or repeat one.
    #[error(
        "connectivity cells must be sorted by (row, column) without repeats, but (row {row}, column {col}) follows (row {prev_row}, column {prev_col}); sort and merge them first"
    )]
    CellsNotSorted {
        /// Row of the offending cell.
        row: u32,
        /// Column of the offending cell.
        col: u32,
        /// Row of the cell before it.
        prev_row: u32,
        /// Column of the cell before it.
        prev_col: u32,
    },
    /// The `.npz` would need zip64, which this encoder does not write.
    #[error(
        "the connectivity .npz would be {bytes} bytes, more than the 4 GiB a zip without zip64 holds; select fewer nodes or synapses"
    )]
    TooLarge {
        /// Size the archive would have.
        bytes: u64,
    },
    /// The PNG encoder failed.
    #[error("encoding the {width}×{height} connectivity PNG failed: {reason}")]
    Png {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// The encoder's message.
        reason: String,
    },
}
