//! A connectivity graph as a scipy.sparse CSR matrix in `.npz` form.
//!
//! The archive holds exactly the members `scipy.sparse.save_npz(f, m,
//! compressed=False)` writes for a `csr_matrix` (`indices`, `indptr`,
//! `format`, `shape`, `data`, in that order) and then `node_ids`, so both
//! `scipy.sparse.load_npz` and `numpy.load` read it. Entries are stored
//! (uncompressed) with their CRC-32 and a fixed timestamp (1980-01-01), so
//! the same graph always gives the same bytes. The zip is written without
//! zip64: an archive that would exceed 4 GiB is refused with
//! [`GraphEncodeError::TooLarge`] rather than written corrupt.

use super::GraphEncodeError;
use crate::dtype::DType;

/// The integer type of `indices` and `indptr`: int32 unless the node or
/// cell count exceeds it, as scipy chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexType {
    I32,
    I64,
}

impl IndexType {
    fn for_size(nodes: usize, nnz: usize) -> IndexType {
        let max = i32::MAX as usize;
        if nodes > max || nnz > max {
            IndexType::I64
        } else {
            IndexType::I32
        }
    }

    fn descr(self) -> &'static str {
        match self {
            IndexType::I32 => "<i4",
            IndexType::I64 => "<i8",
        }
    }

    fn size(self) -> usize {
        match self {
            IndexType::I32 => 4,
            IndexType::I64 => 8,
        }
    }

    /// Append `v`, which is at most `max(nodes, nnz)` and so fits the type.
    fn push(self, out: &mut Vec<u8>, v: usize) {
        match self {
            IndexType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            IndexType::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
        }
    }
}

/// A square CSR adjacency matrix over `node_ids` (row = pre, column = post)
/// in scipy.sparse.save_npz's layout, loadable with scipy.sparse.load_npz;
/// the same file also holds `node_ids` (uint64), the node of each row/column.
/// `cells`: (row, col, value), sorted by (row, col), no duplicates, indices < node_ids.len().
///
/// Members: `indices.npy` and `indptr.npy` (`<i4`, or `<i8` past
/// `i32::MAX` nodes or cells), `format.npy` (`|S3` `b"csr"`, 0-d),
/// `shape.npy` (`<i8`, `[n, n]`), `data.npy` (`<i8`) and `node_ids.npy`
/// (`<u8`), each an npy v1.0 file.
///
/// # Errors
/// [`GraphEncodeError::CellOutOfRange`] or [`GraphEncodeError::CellsNotSorted`]
/// when `cells` break the rules above; [`GraphEncodeError::TooLarge`] when
/// the archive would exceed 4 GiB (it would need zip64).
pub fn csr_npz(node_ids: &[u64], cells: &[(u32, u32, i64)]) -> Result<Vec<u8>, GraphEncodeError> {
    let n = node_ids.len();
    check_cells(n, cells)?;
    let nnz = cells.len();
    let index = IndexType::for_size(n, nnz);
    let members: [(&'static str, Vec<u8>, usize); 6] = [
        (
            "indices.npy",
            npy_header(index.descr(), &[nnz as u64]),
            nnz * index.size(),
        ),
        (
            "indptr.npy",
            npy_header(index.descr(), &[n as u64 + 1]),
            (n + 1) * index.size(),
        ),
        ("format.npy", npy_header("|S3", &[]), 3),
        ("shape.npy", npy_header("<i8", &[2]), 16),
        ("data.npy", npy_header("<i8", &[nnz as u64]), nnz * 8),
        (
            "node_ids.npy",
            crate::npy::header(DType::Uint64, &[n as u64]),
            n * 8,
        ),
    ];
    let total: u64 = members
        .iter()
        .map(|(name, header, data)| {
            (LOCAL_HEADER + CENTRAL_HEADER + 2 * name.len() + header.len() + data) as u64
        })
        .sum::<u64>()
        + END_RECORD as u64;
    if total > u64::from(u32::MAX) {
        return Err(GraphEncodeError::TooLarge { bytes: total });
    }
    let mut zip = ZipWriter::with_capacity(total as usize);
    let [indices, indptr, format, shape, data, ids] = members;
    zip.member(indices.0, |out| {
        out.extend_from_slice(&indices.1);
        for &(_, col, _) in cells {
            index.push(out, col as usize);
        }
    })?;
    zip.member(indptr.0, |out| {
        out.extend_from_slice(&indptr.1);
        // indptr[r] = the number of cells in rows before r.
        let mut k = 0;
        for r in 0..=n {
            while k < nnz && (cells[k].0 as usize) < r {
                k += 1;
            }
            index.push(out, k);
        }
    })?;
    zip.member(format.0, |out| {
        out.extend_from_slice(&format.1);
        out.extend_from_slice(b"csr");
    })?;
    zip.member(shape.0, |out| {
        out.extend_from_slice(&shape.1);
        for _ in 0..2 {
            out.extend_from_slice(&(n as i64).to_le_bytes());
        }
    })?;
    zip.member(data.0, |out| {
        out.extend_from_slice(&data.1);
        for &(_, _, v) in cells {
            out.extend_from_slice(&v.to_le_bytes());
        }
    })?;
    zip.member(ids.0, |out| {
        out.extend_from_slice(&ids.1);
        for &id in node_ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    })?;
    zip.finish()
}

/// Cells must name nodes below `n` and be strictly increasing by (row, col).
fn check_cells(n: usize, cells: &[(u32, u32, i64)]) -> Result<(), GraphEncodeError> {
    let mut prev: Option<(u32, u32)> = None;
    for &(row, col, _) in cells {
        if row as usize >= n || col as usize >= n {
            return Err(GraphEncodeError::CellOutOfRange { row, col, nodes: n });
        }
        if let Some((prev_row, prev_col)) = prev
            && (prev_row, prev_col) >= (row, col)
        {
            return Err(GraphEncodeError::CellsNotSorted {
                row,
                col,
                prev_row,
                prev_col,
            });
        }
        prev = Some((row, col));
    }
    Ok(())
}

/// The npy v1.0 header of a C-order array of numpy type `descr` (e.g.
/// `<i4`, `|S3`) and `shape` (empty for a 0-d array): magic, version,
/// length, dict and the space padding that makes the header a multiple of
/// 64 bytes, as [`crate::npy::header`] writes it for volume types.
fn npy_header(descr: &str, shape: &[u64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // 10 bytes of preamble, the dict, padding spaces and a final '\n'.
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Size of a zip local file header before the name.
const LOCAL_HEADER: usize = 30;
/// Size of a zip central directory header before the name.
const CENTRAL_HEADER: usize = 46;
/// Size of the end of central directory record (no comment).
const END_RECORD: usize = 22;
/// DOS date of every entry: 1980-01-01 (day 1, month 1, year 1980 + 0).
const DOS_DATE: u16 = (1 << 5) | 1;
/// Version needed to extract: 2.0, what Python's zipfile writes.
const VERSION_NEEDED: u16 = 20;
/// Version made by: Unix (3), spec 2.0, so the mode in the external attributes counts.
const VERSION_MADE_BY: u16 = (3 << 8) | 20;
/// External attributes: a regular file, rw-r--r--.
const EXTERNAL_ATTRS: u32 = 0o100_644 << 16;

/// One written entry, for the central directory.
struct Entry {
    name: &'static str,
    crc: u32,
    size: u32,
    offset: u32,
}

/// A zip of stored (uncompressed) entries, written in one buffer.
struct ZipWriter {
    out: Vec<u8>,
    entries: Vec<Entry>,
}

fn too_large(bytes: usize) -> GraphEncodeError {
    GraphEncodeError::TooLarge {
        bytes: bytes as u64,
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

impl ZipWriter {
    fn with_capacity(bytes: usize) -> ZipWriter {
        ZipWriter {
            out: Vec::with_capacity(bytes),
            entries: Vec::new(),
        }
    }

    /// Add an entry whose content `write` appends; its CRC and sizes are
    /// filled into the local header afterwards.
    fn member(
        &mut self,
        name: &'static str,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), GraphEncodeError> {
        let offset = self.out.len();
        let out = &mut self.out;
        put32(out, 0x0403_4b50);
        put16(out, VERSION_NEEDED);
        put16(out, 0); // flags
        put16(out, 0); // method: stored
        put16(out, 0); // time
        put16(out, DOS_DATE);
        put32(out, 0); // crc, patched below
        put32(out, 0); // compressed size
        put32(out, 0); // uncompressed size
        put16(out, name.len() as u16);
        put16(out, 0); // extra field length
        out.extend_from_slice(name.as_bytes());
        let start = out.len();
        write(out);
        let crc = crc32fast::hash(&out[start..]);
        let size = u32::try_from(out.len() - start).map_err(|_| too_large(out.len()))?;
        out[offset + 14..offset + 18].copy_from_slice(&crc.to_le_bytes());
        out[offset + 18..offset + 22].copy_from_slice(&size.to_le_bytes());
        out[offset + 22..offset + 26].copy_from_slice(&size.to_le_bytes());
        let offset = u32::try_from(offset).map_err(|_| too_large(offset))?;
        self.entries.push(Entry {
            name,
            crc,
            size,
            offset,
        });
        Ok(())
    }

    /// Append the central directory and its end record.
    fn finish(mut self) -> Result<Vec<u8>, GraphEncodeError> {
        let out = &mut self.out;
        let cd_start = out.len();
        for e in &self.entries {
            put32(out, 0x0201_4b50);
            put16(out, VERSION_MADE_BY);
            put16(out, VERSION_NEEDED);
            put16(out, 0); // flags
            put16(out, 0); // method: stored
            put16(out, 0); // time
            put16(out, DOS_DATE);
            put32(out, e.crc);
            put32(out, e.size);
            put32(out, e.size);
            put16(out, e.name.len() as u16);
            put16(out, 0); // extra field length
            put16(out, 0); // comment length
            put16(out, 0); // disk number start
            put16(out, 0); // internal attributes
            put32(out, EXTERNAL_ATTRS);
            put32(out, e.offset);
            out.extend_from_slice(e.name.as_bytes());
        }
        let cd_size = out.len() - cd_start;
        let count = self.entries.len() as u16;
        put32(out, 0x0605_4b50);
        put16(out, 0); // this disk
        put16(out, 0); // disk of the central directory
        put16(out, count);
        put16(out, count);
        put32(
            out,
            u32::try_from(cd_size).map_err(|_| too_large(out.len()))?,
        );
        put32(
            out,
            u32::try_from(cd_start).map_err(|_| too_large(out.len()))?,
        );
        put16(out, 0); // comment length
        if out.len() > u32::MAX as usize {
            return Err(too_large(out.len()));
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Read a zip back through its central directory, checking every local
    /// header against it and every CRC; the members in order.
    fn unzip(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
        let end = zip.len() - END_RECORD;
        assert_eq!(u32_at(zip, end), 0x0605_4b50, "end of central directory");
        let count = u16_at(zip, end + 10) as usize;
        assert_eq!(u16_at(zip, end + 8) as usize, count);
        let cd_size = u32_at(zip, end + 12) as usize;
        let cd_start = u32_at(zip, end + 16) as usize;
        assert_eq!(cd_start + cd_size, end);
        assert_eq!(u16_at(zip, end + 20), 0, "no comment");
        let mut at = cd_start;
        let mut members = Vec::new();
        let mut next_local = 0;
        for _ in 0..count {
            assert_eq!(u32_at(zip, at), 0x0201_4b50, "central header");
            assert_eq!(u16_at(zip, at + 10), 0, "stored");
            let crc = u32_at(zip, at + 16);
            let csize = u32_at(zip, at + 20) as usize;
            let usize_ = u32_at(zip, at + 24) as usize;
            assert_eq!(csize, usize_);
            let nlen = u16_at(zip, at + 28) as usize;
            assert_eq!(u16_at(zip, at + 30), 0);
            assert_eq!(u16_at(zip, at + 32), 0);
            let offset = u32_at(zip, at + 42) as usize;
            let name = std::str::from_utf8(&zip[at + 46..at + 46 + nlen]).unwrap();
            at += CENTRAL_HEADER + nlen;

            assert_eq!(offset, next_local, "entries are contiguous");
            assert_eq!(u32_at(zip, offset), 0x0403_4b50, "local header");
            assert_eq!(u16_at(zip, offset + 8), 0, "stored");
            assert_eq!(u32_at(zip, offset + 14), crc);
            assert_eq!(u32_at(zip, offset + 18) as usize, csize);
            assert_eq!(u32_at(zip, offset + 22) as usize, csize);
            assert_eq!(u16_at(zip, offset + 26) as usize, nlen);
            assert_eq!(u16_at(zip, offset + 28), 0);
            assert_eq!(&zip[offset + 30..offset + 30 + nlen], name.as_bytes());
            let data_start = offset + LOCAL_HEADER + nlen;
            let data = &zip[data_start..data_start + csize];
            assert_eq!(crc32fast::hash(data), crc, "CRC of {name}");
            next_local = data_start + csize;
            members.push((name.to_string(), data.to_vec()));
        }
        assert_eq!(at, end);
        assert_eq!(next_local, cd_start);
        members
    }

    /// An npy member's header dict (unpadded) and its data.
    fn npy_parts(npy: &[u8]) -> (String, &[u8]) {
        assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
        let len = u16_at(npy, 8) as usize;
        assert_eq!((10 + len) % 64, 0, "header padded to 64 bytes");
        assert_eq!(npy[10 + len - 1], b'\n');
        let text = std::str::from_utf8(&npy[10..10 + len - 1]).unwrap();
        (text.trim_end_matches(' ').to_string(), &npy[10 + len..])
    }

    fn dict(descr: &str, shape: &str) -> String {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
    }

    fn ints<const K: usize>(data: &[u8]) -> Vec<i64> {
        data.chunks_exact(K)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..K].copy_from_slice(c);
                i64::from_le_bytes(b)
            })
            .collect()
    }

    #[test]
    fn members_are_what_scipy_writes() {
        // [[0, 5, 0], [0, 0, 0], [7, 0, -2]] over nodes 11, 22, 33.
        let ids = [11, 22, u64::MAX];
        let cells = [(0, 1, 5), (2, 0, 7), (2, 2, -2)];
        let zip = csr_npz(&ids, &cells).unwrap();
        let members = unzip(&zip);
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "indices.npy",
                "indptr.npy",
                "format.npy",
                "shape.npy",
                "data.npy",
                "node_ids.npy"
            ]
        );
        let parts: Vec<(String, &[u8])> = members.iter().map(|(_, d)| npy_parts(d)).collect();
        assert_eq!(parts[0].0, dict("<i4", "(3,)"));
        assert_eq!(ints::<4>(parts[0].1), [1, 0, 2]);
        assert_eq!(parts[1].0, dict("<i4", "(4,)"));
        assert_eq!(ints::<4>(parts[1].1), [0, 1, 1, 3]);
        assert_eq!(parts[2].0, dict("|S3", "()"));
        assert_eq!(parts[2].1, b"csr");
        assert_eq!(parts[3].0, dict("<i8", "(2,)"));
        assert_eq!(ints::<8>(parts[3].1), [3, 3]);
        assert_eq!(parts[4].0, dict("<i8", "(3,)"));
        assert_eq!(ints::<8>(parts[4].1), [5, 7, -2]);
        assert_eq!(parts[5].0, dict("<u8", "(3,)"));
        let got: Vec<u64> = parts[5]
            .1
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, ids);
        // The crate's own npy reader agrees on node_ids.
        let (h, off) = crate::npy::parse(&members[5].1).unwrap();
        assert_eq!((h.dtype, h.shape), (DType::Uint64, vec![3]));
        assert_eq!(members[5].1.len() - off, 24);
        // Deterministic.
        assert_eq!(csr_npz(&ids, &cells).unwrap(), zip);
    }

    #[test]
    fn empty_graph() {
        let zip = csr_npz(&[], &[]).unwrap();
        let members = unzip(&zip);
        assert_eq!(members.len(), 6);
        let parts: Vec<(String, &[u8])> = members.iter().map(|(_, d)| npy_parts(d)).collect();
        assert_eq!(parts[0], (dict("<i4", "(0,)"), &[][..]));
        assert_eq!(parts[1].0, dict("<i4", "(1,)"));
        assert_eq!(ints::<4>(parts[1].1), [0]);
        assert_eq!(ints::<8>(parts[3].1), [0, 0]);
        assert_eq!(parts[4], (dict("<i8", "(0,)"), &[][..]));
        assert_eq!(parts[5], (dict("<u8", "(0,)"), &[][..]));
    }

    #[test]
    fn nodes_without_cells_and_trailing_empty_rows() {
        let zip = csr_npz(&[1, 2, 3, 4], &[(1, 3, 9)]).unwrap();
        let members = unzip(&zip);
        assert_eq!(ints::<4>(npy_parts(&members[1].1).1), [0, 0, 1, 1, 1]);
        assert_eq!(ints::<4>(npy_parts(&members[0].1).1), [3]);
    }

    #[test]
    fn bad_cells_are_refused() {
        assert_eq!(
            csr_npz(&[1, 2], &[(0, 2, 1)]),
            Err(GraphEncodeError::CellOutOfRange {
                row: 0,
                col: 2,
                nodes: 2
            })
        );
        assert!(matches!(
            csr_npz(&[], &[(0, 0, 1)]),
            Err(GraphEncodeError::CellOutOfRange { nodes: 0, .. })
        ));
        let unsorted = csr_npz(&[1, 2], &[(1, 0, 1), (0, 1, 1)]).unwrap_err();
        assert_eq!(
            unsorted,
            GraphEncodeError::CellsNotSorted {
                row: 0,
                col: 1,
                prev_row: 1,
                prev_col: 0
            }
        );
        assert!(unsorted.to_string().contains("sorted"));
        assert!(matches!(
            csr_npz(&[1, 2], &[(0, 1, 1), (0, 1, 2)]),
            Err(GraphEncodeError::CellsNotSorted { .. })
        ));
    }

    #[test]
    fn index_type_widens_like_scipy() {
        let max = i32::MAX as usize;
        assert_eq!(IndexType::for_size(max, max), IndexType::I32);
        assert_eq!(IndexType::for_size(max + 1, 0), IndexType::I64);
        assert_eq!(IndexType::for_size(3, max + 1), IndexType::I64);
        let mut out = Vec::new();
        IndexType::I64.push(&mut out, max + 1);
        assert_eq!(out, (max as i64 + 1).to_le_bytes());
    }

    #[test]
    fn npy_header_matches_the_volume_writer() {
        for t in DType::ALL {
            for shape in [&[][..], &[7], &[16, 128, 128]] {
                assert_eq!(
                    npy_header(t.npy_descr(), shape),
                    crate::npy::header(t, shape)
                );
            }
        }
        let long = npy_header("<i8", &[u64::MAX]);
        assert_eq!(long.len() % 64, 0);
        assert_eq!(npy_parts(&long).0, dict("<i8", &format!("({},)", u64::MAX)));
    }

    /// Writes a sample for checking with scipy:
    /// `cargo test -p neurocube-core graph::npz -- --ignored`, then
    /// `python3 -c "import scipy.sparse as s, numpy as np; m=s.load_npz('/tmp/neurocube_csr.npz'); print(m.toarray()); print(np.load('/tmp/neurocube_csr.npz')['node_ids'])"`.
    #[test]
    #[ignore = "writes /tmp/neurocube_csr.npz for a manual scipy check"]
    fn write_sample_for_scipy() {
        let ids = [864_691_135_000_001, 864_691_135_000_002, 7, u64::MAX];
        let cells = [(0, 1, 5), (0, 3, 1), (2, 0, 7), (2, 2, 12), (3, 1, 40_000)];
        let path = std::env::temp_dir().join("neurocube_csr.npz");
        std::fs::write(&path, csr_npz(&ids, &cells).unwrap()).unwrap();
        let empty = std::env::temp_dir().join("neurocube_csr_empty.npz");
        std::fs::write(&empty, csr_npz(&[], &[]).unwrap()).unwrap();
        println!("wrote {} and {}", path.display(), empty.display());
    }
}
