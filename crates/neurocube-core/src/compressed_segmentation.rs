//! Neuroglancer's `compressed_segmentation` encoding of uint32/uint64 label
//! chunks: the chunk is cut into blocks (e.g. 8×8×8); each block stores a
//! lookup table of its distinct labels and, per voxel, an index into it in
//! 0, 1, 2, 4, 8, 16 or 32 bits. Neuroglancer decodes it on the GPU, so a
//! segmentation layer costs a few bits per voxel instead of 64.
//!
//! Layout (little-endian `u32` words), for the one channel neurocube serves:
//! - word 0: offset of the channel's data (1);
//! - from word 1, the channel: one 2-word header per block, blocks in x,
//!   then y, then z order: `lookup_table_offset | encoded_bits << 24`, then
//!   `encoded_values_offset` (offsets in words from the channel's start);
//! - each block's packed indices (voxel `(x, y, z)` of a `(bx, by, bz)`
//!   block at bit `bits * (x + bx * (y + by * z))`), then its lookup table
//!   (sorted labels; a table equal to an earlier block's is shared).
//!
//! A block that sticks out of the chunk is encoded as if padded: the
//! padding voxels take index 0. Chunks are x-fastest, as neurocube stores
//! them.

use std::collections::HashMap;

/// A label type: `u32` or `u64`.
pub trait Label: Copy + Ord + std::hash::Hash + 'static {
    /// Words of one label in a lookup table.
    const WORDS: usize;
    /// Append the label's little-endian words.
    fn push_words(self, out: &mut Vec<u32>);
    /// The label from its words.
    fn from_words(w: &[u32]) -> Self;
}

impl Label for u32 {
    const WORDS: usize = 1;
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self);
    }
    fn from_words(w: &[u32]) -> Self {
        w[0]
    }
}

impl Label for u64 {
    const WORDS: usize = 2;
    #[allow(clippy::cast_possible_truncation)] // the two halves, on purpose
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self as u32);
        out.push((self >> 32) as u32);
    }
    fn from_words(w: &[u32]) -> Self {
        u64::from(w[0]) | (u64::from(w[1]) << 32)
    }
}

/// The chunk cannot be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsegError {
    /// Data and size disagree, or a size is zero.
    #[error("{0}")]
    Shape(String),
    /// A lookup table would start past the format's 24-bit offset.
    #[error("the chunk is too large for compressed_segmentation (a lookup table past 2^24 words)")]
    TooLarge,
    /// Encoded bytes that do not decode.
    #[error("corrupt compressed_segmentation data: {0}")]
    Corrupt(String),
}

fn bits_for(distinct: usize) -> u32 {
    match distinct {
        0 | 1 => 0,
        2 => 1,
        3..=4 => 2,
        5..=16 => 4,
        17..=256 => 8,
        257..=65536 => 16,
        _ => 32,
    }
}

fn check_shape(len: usize, size: [usize; 3], block: [usize; 3]) -> Result<(), CsegError> {
    if size.contains(&0) || block.contains(&0) {
        return Err(CsegError::Shape(format!(
            "size {size:?} and block size {block:?} must be positive"
        )));
    }
    let n = size.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(len) {
        return Err(CsegError::Shape(format!(
            "{len} labels do not fill a chunk of size {size:?}"
        )));
    }
    Ok(())
}

/// Encode an x-fastest chunk of `size` voxels in blocks of `block`.
pub fn encode<T: Label>(
    data: &[T],
    size: [usize; 3],
    block: [usize; 3],
) -> Result<Vec<u8>, CsegError> {
    check_shape(data.len(), size, block)?;
    let grid = [0, 1, 2].map(|i| size[i].div_ceil(block[i]));
    let blocks = grid[0] * grid[1] * grid[2];
    let block_voxels = block[0] * block[1] * block[2];
    // word 0: the channel offset; then the channel, starting with headers.
    let mut out: Vec<u32> = vec![1];
    out.resize(1 + 2 * blocks, 0);
    let mut tables: HashMap<Vec<T>, u32> = HashMap::new();
    let mut values: Vec<T> = Vec::with_capacity(block_voxels);
    let mut table: Vec<T> = Vec::new();
    let mut n = 0;
    for gz in 0..grid[2] {
        for gy in 0..grid[1] {
            for gx in 0..grid[0] {
                let start = [gx * block[0], gy * block[1], gz * block[2]];
                let end = [0, 1, 2].map(|i| (start[i] + block[i]).min(size[i]));
                // The block's labels, and its sorted distinct ones.
                values.clear();
                for z in start[2]..end[2] {
                    for y in start[1]..end[1] {
                        let row = (z * size[1] + y) * size[0];
                        values.extend_from_slice(&data[row + start[0]..row + end[0]]);
                    }
                }
                table.clear();
                table.extend_from_slice(&values);
                table.sort_unstable();
                table.dedup();
                let bits = bits_for(table.len());
                let channel_len = |out: &Vec<u32>| out.len() - 1;
                let values_offset = channel_len(&out);
                if bits > 0 {
                    let words = (bits as usize * block_voxels).div_ceil(32);
                    let base = out.len();
                    out.resize(base + words, 0);
                    let ex = end[0] - start[0];
                    let ey = end[1] - start[1];
                    let mut i = 0;
                    for z in 0..end[2] - start[2] {
                        for y in 0..ey {
                            for x in 0..ex {
                                let v = values[i];
                                i += 1;
                                let idx = table.binary_search(&v).unwrap_or(0) as u32;
                                let bit = bits as usize * (x + block[0] * (y + block[1] * z));
                                out[base + bit / 32] |= idx << (bit % 32);
                            }
                        }
                    }
                }
                let table_offset = match tables.get(&table) {
                    Some(&o) => o,
                    None => {
                        let o = u32::try_from(channel_len(&out))
                            .ok()
                            .filter(|&o| o < 1 << 24)
                            .ok_or(CsegError::TooLarge)?;
                        for &v in &table {
                            v.push_words(&mut out);
                        }
                        tables.insert(table.clone(), o);
                        o
                    }
                };
                let values_offset =
                    u32::try_from(values_offset).map_err(|_| CsegError::TooLarge)?;
                out[1 + 2 * n] = table_offset | (bits << 24);
                out[2 + 2 * n] = values_offset;
                n += 1;
            }
        }
    }
    Ok(out.iter().flat_map(|w| w.to_le_bytes()).collect())
}

/// Decode a one-channel chunk of `size` voxels in blocks of `block`, x-fastest.
pub fn decode<T: Label>(
    bytes: &[u8],
    size: [usize; 3],
    block: [usize; 3],
) -> Result<Vec<T>, CsegError> {
    let n: usize = size.iter().product();
    check_shape(n, size, block)?;
    if !bytes.len().is_multiple_of(4) {
        return Err(CsegError::Corrupt(format!(
            "{} bytes is not whole words",
            bytes.len()
        )));
    }
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let corrupt = |what: &str| CsegError::Corrupt(what.to_string());
    let channel = *words.first().ok_or_else(|| corrupt("empty"))? as usize;
    let ch = words
        .get(channel..)
        .ok_or_else(|| corrupt("channel offset past the end"))?;
    let grid = [0, 1, 2].map(|i| size[i].div_ceil(block[i]));
    let mut out = vec![T::from_words(&[0, 0]); n];
    let mut b = 0;
    for gz in 0..grid[2] {
        for gy in 0..grid[1] {
            for gx in 0..grid[0] {
                let h0 = *ch
                    .get(2 * b)
                    .ok_or_else(|| corrupt("block headers cut short"))?;
                let h1 = *ch
                    .get(2 * b + 1)
                    .ok_or_else(|| corrupt("block headers cut short"))?
                    as usize;
                b += 1;
                let table = (h0 & 0x00ff_ffff) as usize;
                let bits = (h0 >> 24) as usize;
                if ![0, 1, 2, 4, 8, 16, 32].contains(&bits) {
                    return Err(corrupt(&format!("{bits} encoded bits")));
                }
                let start = [gx * block[0], gy * block[1], gz * block[2]];
                for z in start[2]..(start[2] + block[2]).min(size[2]) {
                    for y in start[1]..(start[1] + block[1]).min(size[1]) {
                        for x in start[0]..(start[0] + block[0]).min(size[0]) {
                            let (lx, ly, lz) = (x - start[0], y - start[1], z - start[2]);
                            let idx = if bits == 0 {
                                0
                            } else {
                                let bit = bits * (lx + block[0] * (ly + block[1] * lz));
                                let w = *ch
                                    .get(h1 + bit / 32)
                                    .ok_or_else(|| corrupt("values past the end"))?;
                                let mask = if bits == 32 {
                                    u32::MAX
                                } else {
                                    (1u32 << bits) - 1
                                };
                                ((w >> (bit % 32)) & mask) as usize
                            };
                            let at = table + idx * T::WORDS;
                            let v = ch
                                .get(at..at + T::WORDS)
                                .ok_or_else(|| corrupt("lookup past the end"))?;
                            out[(z * size[1] + y) * size[0] + x] = T::from_words(v);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels like a segmentation: a few large objects with boundaries.
    fn labels(size: [usize; 3], distinct: u64) -> Vec<u64> {
        let mut v = Vec::new();
        for z in 0..size[2] {
            for y in 0..size[1] {
                for x in 0..size[0] {
                    let cell = (x / 5 + 3 * (y / 7) + 11 * (z / 3)) as u64;
                    v.push((cell % distinct) * 1_000_000_007 + (1 << 40));
                }
            }
        }
        v
    }

    #[test]
    fn round_trips_every_bit_width_and_partial_blocks() {
        for distinct in [1, 2, 3, 5, 17, 300] {
            for size in [[8, 8, 8], [13, 9, 5], [64, 64, 4], [1, 1, 1]] {
                let d = labels(size, distinct);
                let enc = encode(&d, size, [8, 8, 8]).unwrap();
                assert_eq!(
                    decode::<u64>(&enc, size, [8, 8, 8]).unwrap(),
                    d,
                    "{distinct} {size:?}"
                );
                let d32: Vec<u32> = d.iter().map(|&v| (v % 4_000_000_000) as u32).collect();
                let enc = encode(&d32, size, [4, 8, 2]).unwrap();
                assert_eq!(decode::<u32>(&enc, size, [4, 8, 2]).unwrap(), d32);
            }
        }
    }

    #[test]
    fn one_label_blocks_take_no_value_bits_and_share_their_table() {
        let d = vec![42u32; 16 * 16 * 16];
        let enc = encode(&d, [16, 16, 16], [8, 8, 8]).unwrap();
        // Channel offset, 8 block headers of 2 words, one shared 1-word table.
        assert_eq!(enc.len(), 4 * (1 + 16 + 1));
        let w = |i: usize| u32::from_le_bytes(enc[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(w(0), 1);
        assert_eq!(w(1), 16); // table at word 16 of the channel, 0 bits
        assert_eq!(w(3), 16); // the second block shares it
        assert_eq!(w(17), 42);
    }

    #[test]
    fn two_labels_pack_one_bit_per_voxel_x_fastest() {
        // An 8x8x8 block where x = 1 is label 9, the rest 5.
        let mut d = vec![5u32; 512];
        for z in 0..8 {
            for y in 0..8 {
                d[(z * 8 + y) * 8 + 1] = 9;
            }
        }
        let enc = encode(&d, [8, 8, 8], [8, 8, 8]).unwrap();
        let w = |i: usize| u32::from_le_bytes(enc[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(w(1) >> 24, 1, "one bit");
        let values = w(2) as usize + 1;
        // Bit x of each 8-voxel row: 0b00000010 repeated.
        assert_eq!(w(values), 0x0202_0202);
        let table = (w(1) & 0xff_ffff) as usize + 1;
        assert_eq!((w(table), w(table + 1)), (5, 9));
    }

    #[test]
    fn bad_shapes_and_bytes_are_errors() {
        assert!(encode(&[1u32; 7], [2, 2, 2], [8, 8, 8]).is_err());
        assert!(encode(&[1u32; 8], [2, 2, 2], [0, 8, 8]).is_err());
        assert!(decode::<u32>(&[1, 0, 0], [2, 2, 2], [8, 8, 8]).is_err());
        assert!(decode::<u32>(&[1, 0, 0, 0], [2, 2, 2], [8, 8, 8]).is_err());
    }
}
