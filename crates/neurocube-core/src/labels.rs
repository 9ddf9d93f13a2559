//! Small label writes (the seed paper's NeuroBlaze): an object's voxels are
//! cut into per-chunk patches, each setting some voxels of one chunk to one
//! label. Patches are logged (a compact, versioned binary entry), merged in
//! memory, and applied to a decoded chunk when it is read or flushed.
//!
//! A patch is unconditional: conflict options (`preserve`, `exception`) and
//! deletions are resolved against the current labels before a patch is
//! made, so applying a sequence of patches twice gives what applying it
//! once gives, and replaying a log is safe.

use std::collections::BTreeMap;

use crate::geometry::{Box3, ChunkGrid, ChunkIndex};

/// Some voxels of one chunk, set to one label (0 clears them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelPatch {
    /// The label written.
    pub label: u64,
    /// Voxel offsets inside the chunk, C order (`(z * cy + y) * cx + x`).
    pub offsets: Vec<u32>,
}

/// Write a patch into a decoded chunk of `elem`-byte little-endian labels
/// (4: uint32, 8: uint64). Offsets past the chunk are ignored (a patch is
/// only ever made for its chunk's shape).
pub fn apply(chunk: &mut [u8], elem: usize, label: u64, offsets: &[u32]) {
    let bytes = label.to_le_bytes();
    let value = &bytes[..elem.min(8)];
    for &o in offsets {
        let at = o as usize * elem;
        if let Some(dst) = chunk.get_mut(at..at + elem) {
            dst.copy_from_slice(value);
        }
    }
}

/// [`apply`] for runs of offsets (see [`runs`]).
pub fn apply_runs(chunk: &mut [u8], elem: usize, label: u64, runs: &[(u32, u32)]) {
    let bytes = label.to_le_bytes();
    let value = &bytes[..elem.min(8)];
    for &(start, len) in runs {
        let from = (start as usize * elem).min(chunk.len());
        let to = ((start as usize + len as usize) * elem).min(chunk.len());
        for dst in chunk[from..to].chunks_exact_mut(elem) {
            dst.copy_from_slice(value);
        }
    }
}

/// The label at a voxel offset of a decoded chunk.
#[must_use]
pub fn label_at(chunk: &[u8], elem: usize, offset: u32) -> u64 {
    let at = offset as usize * elem;
    chunk.get(at..at + elem).map_or(0, label_of)
}

/// One little-endian label of 1 to 8 bytes.
#[must_use]
pub fn label_of(v: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = v.len().min(8);
    b[..n].copy_from_slice(&v[..n]);
    u64::from_le_bytes(b)
}

/// Offset of a voxel (absolute coordinates) inside its chunk.
#[must_use]
pub fn offset_in_chunk(grid: &ChunkGrid, v: [u64; 3]) -> (ChunkIndex, u32) {
    let c = grid.chunk;
    let idx = [v[0] / c[0], v[1] / c[1], v[2] / c[2]];
    let (x, y, z) = (v[0] % c[0], v[1] % c[1], v[2] % c[2]);
    (idx, ((z * c[1] + y) * c[0] + x) as u32)
}

/// The absolute coordinates of an offset inside a chunk.
#[must_use]
pub fn voxel_of(grid: &ChunkGrid, idx: ChunkIndex, offset: u32) -> [u64; 3] {
    let c = grid.chunk;
    let o = u64::from(offset);
    [
        idx[0] * c[0] + o % c[0],
        idx[1] * c[1] + (o / c[0]) % c[1],
        idx[2] * c[2] + o / (c[0] * c[1]),
    ]
}

/// Voxels grouped by chunk, each chunk's offsets sorted and without repeats.
#[must_use]
pub fn group_by_chunk(
    grid: &ChunkGrid,
    voxels: impl IntoIterator<Item = [u64; 3]>,
) -> BTreeMap<ChunkIndex, Vec<u32>> {
    let mut out: BTreeMap<ChunkIndex, Vec<u32>> = BTreeMap::new();
    for v in voxels {
        let (idx, o) = offset_in_chunk(grid, v);
        out.entry(idx).or_default().push(o);
    }
    for offsets in out.values_mut() {
        offsets.sort_unstable();
        offsets.dedup();
    }
    out
}

/// The smallest box holding every voxel (`None` for no voxels).
#[must_use]
pub fn bounding_box(voxels: &[[u64; 3]]) -> Option<Box3> {
    let first = voxels.first()?;
    let (mut lo, mut hi) = (*first, *first);
    for v in voxels {
        for a in 0..3 {
            lo[a] = lo[a].min(v[a]);
            hi[a] = hi[a].max(v[a]);
        }
    }
    Box3::new(lo, [hi[0] + 1, hi[1] + 1, hi[2] + 1]).ok()
}

/// One logged write: patches of chunks of one channel and level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Dataset name (to find the channel again when the log is replayed).
    pub dataset: String,
    /// Channel name.
    pub channel_name: String,
    /// Uid of the channel's chunks.
    pub channel: u64,
    /// Level.
    pub level: u8,
    /// Per chunk (its Morton code), the patches, in the order they apply.
    pub chunks: Vec<(u64, LabelPatch)>,
}

/// First byte of an encoded entry (its format version). Version 1 listed
/// every offset as a u32; version 2 lists runs of consecutive offsets as
/// varints (an 8 × 8 × 4 object in one chunk: 32 runs, about 100 bytes
/// with the entry's header, instead of 1.1 kB). Both are read.
const LOG_VERSION: u8 = 2;

/// Why a log entry cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("label log entry: {0}")]
pub struct LogError(pub &'static str);

impl LogEntry {
    /// The entry's bytes: version, dataset and channel names (u16 length
    /// each), channel uid, level, patch count (u32), then per patch its
    /// chunk and label (u64 each), its run count and its runs of
    /// consecutive offsets, each as (gap after the previous run's end,
    /// length − 1), varints (LEB128). Integers are little-endian. A patch's
    /// offsets are written sorted and without repeats (one label per
    /// patch: their order does not matter).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            18 + self.dataset.len()
                + self.channel_name.len()
                + self
                    .chunks
                    .iter()
                    .map(|(_, p)| 24 + p.offsets.len())
                    .sum::<usize>(),
        );
        b.push(LOG_VERSION);
        for name in [&self.dataset, &self.channel_name] {
            b.extend_from_slice(&(name.len() as u16).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        b.extend_from_slice(&self.channel.to_le_bytes());
        b.push(self.level);
        b.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        let mut sorted = Vec::new();
        for (code, p) in &self.chunks {
            b.extend_from_slice(&code.to_le_bytes());
            b.extend_from_slice(&p.label.to_le_bytes());
            let offsets = if p.offsets.windows(2).all(|w| w[0] < w[1]) {
                &p.offsets
            } else {
                sorted.clone_from(&p.offsets);
                sorted.sort_unstable();
                sorted.dedup();
                &sorted
            };
            let runs = runs(offsets.as_slice());
            varint(&mut b, runs.len() as u64);
            let mut end = 0u32;
            for (start, len) in runs {
                varint(&mut b, u64::from(start - end));
                varint(&mut b, u64::from(len - 1));
                end = start + len;
            }
        }
        b
    }

    /// Read an entry written by [`LogEntry::encode`] (either version).
    pub fn decode(b: &[u8]) -> Result<Self, LogError> {
        let mut r = Reader(b);
        let version = r.take(1)?[0];
        if version != 1 && version != 2 {
            return Err(LogError("unknown format version"));
        }
        let mut names = [String::new(), String::new()];
        for name in &mut names {
            let len = r.take(2)?;
            let len = u16::from_le_bytes([len[0], len[1]]) as usize;
            *name = String::from_utf8(r.take(len)?.to_vec())
                .map_err(|_| LogError("a name is not UTF-8"))?;
        }
        let [dataset, channel_name] = names;
        let channel = r.u64()?;
        let level = r.take(1)?[0];
        let n = r.u32()? as usize;
        let mut chunks = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let code = r.u64()?;
            let label = r.u64()?;
            let offsets = if version == 1 {
                let m = r.u32()? as usize;
                let raw = r.take(m.checked_mul(4).ok_or(LogError("offset count overflows"))?)?;
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                let m = r.varint()?;
                let mut offsets = Vec::new();
                let mut end = 0u64;
                let past = LogError("an offset lies past any chunk");
                for _ in 0..m {
                    let start = end.checked_add(r.varint()?).ok_or(past.clone())?;
                    let len = r.varint()?.checked_add(1).ok_or(past.clone())?;
                    end = start.checked_add(len).ok_or(past.clone())?;
                    if end > crate::meta::MAX_CHUNK_BYTES {
                        return Err(past);
                    }
                    offsets.extend(start as u32..=(end - 1) as u32);
                }
                offsets
            };
            chunks.push((code, LabelPatch { label, offsets }));
        }
        if !r.0.is_empty() {
            return Err(LogError("trailing bytes"));
        }
        Ok(Self {
            dataset,
            channel_name,
            channel,
            level,
            chunks,
        })
    }
}

/// Runs of consecutive offsets, as (first, length): the voxels of a
/// patch in a fraction of the memory (an 8 × 8 × 4 object is 32 runs).
/// Any list gives runs covering the same voxels; a sorted one gives the
/// fewest.
#[must_use]
pub fn runs(offsets: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &o in offsets {
        match out.last_mut() {
            Some((start, len)) if u64::from(*start) + u64::from(*len) == u64::from(o) => *len += 1,
            _ => out.push((o, 1)),
        }
    }
    out
}

/// Append `v` as an unsigned LEB128 varint.
fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        if self.0.len() < n {
            return Err(LogError("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, LogError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, LogError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, LogError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(LogError("a varint is too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_chunks() {
        let grid = ChunkGrid::new([128, 128, 16]).unwrap();
        for v in [[0, 0, 0], [127, 5, 15], [128, 129, 16], [1000, 77, 33]] {
            let (idx, o) = offset_in_chunk(&grid, v);
            assert_eq!(voxel_of(&grid, idx, o), v);
        }
        let g = group_by_chunk(&grid, [[130, 0, 0], [1, 2, 3], [1, 2, 3], [0, 0, 0]]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[&[0, 0, 0]], vec![0, (3 * 128 + 2) * 128 + 1]);
        assert_eq!(g[&[1, 0, 0]], vec![2]);
    }

    #[test]
    fn patches_write_little_endian_labels_and_later_ones_win() {
        let mut chunk = vec![0u8; 8 * 4];
        apply(&mut chunk, 8, 0x0102_0304_0506_0708, &[1, 3]);
        apply(&mut chunk, 8, 9, &[3]);
        assert_eq!(label_at(&chunk, 8, 1), 0x0102_0304_0506_0708);
        assert_eq!(label_at(&chunk, 8, 3), 9);
        assert_eq!(label_at(&chunk, 8, 0), 0);
        let mut small = vec![0u8; 4 * 4];
        apply(&mut small, 4, 7, &[2, 99]);
        assert_eq!(label_at(&small, 4, 2), 7);
        // Runs write what the offsets they stand for write.
        let offsets = [9, 1, 2, 3, 7, 8, 30, 31, 500];
        let r = runs(&offsets);
        assert_eq!(r, vec![(9, 1), (1, 3), (7, 2), (30, 2), (500, 1)]);
        let (mut a, mut b) = (vec![0u8; 4 * 32], vec![0u8; 4 * 32]);
        apply(&mut a, 4, 0xdead_beef, &offsets);
        apply_runs(&mut b, 4, 0xdead_beef, &r);
        assert_eq!(a, b);
    }

    #[test]
    fn log_entries_round_trip_and_refuse_damage() {
        let e = LogEntry {
            dataset: "kasthuri11".into(),
            channel_name: "annotation".into(),
            channel: 42,
            level: 0,
            chunks: vec![
                (
                    5,
                    LabelPatch {
                        label: 7,
                        offsets: vec![1, 2, 3],
                    },
                ),
                (
                    6,
                    LabelPatch {
                        label: 0,
                        offsets: vec![],
                    },
                ),
            ],
        };
        let b = e.encode();
        assert_eq!(LogEntry::decode(&b).unwrap(), e);
        assert!(LogEntry::decode(&b[..b.len() - 1]).is_err());
        let mut extra = b.clone();
        extra.push(0);
        assert!(LogEntry::decode(&extra).is_err());
        assert!(LogEntry::decode(&[2]).is_err());
        assert!(LogEntry::decode(&[3]).is_err());
    }

    #[test]
    fn log_entries_store_runs_and_read_both_versions() {
        // An 8 x 8 x 4 object in a 128 x 128 x 16 chunk: 32 runs of 8.
        let offsets: Vec<u32> = (0..4u32)
            .flat_map(|z| {
                (0..8u32).flat_map(move |y| (0..8u32).map(move |x| (z * 128 + y) * 128 + x + 300))
            })
            .collect();
        let mut e = LogEntry {
            dataset: "d".into(),
            channel_name: "c".into(),
            channel: 1,
            level: 0,
            chunks: vec![(
                9,
                LabelPatch {
                    label: u64::MAX,
                    offsets: offsets.clone(),
                },
            )],
        };
        let b = e.encode();
        assert!(b.len() < 120, "{} bytes", b.len());
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        e.chunks[0].1.offsets = sorted.clone();
        assert_eq!(LogEntry::decode(&b).unwrap(), e);
        // Unsorted offsets with repeats are one set of voxels: stored sorted.
        e.chunks[0].1.offsets = vec![7, 3, 7, 4, 1 << 20];
        let d = LogEntry::decode(&e.encode()).unwrap();
        assert_eq!(d.chunks[0].1.offsets, vec![3, 4, 7, 1 << 20]);
        // Version 1 (every offset a u32), as an earlier build logged it.
        let mut v1 = vec![1u8, 1, 0, b'd', 1, 0, b'c'];
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.push(0);
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&9u64.to_le_bytes());
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(&10u32.to_le_bytes());
        v1.extend_from_slice(&12u32.to_le_bytes());
        let d = LogEntry::decode(&v1).unwrap();
        assert_eq!(
            d.chunks,
            vec![(
                9,
                LabelPatch {
                    label: 5,
                    offsets: vec![10, 12]
                }
            )]
        );
        // A run past any chunk, or one overflowing, is damage, not a huge
        // allocation or a panic.
        let mut bad = vec![2u8, 1, 0, b'd', 1, 0, b'c'];
        bad.extend_from_slice(&1u64.to_le_bytes());
        bad.push(0);
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.extend_from_slice(&9u64.to_le_bytes());
        bad.extend_from_slice(&5u64.to_le_bytes());
        bad.extend_from_slice(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            LogEntry::decode(&bad),
            Err(LogError("an offset lies past any chunk"))
        );
        // Two runs whose gaps are near 2^64: their sum overflows.
        let mut huge = bad[..bad.len() - 7].to_vec();
        huge.push(2);
        for _ in 0..2 {
            huge.extend_from_slice(&[0xff; 9]);
            huge.push(0x01);
            huge.push(0);
        }
        assert_eq!(
            LogEntry::decode(&huge),
            Err(LogError("an offset lies past any chunk"))
        );
    }

    #[test]
    fn bounding_boxes_are_inclusive_of_the_last_voxel() {
        let b = bounding_box(&[[3, 4, 5], [1, 9, 5]]).unwrap();
        assert_eq!((b.start, b.end), ([1, 4, 5], [4, 10, 6]));
        assert!(bounding_box(&[]).is_none());
    }
}
