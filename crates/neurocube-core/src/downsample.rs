//! Downsampling kernels of the resolution pyramid: the average of each
//! 2×2 (anisotropic) or 2×2×2 (isotropic) block for image channels, the
//! most frequent non-zero label for segmentation.
//!
//! A voxel `v` of the coarser level covers the finer voxels
//! `[v·step, v·step + step)` per axis (global coordinates). Only finer voxels
//! inside `src_box` count, so blocks on the edge of a level (odd extents,
//! offsets) average what exists instead of mixing in zeros.
//!
//! ```
//! use neurocube_core::{Box3, DType, downsample::{average, Kernel, downsample}};
//! let src = Box3::new([0, 0, 0], [4, 2, 1]).unwrap();
//! let dst = Box3::new([0, 0, 0], [2, 1, 1]).unwrap();
//! let data = [0u8, 2, 10, 20, 4, 6, 30, 40];
//! let out = downsample(Kernel::Average, DType::Uint8, &data, &src, &dst, [2, 2, 1]);
//! assert_eq!(out, vec![3, 25]);
//! # let _ = average;
//! ```

use crate::dtype::DType;
use crate::geometry::Box3;

/// How a block of finer voxels becomes one coarser voxel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Mean, rounded half up for integers (image channels).
    Average,
    /// Most frequent non-zero value; ties go to the smallest; all-zero gives 0
    /// (segmentation channels).
    Mode,
}

/// The finer-level box that the coarser box `dst` is computed from, clipped
/// to the finer level's `bounds`.
#[must_use]
pub fn source_box(dst: &Box3, step: [u64; 3], bounds: &Box3) -> Option<Box3> {
    let b = Box3 {
        start: [
            dst.start[0] * step[0],
            dst.start[1] * step[1],
            dst.start[2] * step[2],
        ],
        end: [
            dst.end[0] * step[0],
            dst.end[1] * step[1],
            dst.end[2] * step[2],
        ],
    };
    b.overlap(bounds)
}

/// Range of finer indices (relative to `src`) that coarser index `v` covers on one axis.
fn block(v: u64, step: u64, src_start: u64, src_end: u64) -> (usize, usize) {
    let a = (v * step).max(src_start);
    let b = ((v + 1) * step).min(src_end);
    ((a - src_start) as usize, (b.max(a) - src_start) as usize)
}

/// Downsample the voxels of `src` (C order, little-endian `dtype`) into the
/// box `dst` of the coarser level, `step` finer voxels per coarser voxel.
///
/// # Panics
/// If `data` does not hold exactly `src`'s voxels.
#[must_use]
pub fn downsample(
    kernel: Kernel,
    dtype: DType,
    data: &[u8],
    src: &Box3,
    dst: &Box3,
    step: [u64; 3],
) -> Vec<u8> {
    assert_eq!(
        data.len() as u64,
        src.voxels() * dtype.size() as u64,
        "source buffer does not match its box"
    );
    match (kernel, dtype) {
        (Kernel::Average, DType::Uint8) => average(data, src, dst, step),
        (Kernel::Average, DType::Float32) => generic(data, src, dst, step, 4, |vals, out| {
            let s: f64 = vals
                .iter()
                .map(|&v| f64::from(f32::from_bits(v as u32)))
                .sum();
            let m = (s / vals.len() as f64) as f32;
            out.copy_from_slice(&m.to_le_bytes());
        }),
        (Kernel::Average, t) => {
            let size = t.size();
            generic(data, src, dst, step, size, move |vals, out| {
                let s: u128 = vals.iter().map(|&v| u128::from(v)).sum();
                let n = vals.len() as u128;
                let m = ((s + n / 2) / n) as u64;
                out.copy_from_slice(&m.to_le_bytes()[..size]);
            })
        }
        (Kernel::Mode, t) => {
            let size = t.size();
            generic(data, src, dst, step, size, move |vals, out| {
                let m = mode_of(vals);
                out.copy_from_slice(&m.to_le_bytes()[..size]);
            })
        }
    }
}

/// Most frequent non-zero value (ties: smallest), 0 if all are zero.
#[must_use]
pub fn mode_of(vals: &[u64]) -> u64 {
    let mut best = (0usize, 0u64);
    for (i, &v) in vals.iter().enumerate() {
        if v == 0 || vals[..i].contains(&v) {
            continue;
        }
        let n = vals[i..].iter().filter(|&&w| w == v).count();
        if n > best.0 || (n == best.0 && v < best.1) {
            best = (n, v);
        }
    }
    best.1
}

fn read_le(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// Any dtype, any kernel: gather each block's values and reduce them.
fn generic(
    data: &[u8],
    src: &Box3,
    dst: &Box3,
    step: [u64; 3],
    size: usize,
    reduce: impl Fn(&[u64], &mut [u8]),
) -> Vec<u8> {
    let ss = src.shape();
    let ds = dst.shape();
    let (sx, sxy) = (ss[0] as usize, (ss[0] * ss[1]) as usize);
    let mut out = vec![0u8; dst.voxels() as usize * size];
    let mut vals = Vec::with_capacity(8);
    let mut o = 0;
    for z in dst.start[2]..dst.end[2] {
        let (z0, z1) = block(z, step[2], src.start[2], src.end[2]);
        for y in dst.start[1]..dst.end[1] {
            let (y0, y1) = block(y, step[1], src.start[1], src.end[1]);
            for x in dst.start[0]..dst.end[0] {
                let (x0, x1) = block(x, step[0], src.start[0], src.end[0]);
                vals.clear();
                for zz in z0..z1 {
                    for yy in y0..y1 {
                        let row = zz * sxy + yy * sx;
                        for xx in x0..x1 {
                            let i = (row + xx) * size;
                            vals.push(read_le(&data[i..i + size]));
                        }
                    }
                }
                if !vals.is_empty() {
                    reduce(&vals, &mut out[o..o + size]);
                }
                o += size;
            }
        }
    }
    debug_assert_eq!(o as u64, ds[0] * ds[1] * ds[2] * size as u64);
    out
}

/// The uint8 average, row at a time (the hot path of EM pyramids).
#[must_use]
pub fn average(data: &[u8], src: &Box3, dst: &Box3, step: [u64; 3]) -> Vec<u8> {
    let ss = src.shape();
    let ds = dst.shape();
    let (sx, sxy) = (ss[0] as usize, (ss[0] * ss[1]) as usize);
    let dx = ds[0] as usize;
    let mut out = vec![0u8; dst.voxels() as usize];
    // Per coarse column: first finer column and count.
    let cols: Vec<(usize, usize)> = (dst.start[0]..dst.end[0])
        .map(|x| block(x, step[0], src.start[0], src.end[0]))
        .collect();
    let aligned = cols.iter().all(|&(a, b)| b - a == 2)
        && step[0] == 2
        && cols.first().is_some_and(|c| c.0 == 0);
    let mut sums = vec![0u32; dx];
    let mut o = 0;
    for z in dst.start[2]..dst.end[2] {
        let (z0, z1) = block(z, step[2], src.start[2], src.end[2]);
        for y in dst.start[1]..dst.end[1] {
            let (y0, y1) = block(y, step[1], src.start[1], src.end[1]);
            sums.iter_mut().for_each(|s| *s = 0);
            let mut rows = 0u32;
            for zz in z0..z1 {
                for yy in y0..y1 {
                    let row = &data[zz * sxy + yy * sx..zz * sxy + yy * sx + sx];
                    rows += 1;
                    if aligned {
                        for (s, p) in sums.iter_mut().zip(row.chunks_exact(2)) {
                            *s += u32::from(p[0]) + u32::from(p[1]);
                        }
                    } else {
                        for (s, &(a, b)) in sums.iter_mut().zip(&cols) {
                            *s += row[a..b].iter().map(|&v| u32::from(v)).sum::<u32>();
                        }
                    }
                }
            }
            for (i, s) in sums.iter().enumerate() {
                let n = rows * (cols[i].1 - cols[i].0) as u32;
                out[o + i] = (s + n / 2).checked_div(n).map_or(0, |v| v as u8);
            }
            o += dx;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(s: [u64; 3], e: [u64; 3]) -> Box3 {
        Box3::new(s, e).unwrap()
    }

    /// Straightforward reference: for each coarse voxel, average every finer
    /// voxel of its block that lies inside the source box.
    fn reference_u16(data: &[u16], src: &Box3, dst: &Box3, step: [u64; 3]) -> Vec<u16> {
        let ss = src.shape();
        let mut out = Vec::new();
        for z in dst.start[2]..dst.end[2] {
            for y in dst.start[1]..dst.end[1] {
                for x in dst.start[0]..dst.end[0] {
                    let (mut s, mut n) = (0u64, 0u64);
                    for zz in z * step[2]..(z + 1) * step[2] {
                        for yy in y * step[1]..(y + 1) * step[1] {
                            for xx in x * step[0]..(x + 1) * step[0] {
                                let p = [xx, yy, zz];
                                if (0..3).all(|a| src.start[a] <= p[a] && p[a] < src.end[a]) {
                                    let i = ((zz - src.start[2]) * ss[1] * ss[0]
                                        + (yy - src.start[1]) * ss[0]
                                        + (xx - src.start[0]))
                                        as usize;
                                    s += u64::from(data[i]);
                                    n += 1;
                                }
                            }
                        }
                    }
                    out.push(((s + n / 2) / n) as u16);
                }
            }
        }
        out
    }

    #[test]
    fn uint8_average_of_2x2_blocks() {
        let src = bx([0, 0, 0], [4, 2, 1]);
        let dst = bx([0, 0, 0], [2, 1, 1]);
        // (0+2+4+6)/4 = 3, (10+20+30+40)/4 = 25.
        let out = downsample(
            Kernel::Average,
            DType::Uint8,
            &[0, 2, 10, 20, 4, 6, 30, 40],
            &src,
            &dst,
            [2, 2, 1],
        );
        assert_eq!(out, vec![3, 25]);
        // Rounding is half up: (1+1+2+2)/4 = 1.5 -> 2, (1+2+2+2)/4 = 1.75 -> 2, (2+1+1+1)/4 = 1.25 -> 1.
        let out = downsample(
            Kernel::Average,
            DType::Uint8,
            &[1, 1, 1, 2, 2, 1, 2, 2, 2, 2, 1, 1],
            &bx([0, 0, 0], [6, 2, 1]),
            &bx([0, 0, 0], [3, 1, 1]),
            [2, 2, 1],
        );
        assert_eq!(out, vec![2, 2, 1]);
    }

    #[test]
    fn edges_average_only_existing_voxels() {
        // 3 x 3 x 3 source, isotropic: the far corner block holds one voxel.
        let src = bx([0, 0, 0], [3, 3, 3]);
        let dst = bx([0, 0, 0], [2, 2, 2]);
        let data: Vec<u8> = (0..27).map(|i| i as u8 * 9).collect();
        let out = downsample(Kernel::Average, DType::Uint8, &data, &src, &dst, [2, 2, 2]);
        assert_eq!(out[7], 26 * 9);
        // Block (1,0,0): x=2, y 0..2, z 0..2 -> indices 2, 5, 11, 14.
        assert_eq!(
            u32::from(out[1]),
            ((2 + 5 + 11 + 14) * 9 + 2) / 4,
            "{out:?}"
        );
    }

    #[test]
    fn fast_uint8_path_matches_the_generic_one() {
        for (src, dst, step) in [
            (
                bx([0, 0, 0], [64, 32, 4]),
                bx([0, 0, 0], [32, 16, 4]),
                [2, 2, 1],
            ),
            (
                bx([3, 1, 1], [64, 31, 9]),
                bx([1, 0, 0], [32, 16, 5]),
                [2, 2, 2],
            ),
            (
                bx([6, 0, 0], [17, 5, 2]),
                bx([3, 0, 0], [9, 3, 2]),
                [2, 2, 1],
            ),
        ] {
            let data: Vec<u8> = (0..src.voxels())
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
                .collect();
            let fast = average(&data, &src, &dst, step);
            let wide: Vec<u16> = data.iter().map(|&v| u16::from(v)).collect();
            let want: Vec<u8> = reference_u16(&wide, &src, &dst, step)
                .into_iter()
                .map(|v| v as u8)
                .collect();
            assert_eq!(fast, want, "{src} -> {dst}");
        }
    }

    #[test]
    fn uint16_and_float_average() {
        let src = bx([0, 0, 0], [2, 2, 2]);
        let dst = bx([0, 0, 0], [1, 1, 1]);
        let vals: [u16; 8] = [1000, 2000, 3000, 4000, 5000, 6000, 7000, 65535];
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = downsample(Kernel::Average, DType::Uint16, &data, &src, &dst, [2, 2, 2]);
        let want = reference_u16(&vals, &src, &dst, [2, 2, 2]);
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), want[0]);
        assert_eq!(want[0], 11692);
        let f: Vec<u8> = [0.5f32, 1.5, 2.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let out = downsample(
            Kernel::Average,
            DType::Float32,
            &f,
            &bx([0, 0, 0], [2, 2, 1]),
            &bx([0, 0, 0], [1, 1, 1]),
            [2, 2, 1],
        );
        assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), 2.0);
    }

    #[test]
    fn mode_takes_the_most_frequent_nonzero_label() {
        assert_eq!(mode_of(&[0, 0, 0, 7]), 7);
        assert_eq!(mode_of(&[0, 0, 0, 0]), 0);
        assert_eq!(
            mode_of(&[5, 9, 9, 5, 0, 0, 0, 3]),
            5,
            "tie goes to the smallest"
        );
        assert_eq!(mode_of(&[u64::MAX, u64::MAX, 1, 2]), u64::MAX);
        // uint64 labels through the byte kernel, anisotropic 2x2 blocks.
        let labels: [u64; 8] = [0, 42, 0, 0, 1 << 40, 1 << 40, 3, 1 << 40];
        // Rows: y0 = [0, 42, 0, 0], y1 = [1<<40, 1<<40, 3, 1<<40].
        let data: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = downsample(
            Kernel::Mode,
            DType::Uint64,
            &data,
            &bx([0, 0, 0], [4, 2, 1]),
            &bx([0, 0, 0], [2, 1, 1]),
            [2, 2, 1],
        );
        let got: Vec<u64> = out
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // Block 0: {0, 42, 1<<40, 1<<40} -> 1<<40 (zeros never win); block 1: {0, 0, 3, 1<<40} -> 3.
        assert_eq!(got, vec![1 << 40, 3]);
    }

    #[test]
    fn source_box_is_clipped_to_the_finer_level() {
        let bounds = bx([0, 0, 0], [101, 64, 7]);
        let s = source_box(&bx([32, 0, 0], [51, 32, 7]), [2, 2, 1], &bounds).unwrap();
        assert_eq!(s, bx([64, 0, 0], [101, 64, 7]));
    }
}
