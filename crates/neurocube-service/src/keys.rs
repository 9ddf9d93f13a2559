//! Row keys, built in exactly one place.
//!
//! Numbers are big-endian so that byte order is numeric order. No key is
//! partitioned by a channel or a level alone (ndstore's Cassandra mistake):
//! a partition holds at most a super-block's worth of rows, or a bounded
//! list, so that a big write spreads over a cluster.
//!
//! | table | partition | sort | value |
//! |---|---|---|---|
//! | chunks | uid ‖ level ‖ super-block | Morton code | Blosc frame |
//! | meta | `datasets` | name | dataset JSON |
//! | meta | `channels/{ds}` | name | channel JSON |
//! | meta | `stale/` uid ‖ level ‖ super-block | Morton code | generation |
//! | meta | `stale-index/` uid ‖ level ‖ shard | super-block | empty |
//! | meta | `stale-channels` | uid (hex) | channel to downsample |
//! | meta | `purge` | uid (hex) | deleted channel to purge |
//! | meta | `demo` | `complete/{extent}` | marker of a finished demo |
//! | meta | `tables/{ds}` | name | annotation table JSON |
//! | meta | `table-ids` | uid | next free row id |
//! | meta | `table-count/` uid | writer instance | rows written, invalidated |
//! | meta | `versions/{ds}` | version | materialized version JSON |
//! | rows | uid ‖ version ‖ id block | id | row |
//! | row_index | uid ‖ version ‖ column ‖ kind ‖ key | id | row (versions) or empty (live) |
//! | rows | `label-log/{instance}/` epoch | sequence | logged label write |
//! | meta | `label-log` | instance | first epoch not yet flushed |
//! | row_index | `object-chunks/` uid ‖ id block | id ‖ level ‖ Morton code | empty |
//! | jobs | `job/` bucket | id | job JSON |
//! | jobs | `job-buckets` | bucket | empty |
//! | jobs | `active`, `dedupe`, `extkey` | id or key | id or key |
//! | jobs | `task/{id}` | `{phase:04}/{name}` | task JSON |

use bytes::Bytes;
use neurocube_core::ChunkIndex;
use neurocube_core::morton;
use neurocube_store::{Key, SortRange};

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

fn uid_level_block(prefix: &[u8], uid: u64, level: u8, block: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(prefix.len() + 17);
    p.extend_from_slice(prefix);
    p.extend_from_slice(&uid.to_be_bytes());
    p.push(level);
    p.extend_from_slice(&block.to_be_bytes());
    p
}

/// Length of every chunk partition key (uid, level, super-block); the
/// partitions of one channel are those beginning with its uid.
pub const CHUNK_PARTITION_LEN: usize = 17;

/// Partition key of a super-block of chunks.
#[must_use]
pub fn chunk_partition(uid: u64, level: u8, super_block: u64) -> Vec<u8> {
    uid_level_block(b"", uid, level, super_block)
}

/// The Morton code in a chunk's (or stale mark's) sort key.
#[must_use]
pub fn morton_of(sort: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(sort.get(..8)?.try_into().ok()?))
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

/// Shards of a channel level's stale index.
pub const STALE_SHARDS: u8 = 16;

/// Partition of the stale marks of one super-block of a channel level (the
/// same super-blocks as the chunks).
#[must_use]
pub fn stale_partition(uid: u64, level: u8, super_block: u64) -> Vec<u8> {
    uid_level_block(b"stale/", uid, level, super_block)
}

/// Stale mark of one chunk (its value is the generation of the write).
#[must_use]
pub fn stale_mark(uid: u64, level: u8, code: u64) -> Key {
    Key::new(
        stale_partition(uid, level, morton::super_block(code, SUPER_BLOCK_BITS)),
        code.to_be_bytes().to_vec(),
    )
}

/// Partition of one shard of the index of super-blocks with stale marks.
#[must_use]
pub fn stale_index_partition(uid: u64, level: u8, shard: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(21);
    p.extend_from_slice(b"stale-index/");
    p.extend_from_slice(&uid.to_be_bytes());
    p.push(level);
    p.push(shard);
    p
}

/// Index entry saying a super-block may hold stale marks.
#[must_use]
pub fn stale_index(uid: u64, level: u8, super_block: u64) -> Key {
    // Neighbouring super-blocks land in different shards.
    let shard = (super_block.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as u8 % STALE_SHARDS;
    Key::new(
        stale_index_partition(uid, level, shard),
        super_block.to_be_bytes().to_vec(),
    )
}

/// Channels with stale levels (for automatic downsampling).
pub const DIRTY: &[u8] = b"stale-channels";

/// Entry of a channel with stale levels.
#[must_use]
pub fn dirty(uid: u64) -> Key {
    Key::new(DIRTY.to_vec(), format!("{uid:016x}").into_bytes())
}

/// Deleted channels whose chunks are still to be purged.
pub const PURGE: &[u8] = b"purge";

/// Purge entry of a deleted channel.
#[must_use]
pub fn purge(uid: u64) -> Key {
    Key::new(PURGE.to_vec(), format!("{uid:016x}").into_bytes())
}

/// Rows to be purged: of deleted annotation tables and of retired versions.
pub const PURGE_ROWS: &[u8] = b"purge-rows";

/// Purge entry of the rows under a key prefix: a table's uid (the whole
/// table: live rows, versions, indexes, object chunk lists), or its uid and
/// a version (that version's copy and indexes).
#[must_use]
pub fn purge_rows(prefix: &[u8]) -> Key {
    Key::new(PURGE_ROWS.to_vec(), prefix.to_vec())
}

/// The key prefix of a table version's rows and index entries.
#[must_use]
pub fn version_prefix(uid: u64, version: u32) -> Vec<u8> {
    let mut p = uid.to_be_bytes().to_vec();
    p.extend_from_slice(&version.to_be_bytes());
    p
}

/// Length of a row partition key ([`rows_partition`]).
pub const ROWS_PARTITION_LEN: usize = 20;

/// Length of an index partition key ([`index_partition`]).
pub const INDEX_PARTITION_LEN: usize = 23;

/// The prefix of a table's object chunk list partitions, and their length
/// ([`object_chunks_partition`]).
#[must_use]
pub fn object_chunks_prefix(uid: u64) -> (Vec<u8>, usize) {
    let mut p = b"object-chunks/".to_vec();
    p.extend_from_slice(&uid.to_be_bytes());
    let len = p.len() + 8;
    (p, len)
}

/// Job ids start with their creation time in ms; records are bucketed by
/// it (2^31 ms, about 25 days, per partition).
const JOB_BUCKET_BITS: u32 = 31;

/// The time bucket of a job id (`None`: not a job id).
#[must_use]
pub fn job_bucket(id: &str) -> Option<u64> {
    let ms: u64 = id.get(..13)?.parse().ok()?;
    Some(ms >> JOB_BUCKET_BITS)
}

/// Partition of the job records of one time bucket.
#[must_use]
pub fn jobs_partition(bucket: u64) -> Vec<u8> {
    let mut p = b"job/".to_vec();
    p.extend_from_slice(&bucket.to_be_bytes());
    p
}

/// Key of a job record (`None`: not a job id).
#[must_use]
pub fn job(id: &str) -> Option<Key> {
    Some(Key::new(
        jobs_partition(job_bucket(id)?),
        id.as_bytes().to_vec(),
    ))
}

/// The list of job buckets that hold records.
pub const JOB_BUCKETS: &[u8] = b"job-buckets";

/// Entry saying a bucket holds job records.
#[must_use]
pub fn job_bucket_entry(bucket: u64) -> Key {
    Key::new(JOB_BUCKETS.to_vec(), bucket.to_be_bytes().to_vec())
}

/// The bucket number of a `job-buckets` entry.
#[must_use]
pub fn bucket_of(sort: &[u8]) -> Option<u64> {
    morton_of(sort)
}

/// Jobs not yet finished.
pub const ACTIVE: &[u8] = b"active";

/// Active-list entry of a job (its value is its dedupe key, if any).
#[must_use]
pub fn active(id: &str) -> Key {
    Key::new(ACTIVE.to_vec(), id.as_bytes().to_vec())
}

/// The one unfinished job per dedupe key.
#[must_use]
pub fn dedupe(key: &str) -> Key {
    Key::new(b"dedupe".to_vec(), key.as_bytes().to_vec())
}

/// The job made for a client-run job's key.
#[must_use]
pub fn external(key: &str) -> Key {
    Key::new(b"extkey".to_vec(), key.as_bytes().to_vec())
}

/// Partition of a job's tasks.
#[must_use]
pub fn tasks_partition(id: &str) -> Vec<u8> {
    format!("task/{id}").into_bytes()
}

/// Key of a task.
#[must_use]
pub fn task(id: &str, phase: u32, name: &str) -> Key {
    Key::new(
        tasks_partition(id),
        format!("{phase:04}/{name}").into_bytes(),
    )
}

/// Sort range of the tasks of one phase.
#[must_use]
pub fn phase_range(phase: u32) -> SortRange {
    SortRange {
        start: Some(Bytes::from(format!("{phase:04}/"))),
        // '0' follows '/': the first key past every "{phase}/..." name.
        end: Some(Bytes::from(format!("{phase:04}0"))),
    }
}

/// Meta partition of a dataset's annotation tables.
#[must_use]
pub fn tables_partition(dataset: &str) -> Vec<u8> {
    format!("tables/{dataset}").into_bytes()
}

/// Key of an annotation table's record.
#[must_use]
pub fn table(dataset: &str, name: &str) -> Key {
    Key::new(tables_partition(dataset), name.as_bytes().to_vec())
}

/// Key of a table's next free row id (advanced by compare-and-set).
#[must_use]
pub fn table_ids(uid: u64) -> Key {
    Key::new(b"table-ids".to_vec(), uid.to_be_bytes().to_vec())
}

/// Partition of a table's row counters, one per writing process.
#[must_use]
pub fn table_counts_partition(uid: u64) -> Vec<u8> {
    let mut p = b"table-count/".to_vec();
    p.extend_from_slice(&uid.to_be_bytes());
    p
}

/// One writing process's row counter of a table.
#[must_use]
pub fn table_count(uid: u64, instance: &str) -> Key {
    Key::new(table_counts_partition(uid), instance.as_bytes().to_vec())
}

/// Rows per row partition is `2^ROW_BLOCK_BITS` consecutive ids.
pub const ROW_BLOCK_BITS: u32 = 12;

/// The live rows of a table are version 0.
pub const LIVE: u32 = 0;

/// Partition of a block of rows of a table version.
#[must_use]
pub fn rows_partition(uid: u64, version: u32, block: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(20);
    p.extend_from_slice(&uid.to_be_bytes());
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&block.to_be_bytes());
    p
}

/// Key of a row of a table version.
#[must_use]
pub fn row(uid: u64, version: u32, id: u64) -> Key {
    Key::new(
        rows_partition(uid, version, id >> ROW_BLOCK_BITS),
        id.to_be_bytes().to_vec(),
    )
}

/// The id in a row's or an index entry's sort key (its last 8 bytes: an
/// index entry's key may start with the partner's root id).
#[must_use]
pub fn row_id(sort: &[u8]) -> Option<u64> {
    let n = sort.len();
    Some(u64::from_be_bytes(
        sort.get(n.checked_sub(8)?..)?.try_into().ok()?,
    ))
}

/// Kinds of row index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// By the root id of a bound point.
    Root,
    /// By the spatial cell of a position.
    Cell,
    /// A version's edges: by pre root id, then post root id (sort key:
    /// post ‖ task), holding the synapse count and summed size.
    Edge,
    /// A version's edges condensed per pre root id: one row (empty sort
    /// key) listing every partner (see `annotations::edges`).
    EdgeList,
    /// A version's rows of one busy root id, in the root-id index's order,
    /// stored together in columns (sort key: block number; see
    /// `annotations::packed`).
    Packed,
}

/// Partition of the index entries of one key (a root id, a cell) of a
/// column of a table version.
#[must_use]
pub fn index_partition(uid: u64, version: u32, column: u16, kind: IndexKind, key: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(23);
    p.extend_from_slice(&uid.to_be_bytes());
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&column.to_be_bytes());
    p.push(match kind {
        IndexKind::Root => b'r',
        IndexKind::Cell => b'c',
        IndexKind::Edge => b'e',
        IndexKind::EdgeList => b'l',
        IndexKind::Packed => b'p',
    });
    p.extend_from_slice(&key.to_be_bytes());
    p
}

/// The key (a root id, a cell) an index partition ends in, after the
/// `prefix_len` bytes of its table, version, column and kind.
#[must_use]
pub fn index_key_of(partition: &[u8], prefix_len: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        partition.get(prefix_len..)?.try_into().ok()?,
    ))
}

/// An index entry of a row.
#[must_use]
pub fn index_entry(partition: Vec<u8>, id: u64) -> Key {
    Key::new(partition, id.to_be_bytes().to_vec())
}

/// Meta partition of a dataset's materialized versions.
#[must_use]
pub fn versions_partition(dataset: &str) -> Vec<u8> {
    format!("versions/{dataset}").into_bytes()
}

/// Key of a materialized version's record.
#[must_use]
pub fn version(dataset: &str, v: u32) -> Key {
    Key::new(versions_partition(dataset), v.to_be_bytes().to_vec())
}

/// Partition of the row counts a version's materialization tasks found.
#[must_use]
pub fn version_counts_partition(dataset: &str, v: u32) -> Vec<u8> {
    format!("version-count/{dataset}/{v}").into_bytes()
}

/// Row count of one materialization task.
#[must_use]
pub fn version_count(dataset: &str, v: u32, task: &str) -> Key {
    Key::new(
        version_counts_partition(dataset, v),
        task.as_bytes().to_vec(),
    )
}

/// Marker of a completed demo of one extent.
#[must_use]
pub fn demo_complete(extent: [u64; 3]) -> Key {
    Key::new(
        b"demo".to_vec(),
        format!("complete/{extent:?}").into_bytes(),
    )
}

/// Marker of the annotations of a completed demo.
#[must_use]
pub fn demo_complete_annotations(extent: [u64; 3], synapses: u64) -> Key {
    Key::new(
        b"demo".to_vec(),
        format!("annotations/{extent:?}/{synapses}").into_bytes(),
    )
}

/// Partition of one epoch of an instance's label log (NeuroBlaze).
#[must_use]
pub fn label_log_partition(instance: &str, epoch: u64) -> Vec<u8> {
    let mut p = format!("label-log/{instance}/").into_bytes();
    p.extend_from_slice(&epoch.to_be_bytes());
    p
}

/// Key of one logged label write.
#[must_use]
pub fn label_log(instance: &str, epoch: u64, seq: u64) -> Key {
    Key::new(
        label_log_partition(instance, epoch),
        seq.to_be_bytes().to_vec(),
    )
}

/// Meta partition of the label logs' first unflushed epochs.
pub const LABEL_LOGS: &[u8] = b"label-log";

/// An instance's first label-log epoch not yet flushed.
#[must_use]
pub fn label_log_start(instance: &str) -> Key {
    Key::new(LABEL_LOGS, instance.as_bytes().to_vec())
}

/// Partition of the chunk lists of a block of objects of a table.
#[must_use]
pub fn object_chunks_partition(uid: u64, id: u64) -> Vec<u8> {
    let (mut p, _) = object_chunks_prefix(uid);
    p.extend_from_slice(&(id >> ROW_BLOCK_BITS).to_be_bytes());
    p
}

/// An object's voxels (may) lie in a chunk of its annotation channel.
#[must_use]
pub fn object_chunk(uid: u64, id: u64, level: u8, code: u64) -> Key {
    let mut sort = Vec::with_capacity(17);
    sort.extend_from_slice(&id.to_be_bytes());
    sort.push(level);
    sort.extend_from_slice(&code.to_be_bytes());
    Key::new(object_chunks_partition(uid, id), sort)
}

/// The sort range of one object's chunk list.
#[must_use]
pub fn object_chunk_range(id: u64) -> SortRange {
    SortRange {
        start: Some(Bytes::from(id.to_be_bytes().to_vec())),
        end: id
            .checked_add(1)
            .map(|n| Bytes::from(n.to_be_bytes().to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_prefix_covers_exactly_its_tables_rows_and_indexes() {
        let v = version_prefix(7, 3);
        let rows = rows_partition(7, 3, 99);
        let index = index_partition(7, 3, 2, IndexKind::Root, 5);
        assert_eq!(rows.len(), ROWS_PARTITION_LEN);
        assert_eq!(index.len(), INDEX_PARTITION_LEN);
        assert!(rows.starts_with(&v) && index.starts_with(&v));
        assert!(!rows_partition(7, 4, 99).starts_with(&v));
        assert!(!rows_partition(7, LIVE, 99).starts_with(&v));
        assert!(!index_partition(8, 3, 2, IndexKind::Root, 5).starts_with(&v));
        assert!(rows_partition(7, LIVE, 1).starts_with(&7u64.to_be_bytes()));
        let (prefix, len) = object_chunks_prefix(7);
        let p = object_chunks_partition(7, 1 << 20);
        assert!(p.starts_with(&prefix));
        assert_eq!(p.len(), len);
        assert!(!object_chunks_partition(8, 1).starts_with(&prefix));
    }

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

    #[test]
    fn stale_marks_follow_the_chunks_super_blocks() {
        let code = morton::encode([5, 6, 7]);
        let m = stale_mark(7, 1, code);
        assert_eq!(morton_of(&m.sort), Some(code));
        assert_eq!(&m.partition[6..], &chunk(7, 1, [5, 6, 7]).partition[..]);
        // A level's index is spread over every shard.
        let shards: std::collections::HashSet<_> =
            (0..256).map(|sb| stale_index(7, 1, sb).partition).collect();
        assert_eq!(shards.len(), usize::from(STALE_SHARDS));
    }

    #[test]
    fn jobs_are_bucketed_by_creation_time() {
        let a = "1763900000000-0a0b0c0d";
        let b = "1763900000001-ffffffff";
        assert_eq!(job(a).unwrap().partition, job(b).unwrap().partition);
        let later = format!("{:013}-00000000", 1_763_900_000_000u64 + (1 << 31));
        assert_ne!(job(a).unwrap().partition, job(&later).unwrap().partition);
        assert!(job("../x").is_none());
        let r = phase_range(3);
        assert!(r.contains(task("j", 3, "t9").sort.as_ref()));
        assert!(!r.contains(task("j", 30, "t").sort.as_ref()));
        assert!(!r.contains(task("j", 4, "a").sort.as_ref()));
    }
}
