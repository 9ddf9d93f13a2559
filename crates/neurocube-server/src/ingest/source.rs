//! Sources: reading and checking slice stacks (PNG, TIFF, JPEG), 3-D TIFFs
//! and npy arrays.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use image::ImageDecoder;
use neurocube_core::DType;
use rayon::prelude::*;

/// What to read.
#[derive(Debug)]
pub(super) enum Source {
    /// One file per z.
    Slices(Vec<PathBuf>),
    /// A multi-page TIFF.
    Tiff(PathBuf),
    /// An npy array; data starts at the offset.
    Npy(PathBuf, u64),
}

/// A checked source: its shape and voxel type.
#[derive(Debug)]
pub(super) struct Stack {
    pub(super) source: Source,
    /// `[x, y, z]`.
    pub(super) shape: [u64; 3],
    pub(super) dtype: DType,
    /// Fingerprint of the inputs (names, sizes), for resuming.
    pub(super) fingerprint: u64,
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

/// Sort key: names with their digit runs compared as numbers.
fn natural_key(name: &str) -> Vec<(u8, u64, String)> {
    let mut out = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((1, 0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((
                    0,
                    digits.parse().unwrap_or(u64::MAX),
                    std::mem::take(&mut digits),
                ));
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        out.push((0, digits.parse().unwrap_or(u64::MAX), digits));
    }
    if !text.is_empty() {
        out.push((1, 0, text));
    }
    out
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "png" | "tif" | "tiff" | "jpg" | "jpeg"
        )
    })
}

fn dtype_of(c: image::ColorType, p: &Path) -> Result<DType, String> {
    match c {
        image::ColorType::L8 => Ok(DType::Uint8),
        image::ColorType::L16 => Ok(DType::Uint16),
        other => Err(format!(
            "{}: {other:?} pixels; only 8- or 16-bit grayscale slices can be ingested",
            p.display()
        )),
    }
}

/// Size and type of one 2-D slice, from its header.
fn slice_header(p: &Path) -> Result<(u32, u32, DType), String> {
    let d = image::ImageReader::open(p)
        .and_then(image::ImageReader::with_guessed_format)
        .map_err(|e| format!("{}: cannot read: {e}", p.display()))?
        .into_decoder()
        .map_err(|e| format!("{}: not a readable image: {e}", p.display()))?;
    let (w, h) = d.dimensions();
    Ok((w, h, dtype_of(d.color_type(), p)?))
}

fn tiff_type(c: tiff::ColorType, p: &Path) -> Result<DType, String> {
    match c {
        tiff::ColorType::Gray(8) => Ok(DType::Uint8),
        tiff::ColorType::Gray(16) => Ok(DType::Uint16),
        other => Err(format!(
            "{}: {other:?} pixels; only 8- or 16-bit grayscale can be ingested",
            p.display()
        )),
    }
}

/// Most bytes one slice (x·y·voxel size) of a source may hold.
const MAX_SLICE_BYTES: u64 = 1 << 32;

/// Open and check a source: every slice's header agrees with the first,
/// and one slice is at most [`MAX_SLICE_BYTES`].
pub(super) fn open_source(path: &Path) -> Result<Stack, String> {
    let s = open_unchecked(path)?;
    let slice = s.shape[0]
        .checked_mul(s.shape[1])
        .and_then(|v| v.checked_mul(s.dtype.size() as u64))
        .filter(|b| *b <= MAX_SLICE_BYTES);
    if slice.is_none() {
        return Err(format!(
            "{}: slices of {}x{} {} are over the {MAX_SLICE_BYTES} bytes one slice may hold",
            path.display(),
            s.shape[0],
            s.shape[1],
            s.dtype
        ));
    }
    Ok(s)
}

fn open_unchecked(path: &Path) -> Result<Stack, String> {
    let mut fp = 0xcbf2_9ce4_8422_2325u64;
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: cannot list: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if files.is_empty() {
            return Err(format!(
                "{}: no .png, .tif, .tiff, .jpg or .jpeg slices found",
                path.display()
            ));
        }
        files.sort_by_cached_key(|p| {
            natural_key(&p.file_name().unwrap_or_default().to_string_lossy())
        });
        let headers: Vec<Result<(u32, u32, DType), String>> =
            files.par_iter().map(|f| slice_header(f)).collect();
        let mut first: Option<(u32, u32, DType, &PathBuf)> = None;
        for (f, h) in files.iter().zip(headers) {
            let (w, hh, t) = h?;
            match first {
                None => first = Some((w, hh, t, f)),
                Some((w0, h0, t0, f0)) => {
                    if (w, hh) != (w0, h0) {
                        return Err(format!(
                            "{}: {w}x{hh} pixels, but {} (the first slice) is {w0}x{h0}; all slices must have the same size",
                            f.display(),
                            f0.display()
                        ));
                    }
                    if t != t0 {
                        return Err(format!(
                            "{}: {}-bit, but {} (the first slice) is {}-bit; all slices must have the same bit depth",
                            f.display(),
                            t.size() * 8,
                            f0.display(),
                            t0.size() * 8
                        ));
                    }
                }
            }
            // Names, not sizes: a slice fixed after a failed run keeps the job.
            fnv(&mut fp, f.to_string_lossy().as_bytes());
        }
        let Some((w, h, t, _)) = first else {
            return Err(format!("{}: no slices in the directory", path.display()));
        };
        return Ok(Stack {
            shape: [u64::from(w), u64::from(h), files.len() as u64],
            dtype: t,
            fingerprint: fp,
            source: Source::Slices(files),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    fnv(&mut fp, path.to_string_lossy().as_bytes());
    fnv(
        &mut fp,
        &std::fs::metadata(path).map_or(0, |m| m.len()).to_le_bytes(),
    );
    match ext.as_str() {
        "npy" => {
            let mut f =
                File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let mut head = vec![0u8; 1 << 16];
            let n =
                read_up_to(&mut f, &mut head).map_err(|e| format!("{}: {e}", path.display()))?;
            head.truncate(n);
            let (hdr, off) = neurocube_core::npy::parse(&head)
                .map_err(|e| format!("{}: not a readable npy file: {e}", path.display()))?;
            let shape = match hdr.shape[..] {
                [z, y, x] => [x, y, z],
                [y, x] => [x, y, 1],
                _ => {
                    return Err(format!(
                        "{}: shape {:?}; a 2-D (y, x) or 3-D (z, y, x) array is needed",
                        path.display(),
                        hdr.shape
                    ));
                }
            };
            // Checked: a header's dimensions are the file's word, not ours.
            let need = shape
                .iter()
                .try_fold(hdr.dtype.size() as u64, |a, &d| a.checked_mul(d))
                .and_then(|b| b.checked_add(off as u64))
                .ok_or_else(|| {
                    format!(
                        "{}: shape {:?} of {} is more than 2^64 bytes",
                        path.display(),
                        hdr.shape,
                        hdr.dtype
                    )
                })?;
            let have = std::fs::metadata(path).map_or(0, |m| m.len());
            if have < need {
                return Err(format!(
                    "{}: the file holds {have} bytes but its header promises {need}; it is truncated",
                    path.display()
                ));
            }
            Ok(Stack {
                source: Source::Npy(path.to_path_buf(), off as u64),
                shape,
                dtype: hdr.dtype,
                fingerprint: fp,
            })
        }
        "tif" | "tiff" => {
            let f =
                File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let err = |e: tiff::TiffError| format!("{}: not a readable TIFF: {e}", path.display());
            let mut d = tiff::decoder::Decoder::new(std::io::BufReader::new(f)).map_err(err)?;
            let (w, h) = d.dimensions().map_err(err)?;
            let t = tiff_type(d.colortype().map_err(err)?, path)?;
            let mut pages = 1u64;
            while d.more_images() {
                d.next_image().map_err(err)?;
                let (w2, h2) = d.dimensions().map_err(err)?;
                let t2 = tiff_type(d.colortype().map_err(err)?, path)?;
                if (w2, h2, t2) != (w, h, t) {
                    return Err(format!(
                        "{}: page {pages} is {w2}x{h2} {t2}, but page 0 is {w}x{h} {t}; all pages must match",
                        path.display()
                    ));
                }
                pages += 1;
            }
            Ok(Stack {
                source: Source::Tiff(path.to_path_buf()),
                shape: [u64::from(w), u64::from(h), pages],
                dtype: t,
                fingerprint: fp,
            })
        }
        _ => Err(format!(
            "{}: not a directory of slices, a .tif/.tiff stack or a .npy file",
            path.display()
        )),
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Decode one 2-D slice into little-endian voxel bytes.
fn decode_slice(p: &Path, shape: [u64; 3], dtype: DType) -> Result<Vec<u8>, String> {
    let img = image::ImageReader::open(p)
        .and_then(image::ImageReader::with_guessed_format)
        .map_err(|e| format!("{}: cannot read: {e}", p.display()))?
        .decode()
        .map_err(|e| format!("{}: cannot decode: {e}", p.display()))?;
    if (u64::from(img.width()), u64::from(img.height())) != (shape[0], shape[1]) {
        return Err(format!("{}: size changed while ingesting", p.display()));
    }
    match (img, dtype) {
        (image::DynamicImage::ImageLuma8(b), DType::Uint8) => Ok(b.into_raw()),
        (image::DynamicImage::ImageLuma16(b), DType::Uint16) => {
            Ok(b.into_raw().iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        _ => Err(format!(
            "{}: pixel type changed while ingesting",
            p.display()
        )),
    }
}

impl Stack {
    pub(super) fn slice_bytes(&self) -> usize {
        (self.shape[0] * self.shape[1]) as usize * self.dtype.size()
    }

    /// Voxels of source slices `z0..z1`, C order.
    pub(super) fn read(&self, z0: u64, z1: u64) -> Result<Vec<u8>, String> {
        let sb = self.slice_bytes();
        let mut out = vec![0u8; sb * (z1 - z0) as usize];
        match &self.source {
            Source::Slices(files) => {
                out.par_chunks_mut(sb)
                    .zip(&files[z0 as usize..z1 as usize])
                    .try_for_each(|(dst, f)| {
                        let v = decode_slice(f, self.shape, self.dtype)?;
                        dst.copy_from_slice(&v);
                        Ok::<_, String>(())
                    })?;
            }
            Source::Npy(p, off) => {
                let mut f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
                f.seek(SeekFrom::Start(off + z0 * sb as u64))
                    .and_then(|_| f.read_exact(&mut out))
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Source::Tiff(p) => {
                let f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
                let err =
                    |e: tiff::TiffError| format!("{}: page decoding failed: {e}", p.display());
                let mut d = tiff::decoder::Decoder::new(std::io::BufReader::new(f)).map_err(err)?;
                for (i, dst) in out.chunks_mut(sb).enumerate() {
                    d.seek_to_image(z0 as usize + i).map_err(err)?;
                    match d.read_image().map_err(err)? {
                        tiff::decoder::DecodingResult::U8(v) if v.len() == sb => {
                            dst.copy_from_slice(&v);
                        }
                        tiff::decoder::DecodingResult::U16(v) if v.len() * 2 == sb => {
                            for (o, x) in dst.chunks_exact_mut(2).zip(v) {
                                o.copy_from_slice(&x.to_le_bytes());
                            }
                        }
                        _ => {
                            return Err(format!(
                                "{}: page {} has an unexpected layout",
                                p.display(),
                                z0 as usize + i
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Which source file holds slice `z` (for messages).
    pub(super) fn name(&self, z: u64) -> String {
        match &self.source {
            Source::Slices(f) => f[z as usize].display().to_string(),
            Source::Tiff(p) | Source::Npy(p, _) => format!("{} (z {z})", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid small inputs of each reader: an 8×6 gray PNG, the same as a
    /// two-page TIFF, and a 2×6×8 npy.
    fn samples() -> Vec<(&'static str, Vec<u8>)> {
        let px: Vec<u8> = (0..48u8).collect();
        let mut png = Vec::new();
        image::GrayImage::from_raw(8, 6, px.clone())
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let mut tif = std::io::Cursor::new(Vec::new());
        {
            let mut enc = tiff::encoder::TiffEncoder::new(&mut tif).unwrap();
            for _ in 0..2 {
                enc.write_image::<tiff::encoder::colortype::Gray8>(8, 6, &px)
                    .unwrap();
            }
        }
        let mut npy = neurocube_core::npy::header(DType::Uint8, &[2, 6, 8]);
        npy.extend(px.iter().chain(&px));
        vec![("s.png", png), ("s.tif", tif.into_inner()), ("s.npy", npy)]
    }

    proptest::proptest! {
        /// Fuzz target of the ingest readers (issue 9): damaged files give
        /// an error, never a panic or an allocation the size of a lie.
        #[test]
        fn damaged_sources_are_refused_or_read(
            pick in 0usize..3,
            flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..6),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            truncate in proptest::prelude::any::<bool>(),
        ) {
            let (name, mut bytes) = samples().swap_remove(pick);
            for (i, v) in flips {
                let i = i.index(bytes.len());
                bytes[i] = v;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join(name);
            std::fs::write(&file, &bytes).unwrap();
            // PNG slices are read as a directory; the others as files.
            let path = if name.ends_with(".png") { dir.path().to_path_buf() } else { file };
            if let Ok(stack) = open_source(&path) {
                let _ = stack.read(0, stack.shape[2].min(2));
            }
        }
    }

    /// A header whose dimensions multiply past 2^64 (or past a slice's
    /// limit) is refused by name, not wrapped into a small size.
    #[test]
    fn headers_that_overflow_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.npy");
        std::fs::write(
            &file,
            neurocube_core::npy::header(DType::Uint8, &[1 << 40, 1 << 40, 1 << 40]),
        )
        .unwrap();
        let e = open_source(&file).err().unwrap();
        assert!(e.contains("is more than 2^64 bytes"), "{e}");
        let file = dir.path().join("wide.npy");
        let mut b = neurocube_core::npy::header(DType::Uint8, &[1, 1 << 17, 1 << 17]);
        b.resize(b.len() + (1 << 20), 0);
        std::fs::write(&file, b).unwrap();
        let e = open_source(&file).err().unwrap();
        assert!(
            e.contains("truncated") || e.contains("one slice may hold"),
            "{e}"
        );
    }

    #[test]
    fn slices_sort_numerically() {
        let mut v = vec!["s10.png", "s9.png", "s100.png", "s0.png"];
        v.sort_by_cached_key(|n| natural_key(n));
        assert_eq!(v, vec!["s0.png", "s9.png", "s10.png", "s100.png"]);
    }
}
