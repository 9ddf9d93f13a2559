//! The chunk stream, version 1: a box's stored chunks as they are (Blosc
//! frames, never decoded on the server), each with its grid coordinates,
//! for clients that decode in parallel themselves (docs/chunks.md).
//!
//! ```text
//! header   "NCCHUNKS" | u32 version (1) | u32 n | n bytes of JSON:
//!          {"version":1,"dtype":"uint8","chunk_size":[cx,cy,cz],
//!           "box":[[x0,x1],[y0,y1],[z0,z1]],"level":L,"codec":"blosc"}
//! record   u32 x | u32 y | u32 z (the chunk's grid index: it holds voxels
//!          [x·cx, (x+1)·cx) × ... in C order (z, y, x)) | u32 n | n bytes,
//!          a Blosc frame of the whole chunk (cx·cy·cz voxels)
//! trailer  u32 0xFFFFFFFF three times | u32 number of records sent
//! ```
//!
//! All integers are little-endian. Chunks that were never written are not
//! sent: they hold zeros. The trailer tells a complete stream from a cut
//! one.

/// A chunk stream that does not decode: what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// The stream's first bytes.
pub const MAGIC: &[u8; 8] = b"NCCHUNKS";
/// The framing version this code writes and reads.
pub const VERSION: u32 = 1;
/// The grid index that marks the trailer.
pub const END: u32 = u32::MAX;
/// The MIME type of a chunk stream.
pub const CONTENT_TYPE: &str = "application/x-neurocube-chunks";

/// The header: magic, version, and the JSON description.
#[must_use]
pub fn header(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(json);
    out
}

/// A record's head (its payload follows it).
#[must_use]
pub fn record_head(index: [u64; 3], len: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, v) in index.iter().enumerate() {
        let v = u32::try_from(*v).unwrap_or(END - 1);
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out[12..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out
}

/// The trailer, with the number of records sent.
#[must_use]
pub fn trailer(records: u64) -> [u8; 16] {
    let mut out = [0xFFu8; 16];
    out[12..].copy_from_slice(&u32::try_from(records).unwrap_or(u32::MAX).to_le_bytes());
    out
}

/// A chunk stream read back: the JSON header and the records.
#[derive(Debug)]
pub struct Decoded {
    /// The header's JSON text.
    pub header: String,
    /// (grid index, Blosc frame) of each record, in order.
    pub records: Vec<([u32; 3], Vec<u8>)>,
}

fn bad(reason: impl Into<String>) -> CodecError {
    CodecError(reason.into())
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, CodecError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad(format!("chunk stream cut at byte {at}")))
}

/// Read a whole chunk stream (for tests and small clients); a stream
/// without its trailer, or with a count that does not match, is an error.
pub fn decode(b: &[u8]) -> Result<Decoded, CodecError> {
    if b.get(..8) != Some(&MAGIC[..]) {
        return Err(bad("not a chunk stream: it does not start with NCCHUNKS"));
    }
    let version = u32_at(b, 8)?;
    if version != VERSION {
        return Err(bad(format!(
            "chunk stream version {version}: this reader knows {VERSION}"
        )));
    }
    let n = u32_at(b, 12)? as usize;
    let header = b
        .get(16..16 + n)
        .ok_or_else(|| bad("chunk stream cut inside its header"))?;
    let header = String::from_utf8(header.to_vec()).map_err(|_| bad("header is not UTF-8"))?;
    let mut at = 16 + n;
    let mut records = Vec::new();
    loop {
        let idx = [u32_at(b, at)?, u32_at(b, at + 4)?, u32_at(b, at + 8)?];
        let len = u32_at(b, at + 12)? as usize;
        at += 16;
        if idx == [END; 3] {
            if len != records.len() {
                return Err(bad(format!(
                    "trailer counts {len} records, the stream has {}",
                    records.len()
                )));
            }
            if at != b.len() {
                return Err(bad("bytes after the trailer"));
            }
            return Ok(Decoded { header, records });
        }
        let payload = b
            .get(at..at + len)
            .ok_or_else(|| bad(format!("chunk stream cut inside chunk {idx:?}")))?;
        records.push((idx, payload.to_vec()));
        at += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut s = header(br#"{"version":1}"#);
        s.extend_from_slice(&record_head([1, 2, 3], 4));
        s.extend_from_slice(b"abcd");
        s.extend_from_slice(&record_head([0, 0, 7], 0));
        s.extend_from_slice(&trailer(2));
        let d = decode(&s).unwrap();
        assert_eq!(d.header, r#"{"version":1}"#);
        assert_eq!(
            d.records,
            vec![([1, 2, 3], b"abcd".to_vec()), ([0, 0, 7], vec![])]
        );
        // Cut anywhere before the end: an error, never a short answer.
        for cut in [5, 20, 30, s.len() - 1] {
            assert!(decode(&s[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = s.clone();
        let n = wrong.len();
        wrong[n - 4] = 3;
        assert!(decode(&wrong).unwrap_err().to_string().contains("counts 3"));
    }
}
