//! The Python client's native part, `neurocube._native`: a chunk-stream
//! cutout (docs/chunks.md) fetched over HTTP and decoded straight into the
//! caller's numpy array, with the GIL released for the whole request.
//!
//! In Python the same work cost about 165 ms of CPU for a 64 MiB box
//! (reading the chunked body in pieces, one decode call and one strided
//! copy per chunk, all holding the GIL between them), against TensorStore's
//! 96 ms for the same box read from local files (BENCHMARKS.md, issue 13).
//! Here each of the client's worker threads reads its block's stream
//! through one buffered reader, decodes each frame with c-blosc into a
//! scratch chunk and copies the rows inside the box into the array.
//!
//! The decoder ([`decode_stream`]) is plain Rust over any `Read`; [`http`]
//! is the transport (keep-alive GETs whose frames go from the socket
//! straight into the decoder's buffer); the Python binding (feature
//! `python`, which maturin turns on) joins them. Statuses other than 200 are handed back to Python with their
//! body, so the client raises the same typed errors as on its other paths.

use std::io::{self, Read};

pub mod http;

/// The stream's first bytes.
pub const MAGIC: &[u8; 8] = b"NCCHUNKS";
/// The framing version this reader knows.
pub const VERSION: u32 = 1;
/// The grid index that marks the trailer.
pub const END: u32 = u32::MAX;
/// The largest JSON header accepted (the server's is about 150 bytes).
const MAX_HEADER: usize = 1 << 20;
/// The largest decoded chunk accepted: c-blosc frames hold at most 2 GiB,
/// and the server's chunks are far smaller.
const MAX_CHUNK: u64 = 1 << 31;
/// c-blosc's frame header.
const BLOSC_HEADER: usize = 16;

/// Why a stream did not decode.
#[derive(Debug)]
pub enum StreamError {
    /// The connection failed or ended early.
    Io(io::Error),
    /// The bytes are not a chunk stream this reader can use.
    Format(String),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("the chunk stream was cut short")
            }
            StreamError::Io(e) => write!(f, "reading the chunk stream failed: {e}"),
            StreamError::Format(m) => f.write_str(m),
        }
    }
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        StreamError::Io(e)
    }
}

fn format(msg: impl Into<String>) -> StreamError {
    StreamError::Format(msg.into())
}

/// Where a stream's voxels go: `out` is a C-ordered `(z, y, x)` array of
/// `shape` voxels of `itemsize` bytes whose voxel `(0, 0, 0)` is the level's
/// voxel `origin` (x, y, z); only the part of each chunk inside `bbox`
/// (`[[x0, x1], [y0, y1], [z0, z1]]`, end exclusive) is written.
#[derive(Debug)]
pub struct Target<'a> {
    pub out: &'a mut [u8],
    pub shape: [usize; 3],
    pub itemsize: usize,
    pub origin: [u64; 3],
    pub bbox: [[u64; 2]; 3],
    pub chunk: [u64; 3],
}

impl Target<'_> {
    /// Checks that `bbox` lies inside the array and the sizes agree, so
    /// every copy below stays in bounds.
    fn check(&self) -> Result<(), StreamError> {
        let [nz, ny, nx] = self.shape;
        let voxels = nz
            .checked_mul(ny)
            .and_then(|v| v.checked_mul(nx))
            .and_then(|v| v.checked_mul(self.itemsize));
        if voxels != Some(self.out.len()) || self.itemsize == 0 {
            return Err(format(format!(
                "the array holds {} bytes, not {nz}x{ny}x{nx} voxels of {} bytes",
                self.out.len(),
                self.itemsize
            )));
        }
        let extent = [nx as u64, ny as u64, nz as u64];
        for a in 0..3 {
            let [lo, hi] = self.bbox[a];
            let end = self.origin[a].checked_add(extent[a]);
            if lo >= hi || lo < self.origin[a] || end.is_none_or(|end| hi > end) {
                return Err(format(format!(
                    "the block {:?} is not inside the array at {:?} of {:?} voxels",
                    self.bbox, self.origin, extent
                )));
            }
            if self.chunk[a] == 0 {
                return Err(format("a chunk size is 0"));
            }
        }
        self.chunk_bytes().map(|_| ())
    }

    /// The bytes of one decoded chunk, refused past [`MAX_CHUNK`] (the
    /// scratch buffer is allocated before any frame arrives).
    fn chunk_bytes(&self) -> Result<usize, StreamError> {
        let n = self
            .chunk
            .iter()
            .try_fold(self.itemsize as u64, |n, &c| n.checked_mul(c));
        match n {
            Some(n) if n <= MAX_CHUNK => Ok(n as usize),
            _ => Err(format(format!(
                "a chunk of {:?} voxels of {} bytes is larger than {MAX_CHUNK} bytes",
                self.chunk, self.itemsize
            ))),
        }
    }

    /// Copies the part of a decoded chunk at grid index `g` that lies
    /// inside the box into the array.
    fn place(&mut self, g: [u64; 3], chunk: &[u8]) {
        let c = self.chunk;
        let start = [g[0] * c[0], g[1] * c[1], g[2] * c[2]];
        let lo: [u64; 3] = std::array::from_fn(|a| start[a].max(self.bbox[a][0]));
        let hi: [u64; 3] = std::array::from_fn(|a| (start[a] + c[a]).min(self.bbox[a][1]));
        if (0..3).any(|a| lo[a] >= hi[a]) {
            return;
        }
        let s = self.itemsize;
        let [_, ny, nx] = self.shape;
        let (cx, cy) = (c[0] as usize, c[1] as usize);
        let row = (hi[0] - lo[0]) as usize * s;
        let (sx, dx) = (
            (lo[0] - start[0]) as usize,
            (lo[0] - self.origin[0]) as usize,
        );
        for z in lo[2]..hi[2] {
            let (sz, dz) = ((z - start[2]) as usize, (z - self.origin[2]) as usize);
            for y in lo[1]..hi[1] {
                let (sy, dy) = ((y - start[1]) as usize, (y - self.origin[1]) as usize);
                let from = ((sz * cy + sy) * cx + sx) * s;
                let to = ((dz * ny + dy) * nx + dx) * s;
                self.out[to..to + row].copy_from_slice(&chunk[from..from + row]);
            }
        }
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Decompresses one Blosc frame into `dst`, which must be exactly the size
/// the frame declares.
fn blosc_into(frame: &[u8], dst: &mut [u8]) -> Result<(), StreamError> {
    if frame.len() < BLOSC_HEADER {
        return Err(format(format!(
            "a chunk of {} bytes is not a Blosc frame",
            frame.len()
        )));
    }
    let mut declared = 0usize;
    // SAFETY: c-blosc reads at most `frame.len()` bytes and writes one usize.
    let rc = unsafe {
        blosc_src::blosc_cbuffer_validate(frame.as_ptr().cast(), frame.len(), &raw mut declared)
    };
    if rc != 0 {
        return Err(format("a chunk is not a valid Blosc frame"));
    }
    if declared != dst.len() {
        return Err(format(format!(
            "a chunk decodes to {declared} bytes, not the chunk's {}",
            dst.len()
        )));
    }
    // SAFETY: the frame was validated for its length and declares exactly
    // `dst.len()` bytes, the size passed.
    let n = unsafe {
        blosc_src::blosc_decompress_ctx(
            frame.as_ptr().cast(),
            dst.as_mut_ptr().cast(),
            dst.len(),
            1,
        )
    };
    if n < 0 || n as usize != dst.len() {
        return Err(format(format!(
            "a chunk failed to decode (c-blosc code {n})"
        )));
    }
    Ok(())
}

/// Reads a whole chunk stream from `r` into `t`; returns the records read.
/// A stream of another version, cut short, or whose trailer disagrees with
/// the records received is an error (the array may then hold part of it).
pub fn decode_stream<R: Read>(r: &mut R, t: &mut Target<'_>) -> Result<u64, StreamError> {
    t.check()?;
    let mut head = [0u8; 16];
    r.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(format("not a chunk stream"));
    }
    let version = u32_at(&head, 8);
    if version != VERSION {
        return Err(format(format!(
            "chunk stream version {version}; this client reads version {VERSION}"
        )));
    }
    let n = u32_at(&head, 12) as usize;
    if n > MAX_HEADER {
        return Err(format(format!("a chunk stream header of {n} bytes")));
    }
    // The JSON description: the request already says what the stream holds.
    io::copy(&mut r.by_ref().take(n as u64), &mut io::sink())?;
    let chunk_bytes = t.chunk_bytes()?;
    let mut scratch = vec![0u8; chunk_bytes];
    let mut frame = Vec::new();
    let mut records = 0u64;
    loop {
        r.read_exact(&mut head)?;
        let g = [u32_at(&head, 0), u32_at(&head, 4), u32_at(&head, 8)];
        let len = u32_at(&head, 12);
        if g == [END; 3] {
            if u64::from(len) != records {
                return Err(format(format!(
                    "the trailer counts {len} chunks, {records} came"
                )));
            }
            return Ok(records);
        }
        // A frame is never much larger than its chunk (c-blosc adds at most
        // a header and a few bytes a block to data it cannot compress).
        if len as usize > chunk_bytes + chunk_bytes / 8 + 1024 {
            return Err(format(format!(
                "a chunk frame of {len} bytes for a chunk of {chunk_bytes}"
            )));
        }
        frame.resize(len as usize, 0);
        r.read_exact(&mut frame)?;
        blosc_into(&frame, &mut scratch)?;
        t.place(g.map(u64::from), &scratch);
        records += 1;
    }
}

#[cfg(feature = "python")]
mod python {
    use std::io::Read;
    use std::time::Duration;

    use pyo3::buffer::PyBuffer;
    use pyo3::exceptions::{PyConnectionError, PyTimeoutError, PyValueError};
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    use super::http::Pool;
    use super::{StreamError, Target, decode_stream};

    /// The most of an error answer's body kept for the exception.
    const ERROR_BODY: u64 = 64 << 10;

    /// A raw pointer to the caller's array, used while the GIL is released
    /// (the `PyBuffer` that owns the memory outlives the call).
    struct Out(*mut u8, usize);
    // SAFETY: the buffer stays alive and exported for the whole call, and
    // only this thread writes to it.
    unsafe impl Send for Out {}

    /// What a request ended with: the status, its `Retry-After`, the body
    /// of an error answer, and the records decoded (for a 200).
    type Answer<B> = (u16, Option<String>, Option<B>, u64);

    /// Keep-alive HTTP connections to one server (safe to share between
    /// threads: each request takes its own connection from the pool).
    #[pyclass(module = "neurocube._native", frozen)]
    struct Transport {
        pool: Pool,
    }

    fn py_err(e: StreamError) -> PyErr {
        match e {
            StreamError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                PyTimeoutError::new_err(format!("the server did not answer in time ({e})"))
            }
            StreamError::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                PyValueError::new_err(e.to_string())
            }
            StreamError::Io(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
                PyConnectionError::new_err(StreamError::Io(e).to_string())
            }
            e => PyValueError::new_err(e.to_string()),
        }
    }

    #[pymethods]
    impl Transport {
        /// Connections to the server of `url` (http only), each read or
        /// write on them waiting at most `timeout` seconds.
        #[new]
        fn new(url: &str, timeout: f64) -> PyResult<Self> {
            let timeout = Duration::from_secs_f64(timeout.clamp(0.001, 1e9));
            let pool = Pool::new(url, timeout).map_err(|e| py_err(StreamError::Io(e)))?;
            Ok(Transport { pool })
        }

        /// GET `url` (headers as `(name, value)` pairs), a chunk stream, and
        /// decode it into `out` (a writable, C-contiguous buffer of
        /// `shape` = (z, y, x) voxels of `itemsize` bytes whose first voxel
        /// is `origin` = (x, y, z)), keeping the voxels inside `bbox`
        /// ((x0, x1), (y0, y1), (z0, z1)) of chunks of `chunk` = (cx, cy,
        /// cz). Returns `(status, retry_after, error_body, records)`: for a
        /// status other than 200 nothing is written and the body is
        /// returned. Raises ValueError for a stream cut short or malformed,
        /// ConnectionError or TimeoutError when the transport fails.
        #[allow(clippy::too_many_arguments)]
        fn chunks_into(
            &self,
            py: Python<'_>,
            url: &str,
            headers: Vec<(String, String)>,
            out: &Bound<'_, PyAny>,
            shape: (usize, usize, usize),
            itemsize: usize,
            origin: (u64, u64, u64),
            bbox: ((u64, u64), (u64, u64), (u64, u64)),
            chunk: (u64, u64, u64),
        ) -> PyResult<Answer<Py<PyBytes>>> {
            let buffer = PyBuffer::<u8>::get(out)?;
            if buffer.readonly() || !buffer.is_c_contiguous() {
                return Err(PyValueError::new_err(
                    "the target must be a writable, C-contiguous byte buffer",
                ));
            }
            let ptr = Out(buffer.buf_ptr().cast::<u8>(), buffer.len_bytes());
            let pool = &self.pool;
            let result: Result<Answer<Vec<u8>>, StreamError> = py.detach(move || {
                let ptr = ptr;
                let resp = pool.get(url, &headers)?;
                let status = resp.status;
                let retry_after = resp.header("retry-after").map(str::to_owned);
                let mut body = resp.body;
                if status != 200 {
                    let mut text = Vec::new();
                    (&mut body).take(ERROR_BODY).read_to_end(&mut text)?;
                    return Ok((status, retry_after, Some(text), 0));
                }
                // SAFETY: `buffer` holds the exported, writable memory of
                // `ptr.1` bytes for the whole call; nothing else writes it.
                let out = unsafe { std::slice::from_raw_parts_mut(ptr.0, ptr.1) };
                let mut target = Target {
                    out,
                    shape: [shape.0, shape.1, shape.2],
                    itemsize,
                    origin: [origin.0, origin.1, origin.2],
                    bbox: [
                        [bbox.0.0, bbox.0.1],
                        [bbox.1.0, bbox.1.1],
                        [bbox.2.0, bbox.2.1],
                    ],
                    chunk: [chunk.0, chunk.1, chunk.2],
                };
                let records = decode_stream(&mut body, &mut target)?;
                // The end of the body (nothing follows the trailer from our
                // server) returns the connection to the pool.
                if body.read(&mut [0u8; 1])? != 0 {
                    return Err(StreamError::Format(
                        "bytes after the chunk stream's trailer".into(),
                    ));
                }
                Ok((status, None, None, records))
            });
            drop(buffer);
            let (status, retry_after, body, records) = result.map_err(py_err)?;
            let body = body.map(|b| PyBytes::new(py, &b).unbind());
            Ok((status, retry_after, body, records))
        }
    }

    /// The module `neurocube._native`.
    #[pymodule]
    fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_class::<Transport>()?;
        m.add("STREAM_VERSION", super::VERSION)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(src: &[u8], typesize: usize) -> Vec<u8> {
        let mut dst = vec![0u8; src.len() + BLOSC_HEADER + 64];
        let lz4 = c"lz4";
        // SAFETY: dst has room for the worst case (src + header + overhead).
        let n = unsafe {
            blosc_src::blosc_compress_ctx(
                5,
                1,
                typesize,
                src.len(),
                src.as_ptr().cast(),
                dst.as_mut_ptr().cast(),
                dst.len(),
                lz4.as_ptr(),
                0,
                1,
            )
        };
        assert!(n > 0, "blosc_compress_ctx failed: {n}");
        dst.truncate(n as usize);
        dst
    }

    fn stream(records: &[([u32; 3], Vec<u8>)], count: u32) -> Vec<u8> {
        let json = br#"{"version":1}"#;
        let mut s = MAGIC.to_vec();
        s.extend(VERSION.to_le_bytes());
        s.extend((json.len() as u32).to_le_bytes());
        s.extend(json);
        for (g, frame) in records {
            for v in g {
                s.extend(v.to_le_bytes());
            }
            s.extend((frame.len() as u32).to_le_bytes());
            s.extend(frame);
        }
        s.extend([0xFF; 12]);
        s.extend(count.to_le_bytes());
        s
    }

    /// The voxel value of a level voxel: different everywhere, per byte too.
    fn value(x: u64, y: u64, z: u64) -> u16 {
        (x * 7 + y * 131 + z * 1031) as u16
    }

    /// A 2x2x2 grid of 8x4x2 uint16 chunks, one of them never written;
    /// a box crossing every chunk boundary reads the right voxels, zeros
    /// where the missing chunk lies.
    #[test]
    fn decodes_an_unaligned_box_with_a_missing_chunk() {
        let c = [8u64, 4, 2];
        let mut records = Vec::new();
        for gz in 0..2u32 {
            for gy in 0..2u32 {
                for gx in 0..2u32 {
                    if [gx, gy, gz] == [1, 0, 1] {
                        continue;
                    }
                    let mut voxels = Vec::new();
                    for z in 0..c[2] {
                        for y in 0..c[1] {
                            for x in 0..c[0] {
                                let v = value(
                                    u64::from(gx) * c[0] + x,
                                    u64::from(gy) * c[1] + y,
                                    u64::from(gz) * c[2] + z,
                                );
                                voxels.extend(v.to_le_bytes());
                            }
                        }
                    }
                    records.push(([gx, gy, gz], compress(&voxels, 2)));
                }
            }
        }
        let bytes = stream(&records, 7);
        // The array is larger than the box: voxels outside it stay as they were.
        let origin = [2u64, 1, 0];
        let shape = [4usize, 7, 14];
        let bbox = [[3u64, 13], [2, 7], [1, 4]];
        let mut out = vec![0xEEu8; shape.iter().product::<usize>() * 2];
        let mut t = Target {
            out: &mut out,
            shape,
            itemsize: 2,
            origin,
            bbox,
            chunk: c,
        };
        let n = decode_stream(&mut bytes.as_slice(), &mut t).unwrap();
        assert_eq!(n, 7);
        for z in 0..shape[0] as u64 {
            for y in 0..shape[1] as u64 {
                for x in 0..shape[2] as u64 {
                    let (lx, ly, lz) = (x + origin[0], y + origin[1], z + origin[2]);
                    let i = ((z as usize * shape[1] + y as usize) * shape[2] + x as usize) * 2;
                    let got = u16::from_le_bytes([out[i], out[i + 1]]);
                    let inside = (bbox[0][0]..bbox[0][1]).contains(&lx)
                        && (bbox[1][0]..bbox[1][1]).contains(&ly)
                        && (bbox[2][0]..bbox[2][1]).contains(&lz);
                    let missing = lx / c[0] == 1 && ly / c[1] == 0 && lz / c[2] == 1;
                    // Outside the box, and where the chunk was never
                    // sent, the caller's bytes stay.
                    let want = if inside && !missing {
                        value(lx, ly, lz)
                    } else {
                        0xEEEE
                    };
                    assert_eq!(got, want, "voxel ({lx}, {ly}, {lz})");
                }
            }
        }
    }

    fn target(out: &mut [u8]) -> Target<'_> {
        Target {
            out,
            shape: [2, 4, 8],
            itemsize: 1,
            origin: [0, 0, 0],
            bbox: [[0, 8], [0, 4], [0, 2]],
            chunk: [8, 4, 2],
        }
    }

    #[test]
    fn refuses_cut_wrong_and_miscounted_streams() {
        let frame = compress(&[5u8; 64], 1);
        let whole = stream(&[([0, 0, 0], frame.clone())], 1);
        let mut out = vec![0u8; 64];
        let msg = |bytes: &[u8], out: &mut [u8]| {
            decode_stream(&mut &bytes[..], &mut target(out))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            msg(&whole[..whole.len() - 3], &mut out),
            "the chunk stream was cut short"
        );
        assert_eq!(
            msg(&stream(&[([0, 0, 0], frame.clone())], 2), &mut out),
            "the trailer counts 2 chunks, 1 came"
        );
        let mut v2 = whole.clone();
        v2[8] = 2;
        assert_eq!(
            msg(&v2, &mut out),
            "chunk stream version 2; this client reads version 1"
        );
        assert_eq!(
            msg(b"HTTP/1.1 200 OK\r\n\r\n", &mut out),
            "not a chunk stream"
        );
        // A frame of another chunk size, and bytes that are not Blosc.
        let small = compress(&[5u8; 32], 1);
        assert_eq!(
            msg(&stream(&[([0, 0, 0], small)], 1), &mut out),
            "a chunk decodes to 32 bytes, not the chunk's 64"
        );
        assert_eq!(
            msg(&stream(&[([0, 0, 0], vec![1u8; 40])], 1), &mut out),
            "a chunk is not a valid Blosc frame"
        );
        // The whole stream decodes.
        assert_eq!(
            decode_stream(&mut &whole[..], &mut target(&mut out)).unwrap(),
            1
        );
        assert_eq!(out, vec![5u8; 64]);
    }

    #[test]
    fn refuses_a_box_outside_the_array() {
        let mut out = vec![0u8; 64];
        let mut t = target(&mut out);
        t.bbox = [[0, 9], [0, 4], [0, 2]];
        let e = decode_stream(&mut &b""[..], &mut t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not inside the array"), "{e}");
        let mut t = target(&mut out);
        t.chunk = [1 << 40, 1 << 40, 1 << 40];
        let e = decode_stream(&mut &b""[..], &mut t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is larger than 2147483648 bytes"), "{e}");
        let mut short = vec![0u8; 63];
        let e = decode_stream(&mut &b""[..], &mut target(&mut short))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the array holds 63 bytes, not 2x4x8 voxels of 1 bytes");
    }
}
