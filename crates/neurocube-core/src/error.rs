//! Errors of the pure domain code, one enum per concern. Messages say what
//! was wrong and, where it helps, what to do.

use thiserror::Error;

/// Invalid boxes or grids.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GeometryError {
    /// `end <= start` on an axis.
    #[error("empty or inverted {axis} range {start},{end}: the end must be greater than the start")]
    EmptyRange {
        /// Axis name.
        axis: &'static str,
        /// Given start.
        start: u64,
        /// Given end.
        end: u64,
    },
    /// A chunk shape with a zero edge.
    #[error("chunk shape has a zero edge")]
    ZeroChunk,
}

/// Blosc failures; each echoes its inputs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BloscError {
    /// Level outside 0..=9.
    #[error("Blosc level {level} is outside 0..=9")]
    BadLevel {
        /// Given level.
        level: u8,
    },
    /// Element size outside 1..=255.
    #[error("Blosc typesize {typesize} is outside 1..=255")]
    BadTypesize {
        /// Given typesize.
        typesize: usize,
    },
    /// Frame parts that cannot be joined into one frame (a bug of the caller).
    #[error("Blosc frame part {part} cannot be joined: {reason}")]
    BadPart {
        /// Index of the part.
        part: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Input over the c-blosc v1 frame limit.
    #[error("{len} bytes exceed the Blosc frame limit of {max} bytes; request a smaller box")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// c-blosc refused to compress.
    #[error("Blosc compression failed (code {code}) on {len} bytes with typesize {typesize}")]
    CompressFailed {
        /// c-blosc return code.
        code: i32,
        /// Input length.
        len: usize,
        /// Element size.
        typesize: usize,
    },
    /// The frame's compressor is not built into this server.
    #[error(
        "the Blosc frame is compressed with {name}, which this server cannot decode; compress with blosclz, lz4, lz4hc, zlib or zstd"
    )]
    UnsupportedCompressor {
        /// The compressor's name.
        name: &'static str,
    },
    /// The bytes are not a Blosc frame.
    #[error("body of {len} bytes is not a valid Blosc (c-blosc v1) buffer")]
    NotBlosc {
        /// Input length.
        len: usize,
    },
    /// The frame declares a different size than expected.
    #[error("Blosc buffer holds {declared} bytes but {expected} were expected")]
    WrongSize {
        /// Size in the frame header.
        declared: usize,
        /// Size the caller needs.
        expected: usize,
    },
    /// The frame's payload is damaged.
    #[error("Blosc buffer of {len} bytes is corrupt (decompression returned {code})")]
    Corrupt {
        /// c-blosc return code.
        code: i32,
        /// Input length.
        len: usize,
    },
}

/// npy parsing failures.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NpyError {
    /// No `\x93NUMPY` magic.
    #[error("body is not an npy file (no \\x93NUMPY magic)")]
    NotNpy,
    /// Unknown format version.
    #[error("npy format version {major} is not supported (1, 2 and 3 are)")]
    Version {
        /// Major version byte.
        major: u8,
    },
    /// Header runs past the end.
    #[error("npy header is truncated")]
    Truncated,
    /// Header dict unreadable.
    #[error("npy header is malformed: {0}")]
    BadHeader(String),
    /// Unsupported element type.
    #[error(
        "npy dtype '{0}' is not supported; use uint8, uint16, uint32, uint64 or float32, little-endian"
    )]
    DType(String),
    /// Fortran-ordered arrays.
    #[error("npy array is in Fortran order; send a C-ordered array (numpy.ascontiguousarray)")]
    FortranOrder,
}

/// Rendering failures.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RenderError {
    /// The encoder failed.
    #[error("{format} encoding of a {width}x{height} image failed: {reason}")]
    Encode {
        /// PNG or JPEG.
        format: &'static str,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Encoder message.
        reason: String,
    },
    /// A bad intensity window.
    #[error("window {lo},{hi} is empty: the upper bound must be greater than the lower")]
    BadWindow {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Image too large for the encoder.
    #[error("{width}x{height} is too large for {format} (at most 65535 per side for JPEG)")]
    TooLarge {
        /// PNG or JPEG.
        format: &'static str,
        /// Width.
        width: u64,
        /// Height.
        height: u64,
    },
}
