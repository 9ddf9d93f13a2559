//! Row keys, built in exactly one place.
//!
//! Chunks: partition = channel uid (u64) ‖ level (u8) ‖ Morton code of the
//! 4×4×4-chunk super-block (u64); sort = the chunk's Morton code (u64); all
//! big-endian so byte order is numeric order. Partitioning by super-block
//! (never by level alone, ndstore's mistake) spreads a level over a
//! Cassandra ring while keeping neighbouring chunks together.

use neurocube_core::ChunkIndex;
use neurocube_core::morton;
use neurocube_store::Key;

/// Chunks per super-block edge is `2^SUPER_BLOCK_BITS`.
pub const SUPER_BLOCK_BITS: u32 = 2;

/// Key of a chunk.
#[must_use]
pub fn chunk(uid: u64, level: u8, idx: ChunkIndex) -> Key {
    let code = morton::encode(idx);
    Key::new(
        chunk_partition(uid, level, morton::super_block(code, SUPER_BLOCK_BITS)),
        code.to_be_bytes().to_vec(),
    )
}

/// Partition key of a super-block.
#[must_use]
pub fn chunk_partition(uid: u64, level: u8, super_block: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(17);
    p.extend_from_slice(&uid.to_be_bytes());
    p.push(level);
    p.extend_from_slice(&super_block.to_be_bytes());
    p
}

/// Meta partition holding all datasets.
pub const DATASETS: &[u8] = b"datasets";

/// Meta partition holding the channels of a dataset.
#[must_use]
pub fn channels_partition(dataset: &str) -> Vec<u8> {
    format!("channels/{dataset}").into_bytes()
}

/// Key of a dataset record.
#[must_use]
pub fn dataset(name: &str) -> Key {
    Key::new(DATASETS.to_vec(), name.as_bytes().to_vec())
}

/// Key of a channel record.
#[must_use]
pub fn channel(dataset: &str, name: &str) -> Key {
    Key::new(channels_partition(dataset), name.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_share_a_partition() {
        let a = chunk(7, 0, [4, 4, 4]);
        let b = chunk(7, 0, [7, 5, 6]);
        let c = chunk(7, 0, [8, 4, 4]);
        assert_eq!(a.partition, b.partition);
        assert_ne!(a.partition, c.partition);
        assert_ne!(chunk(7, 1, [4, 4, 4]).partition, a.partition);
        assert_ne!(chunk(8, 0, [4, 4, 4]).partition, a.partition);
        assert_eq!(a.partition.len(), 17);
    }
}
