//! Blosc (c-blosc v1 frames, decodable by Python's `blosc.decompress`),
//! built from the vendored sources of `blosc-src`. All FFI of the project is
//! in this file, behind safe functions whose errors echo their inputs.

use std::ffi::{c_int, c_void};

use serde::{Deserialize, Serialize};

use crate::error::BloscError;

/// Largest buffer a c-blosc v1 frame can hold.
pub const MAX_BUFFER: usize = blosc_src::BLOSC_MAX_BUFFERSIZE as usize;
const HEADER: usize = blosc_src::BLOSC_MIN_HEADER_LENGTH as usize;
const OVERHEAD: usize = blosc_src::BLOSC_MAX_OVERHEAD as usize;

/// The compressor inside a Blosc frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compressor {
    /// LZ4: fast both ways; the default.
    Lz4,
    /// Zstandard: smaller, slower to write.
    Zstd,
}

impl Compressor {
    fn c_name(self) -> &'static [u8] {
        match self {
            Compressor::Lz4 => blosc_src::BLOSC_LZ4_COMPNAME,
            Compressor::Zstd => blosc_src::BLOSC_ZSTD_COMPNAME,
        }
    }
}

/// A validated Blosc configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blosc {
    compressor: Compressor,
    level: u8,
    typesize: usize,
    shuffle: bool,
}

impl Blosc {
    /// A codec with byte shuffle over elements of `typesize` bytes.
    pub fn new(compressor: Compressor, level: u8, typesize: usize) -> Result<Self, BloscError> {
        if level > 9 {
            return Err(BloscError::BadLevel { level });
        }
        if typesize == 0 || typesize > blosc_src::BLOSC_MAX_TYPESIZE as usize {
            return Err(BloscError::BadTypesize { typesize });
        }
        Ok(Self {
            compressor,
            level,
            typesize,
            shuffle: true,
        })
    }

    /// LZ4 at level 5 with byte shuffle: the default for chunks and responses.
    pub fn lz4(typesize: usize) -> Result<Self, BloscError> {
        Self::new(Compressor::Lz4, 5, typesize)
    }

    /// Compress `src` into a new frame (single-threaded; callers parallelise over chunks).
    pub fn compress(&self, src: &[u8]) -> Result<Vec<u8>, BloscError> {
        self.compress_with(src, 0, src.len() + OVERHEAD)
    }

    /// Compress one part of a frame that [`join_parts`] assembles: every
    /// part but the last holds a multiple of [`PART_BYTES`], and the last
    /// at least `PART_BYTES` (or the whole input, then it is the frame).
    /// Parts compress on any threads, in any order, as their bytes arrive.
    pub fn compress_part(&self, src: &[u8]) -> Result<Vec<u8>, BloscError> {
        // Room for every block stored as it is (each split with its 4-byte
        // length), so c-blosc never falls back to one memcpy'd frame, whose
        // layout has no blocks to join.
        let blocks = src.len() / MIN_PART_BLOCK + 2;
        let cap = src.len() + OVERHEAD + 4 * blocks * (1 + self.typesize) + 64;
        self.compress_with(src, PART_BLOCK, cap)
    }

    fn compress_with(
        &self,
        src: &[u8],
        blocksize: usize,
        cap: usize,
    ) -> Result<Vec<u8>, BloscError> {
        if src.len() > MAX_BUFFER {
            return Err(BloscError::TooLarge {
                len: src.len(),
                max: MAX_BUFFER,
            });
        }
        let mut dst: Vec<u8> = Vec::with_capacity(cap);
        // SAFETY: `src` is valid for `src.len()` bytes; `dst` has `cap` bytes of
        // capacity, which c-blosc never exceeds (it is told `cap`); the name is
        // a NUL-terminated static string; the _ctx variant holds no global state.
        let n = unsafe {
            blosc_src::blosc_compress_ctx(
                c_int::from(self.level),
                c_int::from(self.shuffle),
                self.typesize,
                src.len(),
                src.as_ptr().cast::<c_void>(),
                dst.as_mut_ptr().cast::<c_void>(),
                cap,
                self.compressor.c_name().as_ptr().cast(),
                blocksize,
                1,
            )
        };
        if n <= 0 {
            return Err(BloscError::CompressFailed {
                code: n,
                len: src.len(),
                typesize: self.typesize,
            });
        }
        // SAFETY: c-blosc wrote exactly `n` (≤ cap) initialised bytes.
        unsafe { dst.set_len(n as usize) };
        // A frame much smaller than its input (sparse labels) does not keep
        // the input's size of memory for as long as it lives.
        if dst.len() < cap / 2 {
            dst.shrink_to_fit();
        }
        Ok(dst)
    }
}

/// Bytes in each part of a frame compressed in parts. The parts are told
/// blocks of `PART_BLOCK`; c-blosc makes that 256 KiB × typesize (at most
/// 1 MiB) for splitting codecs and keeps it otherwise, and every such block
/// size divides 4 MiB, so the parts' blocks line up in the joined frame.
pub const PART_BYTES: usize = 4 << 20;
const PART_BLOCK: usize = 256 << 10;
/// The smallest block c-blosc makes of a forced `PART_BLOCK`.
const MIN_PART_BLOCK: usize = 64 << 10;
const MEMCPYED: u8 = blosc_src::BLOSC_MEMCPYED as u8;

/// A c-blosc v1 frame joined from parts: `head` (the header and the offsets
/// of every block), then the blocks of each part, `part[start..]`, in order.
/// Sent as it is, the parts' blocks are never copied.
#[derive(Debug)]
pub struct Joined {
    /// The frame's header and block offsets.
    pub head: Vec<u8>,
    /// Each part and where its blocks start in it.
    pub parts: Vec<(Vec<u8>, usize)>,
}

impl Joined {
    /// Length of the frame.
    #[must_use]
    pub fn len(&self) -> usize {
        self.head.len() + self.parts.iter().map(|(p, s)| p.len() - s).sum::<usize>()
    }

    /// Whether the frame is empty (never: a frame has a header).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One c-blosc v1 frame from parts made by [`Blosc::compress_part`], in
/// order. A c-blosc v1 frame puts the offsets of its blocks before the
/// blocks, so it cannot be sent before its last block is compressed; built
/// from parts, it never needs its input whole: each part is compressed as
/// soon as its bytes exist, and the parts' blocks go behind one header with
/// one offset table.
pub fn join_parts(mut parts: Vec<Vec<u8>>) -> Result<Joined, BloscError> {
    if parts.len() == 1 {
        return Ok(Joined {
            head: parts.pop().unwrap_or_default(),
            parts: Vec::new(),
        });
    }
    let word = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let bad = |part, reason| BloscError::BadPart { part, reason };
    let Some(first) = parts.first() else {
        return Err(bad(0, "there are no parts"));
    };
    if first.len() < HEADER {
        return Err(bad(0, "shorter than a header"));
    }
    let (head, blocksize) = (&first[..4], word(first, 8) as usize);
    let (mut nbytes, mut nblocks, mut data) = (0usize, 0usize, 0usize);
    let mut layout = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        if p.len() < HEADER || word(p, 12) as usize != p.len() {
            return Err(bad(i, "not one whole frame"));
        }
        if &p[..4] != head || word(p, 8) as usize != blocksize || blocksize == 0 {
            return Err(bad(i, "its header differs from the first part's"));
        }
        if p[2] & MEMCPYED != 0 {
            return Err(bad(i, "stored without blocks (memcpy'd)"));
        }
        let n = word(p, 4) as usize;
        if i + 1 < parts.len() && !n.is_multiple_of(blocksize) {
            return Err(bad(i, "not a whole number of blocks"));
        }
        let blocks = n.div_ceil(blocksize);
        let start = HEADER + 4 * blocks;
        if p.len() < start {
            return Err(bad(i, "shorter than its block offsets"));
        }
        layout.push((blocks, start));
        nbytes += n;
        nblocks += blocks;
        data += p.len() - start;
    }
    if nbytes > MAX_BUFFER {
        return Err(BloscError::TooLarge {
            len: nbytes,
            max: MAX_BUFFER,
        });
    }
    let offsets = HEADER + 4 * nblocks;
    let total = offsets + data;
    let total32 = u32::try_from(total).map_err(|_| BloscError::TooLarge {
        len: total,
        max: MAX_BUFFER,
    })?;
    let mut out = Vec::with_capacity(offsets);
    out.extend_from_slice(head);
    out.extend_from_slice(&(nbytes as u32).to_le_bytes());
    out.extend_from_slice(&(blocksize as u32).to_le_bytes());
    out.extend_from_slice(&total32.to_le_bytes());
    let mut at = offsets;
    for (i, (p, &(blocks, start))) in parts.iter().zip(&layout).enumerate() {
        for k in 0..blocks {
            let b = word(p, HEADER + 4 * k) as usize;
            if b < start || b >= p.len() {
                return Err(bad(i, "a block offset outside the part"));
            }
            out.extend_from_slice(&((b - start + at) as u32).to_le_bytes());
        }
        at += p.len() - start;
    }
    Ok(Joined {
        head: out,
        parts: parts
            .into_iter()
            .zip(layout)
            .map(|(p, (_, start))| (p, start))
            .collect(),
    })
}

/// The decompressed size a frame declares, after checking that the frame is
/// well-formed enough to decompress safely.
pub fn decompressed_len(src: &[u8]) -> Result<usize, BloscError> {
    if src.len() < HEADER {
        return Err(BloscError::NotBlosc { len: src.len() });
    }
    let mut nbytes = 0usize;
    // SAFETY: c-blosc reads at most `src.len()` bytes of `src` and writes one usize.
    let rc = unsafe {
        blosc_src::blosc_cbuffer_validate(src.as_ptr().cast(), src.len(), &raw mut nbytes)
    };
    if rc != 0 {
        return Err(BloscError::NotBlosc { len: src.len() });
    }
    // Header byte 2: bit 1 set means stored uncompressed; bits 5-7 name the
    // compressor (0 blosclz, 1 lz4/lz4hc, 2 snappy, 3 zlib, 4 zstd). All but
    // snappy are built in.
    let flags = src[2];
    if flags & 0x02 == 0 && flags >> 5 == 2 {
        return Err(BloscError::UnsupportedCompressor { name: "snappy" });
    }
    Ok(nbytes)
}

/// Decompress a frame into `dst`, whose length must equal the frame's declared size.
pub fn decompress_into(src: &[u8], dst: &mut [u8]) -> Result<(), BloscError> {
    let declared = decompressed_len(src)?;
    if declared != dst.len() {
        return Err(BloscError::WrongSize {
            declared,
            expected: dst.len(),
        });
    }
    if declared == 0 {
        return Ok(());
    }
    // SAFETY: the frame was validated for `src.len()` bytes and declares
    // exactly `dst.len()` bytes of output, which is the size we pass.
    let n = unsafe {
        blosc_src::blosc_decompress_ctx(src.as_ptr().cast(), dst.as_mut_ptr().cast(), dst.len(), 1)
    };
    if n < 0 || n as usize != declared {
        return Err(BloscError::Corrupt {
            code: n,
            len: src.len(),
        });
    }
    Ok(())
}

/// Decompress a frame into a new buffer, refusing frames that declare more than `max` bytes.
pub fn decompress(src: &[u8], max: usize) -> Result<Vec<u8>, BloscError> {
    let declared = decompressed_len(src)?;
    if declared > max {
        return Err(BloscError::WrongSize {
            declared,
            expected: max,
        });
    }
    let mut out = vec![0u8; declared];
    decompress_into(src, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compress `data` in parts as a cutout response does (parts of
    /// `PART_BYTES`, the last one longer) and join them.
    fn in_parts(codec: &Blosc, data: &[u8]) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut rest = data;
        while rest.len() >= 2 * PART_BYTES {
            let (part, tail) = rest.split_at(PART_BYTES);
            parts.push(codec.compress_part(part).unwrap());
            rest = tail;
        }
        parts.push(codec.compress_part(rest).unwrap());
        let joined = join_parts(parts).unwrap();
        let mut frame = joined.head.clone();
        for (p, start) in &joined.parts {
            frame.extend_from_slice(&p[*start..]);
        }
        assert_eq!(frame.len(), joined.len());
        frame
    }

    #[test]
    fn frames_joined_from_parts_decode_to_the_input() {
        let noise: Vec<u8> = (0..9 * PART_BYTES as u64 + 1000)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let smooth = sample(noise.len());
        for c in [Compressor::Lz4, Compressor::Zstd] {
            for ts in [1, 2, 4, 8] {
                let codec = Blosc::new(c, 5, ts).unwrap();
                // Several lengths: whole blocks, a short tail, under one part.
                for len in [
                    8 * PART_BYTES,
                    5 * PART_BYTES + 8 * 13,
                    2 * PART_BYTES - 8,
                    4096,
                ] {
                    for data in [&noise[..len], &smooth[..len]] {
                        let z = in_parts(&codec, data);
                        assert_eq!(
                            decompressed_len(&z).unwrap(),
                            len,
                            "{c:?} ts {ts} len {len}"
                        );
                        assert_eq!(
                            decompress(&z, usize::MAX).unwrap(),
                            data,
                            "{c:?} ts {ts} len {len}"
                        );
                    }
                }
            }
        }
        // Compressible data stays compressed in the joined frame.
        let z = in_parts(&Blosc::lz4(1).unwrap(), &smooth[..8 * PART_BYTES]);
        assert!(z.len() < 8 * PART_BYTES / 2, "{}", z.len());
    }

    #[test]
    fn parts_that_do_not_line_up_are_refused() {
        let codec = Blosc::lz4(1).unwrap();
        let a = codec.compress_part(&sample(PART_BYTES + 100)).unwrap();
        let b = codec.compress_part(&sample(PART_BYTES)).unwrap();
        let e = join_parts(vec![a, b.clone()]).unwrap_err();
        assert!(e.to_string().contains("part 0"), "{e}");
        let other = Blosc::lz4(8)
            .unwrap()
            .compress_part(&sample(PART_BYTES))
            .unwrap();
        let e = join_parts(vec![b, other]).unwrap_err();
        assert!(e.to_string().contains("part 1"), "{e}");
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7) ^ (i >> 5)) as u8).collect()
    }

    #[test]
    fn round_trip_all_typesizes_and_compressors() {
        for c in [Compressor::Lz4, Compressor::Zstd] {
            for ts in [1, 2, 4, 8] {
                let data = sample(128 * 128 * 16 * ts);
                let z = Blosc::new(c, 5, ts).unwrap().compress(&data).unwrap();
                assert!(z.len() < data.len());
                assert_eq!(decompressed_len(&z).unwrap(), data.len());
                assert_eq!(decompress(&z, usize::MAX).unwrap(), data);
            }
        }
    }

    /// Frames from other c-blosc 1 compressors (as Python's `blosc` writes
    /// them) decode; snappy, not built in, is refused by name.
    #[test]
    fn frames_of_every_built_in_compressor_decode() {
        let data = sample(100_000);
        for name in [&b"blosclz\0"[..], b"lz4hc\0", b"zlib\0", b"zstd\0"] {
            let cap = data.len() + OVERHEAD;
            let mut z: Vec<u8> = Vec::with_capacity(cap);
            // SAFETY: as in `Blosc::compress`: `dst` has `cap` bytes of
            // capacity, c-blosc is told `cap`, the name is NUL-terminated.
            let n = unsafe {
                blosc_src::blosc_compress_ctx(
                    5,
                    1,
                    2,
                    data.len(),
                    data.as_ptr().cast::<c_void>(),
                    z.as_mut_ptr().cast::<c_void>(),
                    cap,
                    name.as_ptr().cast(),
                    0,
                    1,
                )
            };
            assert!(n > 0, "{name:?} failed to compress: {n}");
            // SAFETY: c-blosc wrote `n` bytes.
            unsafe { z.set_len(n as usize) };
            assert_eq!(decompress(&z, usize::MAX).unwrap(), data, "{name:?}");
        }
        let mut z = Blosc::lz4(1).unwrap().compress(&data).unwrap();
        z[2] = (z[2] & 0x1f) | (2 << 5);
        assert_eq!(
            decompress(&z, usize::MAX).unwrap_err().to_string(),
            "the Blosc frame is compressed with snappy, which this server cannot decode; compress with blosclz, lz4, lz4hc, zlib or zstd"
        );
    }

    #[test]
    fn empty_input() {
        let z = Blosc::lz4(1).unwrap().compress(&[]).unwrap();
        assert_eq!(decompress(&z, 10).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn garbage_is_refused_not_crashed() {
        assert!(matches!(
            decompress(b"hello", 100),
            Err(BloscError::NotBlosc { len: 5 })
        ));
        let junk: Vec<u8> = (0..1000).map(|i| (i * 31) as u8).collect();
        assert!(decompress(&junk, 1 << 20).is_err());
        // A valid frame with its payload damaged.
        let data = sample(100_000);
        let mut z = Blosc::lz4(1).unwrap().compress(&data).unwrap();
        let n = z.len();
        z.truncate(n / 2);
        assert!(decompress(&z, 1 << 20).is_err());
    }

    #[test]
    fn wrong_size_is_reported() {
        let z = Blosc::lz4(1).unwrap().compress(&sample(100)).unwrap();
        let mut out = vec![0; 50];
        let e = decompress_into(&z, &mut out).unwrap_err();
        assert_eq!(
            e,
            BloscError::WrongSize {
                declared: 100,
                expected: 50
            }
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Blosc::new(Compressor::Lz4, 10, 1).is_err());
        assert!(Blosc::new(Compressor::Lz4, 5, 0).is_err());
    }
}
