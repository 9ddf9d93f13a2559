//! The storage model neurocube shares with Cassandra/Scylla, DynamoDB and
//! ordered embedded engines: **table → partition key → sort key → value**.
//!
//! One async trait, [`Store`]; backends: [`embedded::EmbeddedStore`] (fjall
//! on local disk, the default) and [`memory::MemoryStore`] (unit tests of
//! the layers above only). Every backend passes [`conformance`].
//!
//! ```
//! # tokio_test();
//! # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use neurocube_store::{Key, Store, Table, memory::MemoryStore};
//! let store = MemoryStore::default();
//! let k = Key::new(b"partition".to_vec(), b"sort".to_vec());
//! store.put_many(Table::Meta, vec![(k.clone(), b"value".to_vec().into())]).await.unwrap();
//! assert_eq!(store.get_many(Table::Meta, &[k]).await.unwrap()[0].as_deref(), Some(&b"value"[..]));
//! # }) }
//! ```

use async_trait::async_trait;
use bytes::Bytes;

pub mod cassandra;
pub mod conformance;
pub mod embedded;
pub mod memory;
mod scan;
mod striped;

pub use scan::{DEFAULT_PAGE, Scan};

/// The tables of neurocube. Backends create them all when they open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Datasets, channels and other small records.
    Meta,
    /// Compressed chunks: partition = channel, level, super-block; sort = Morton code.
    Chunks,
    /// Background jobs and their reservations.
    Jobs,
    /// Rows of annotation tables (live and of materialized versions).
    Rows,
    /// Indexes of annotation rows (by root id, by spatial cell).
    RowIndex,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 5] = [
        Table::Meta,
        Table::Chunks,
        Table::Jobs,
        Table::Rows,
        Table::RowIndex,
    ];

    /// The table's name in the backend.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Chunks => "chunks",
            Table::Jobs => "jobs",
            Table::Rows => "rows",
            Table::RowIndex => "row_index",
        }
    }
}

/// A row key: partition key plus sort key, both opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Rows with the same partition key live together and scan in sort order.
    pub partition: Bytes,
    /// Order within the partition (byte-wise).
    pub sort: Bytes,
}

impl Key {
    /// A key from its two parts.
    pub fn new(partition: impl Into<Bytes>, sort: impl Into<Bytes>) -> Self {
        Self {
            partition: partition.into(),
            sort: sort.into(),
        }
    }
}

/// An opaque position from which a scan resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageToken(pub Bytes);

/// One page of rows and where the next page starts (`None`: no more rows).
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// Rows in key order.
    pub rows: Vec<(Key, Bytes)>,
    /// Token of the next page.
    pub next: Option<PageToken>,
}

/// One page of partition keys and where the next page starts (`None`: no
/// more). A page may hold fewer keys than asked for, even none, and still
/// have a next page (a backend that filters after reading).
#[derive(Clone, Debug, Default)]
pub struct Partitions {
    /// Partition keys.
    pub keys: Vec<Bytes>,
    /// Token of the next page.
    pub next: Option<PageToken>,
}

/// A range of sort keys: `start` inclusive, `end` exclusive; `None` is open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SortRange {
    /// First sort key included.
    pub start: Option<Bytes>,
    /// First sort key excluded.
    pub end: Option<Bytes>,
}

impl SortRange {
    /// The whole partition.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// True if `sort` lies in the range.
    #[must_use]
    pub fn contains(&self, sort: &[u8]) -> bool {
        self.start.as_ref().is_none_or(|s| sort >= &s[..])
            && self.end.as_ref().is_none_or(|e| sort < &e[..])
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached now; retrying later may succeed.
    #[error("{backend} store unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// What failed.
        reason: String,
    },
    /// The engine failed on an operation.
    #[error("{backend} store failed to {op}: {source}")]
    Engine {
        /// Backend name.
        backend: &'static str,
        /// The operation.
        op: &'static str,
        /// Engine error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A page token this backend did not issue.
    #[error("page token is not valid for the {backend} store")]
    BadPageToken {
        /// Backend name.
        backend: &'static str,
    },
}

impl StoreError {
    /// The backend that failed.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self {
            StoreError::Unavailable { backend, .. }
            | StoreError::Engine { backend, .. }
            | StoreError::BadPageToken { backend } => backend,
        }
    }
}

/// The storage trait. Missing rows are `None`, not errors: the layer above
/// turns a missing chunk into zeros.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Backend name for logs and metrics (`embedded`, `cassandra`, `memory`).
    fn backend(&self) -> &'static str;

    /// Write rows (insert or overwrite); durable when this returns.
    async fn put_many(&self, table: Table, rows: Vec<(Key, Bytes)>) -> Result<(), StoreError>;

    /// Write rows of several tables, in one commit where the engine has
    /// commits (the embedded engine: one atomic batch, one sync); durable
    /// when this returns. The batch writer of annotations uses it to store
    /// a group of rows, their index entries and counters at once.
    async fn put_rows(&self, rows: Vec<(Table, Key, Bytes)>) -> Result<(), StoreError>;

    /// Whether [`Store::ingest`] bypasses the engine's write path (the
    /// embedded engine writes sorted runs straight into its tables). When
    /// false, `ingest` is [`Store::put_many`] and callers gain nothing by
    /// splitting their writes for it.
    fn ingests(&self) -> bool {
        false
    }

    /// Write many new rows of one table in bulk; durable when this
    /// returns. For keys no other writer is changing at the same time (a
    /// bulk upload's new index entries): it takes no key locks, and of
    /// equal keys in one call which one wins is the backend's (the
    /// embedded engine: the last). The embedded engine sorts the rows and
    /// writes them, with those of concurrent calls for the same table, as
    /// one run of tables, without its journal and memtable, all visible at
    /// once; elsewhere this is [`Store::put_many`].
    async fn ingest(&self, table: Table, rows: Vec<(Key, Bytes)>) -> Result<(), StoreError> {
        self.put_many(table, rows).await
    }

    /// Read rows; the result has one entry per key, in order.
    async fn get_many(&self, table: Table, keys: &[Key]) -> Result<Vec<Option<Bytes>>, StoreError>;

    /// Delete rows (absent rows are fine); durable when this returns.
    async fn delete_many(&self, table: Table, keys: &[Key]) -> Result<(), StoreError>;

    /// Rows of one partition whose sort key lies in `range`, in sort order, at
    /// most `limit` per page.
    async fn scan(
        &self,
        table: Table,
        partition: &[u8],
        range: SortRange,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// The first `limit` rows (in sort order) of each of several partition
    /// ranges, in one call: many small index partitions cost one round trip,
    /// not one each. The result has one entry per range, in order; an entry
    /// holding `limit` rows may have more after it (read on from its last
    /// sort key).
    async fn scan_ranges(
        &self,
        table: Table,
        ranges: Vec<(Bytes, SortRange)>,
        limit: usize,
    ) -> Result<Vec<Vec<(Key, Bytes)>>, StoreError> {
        let mut out = Vec::with_capacity(ranges.len());
        for (p, r) in ranges {
            out.push(scan_limited(self, table, &p, r, limit).await?);
        }
        Ok(out)
    }

    /// Every row of a table, a page at a time (for exports and purges). Order
    /// is backend-defined but stable across pages.
    async fn scan_all(
        &self,
        table: Table,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// The partitions of a table that exist (hold at least one row), whose
    /// keys are `len` bytes long and begin with `prefix`, about `limit` keys
    /// per page, in a backend-defined order stable across pages. For purges
    /// of what was written, never of a whole key space.
    async fn partitions(
        &self,
        table: Table,
        prefix: &[u8],
        len: usize,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Partitions, StoreError>;

    /// Every row of the partitions that [`Store::partitions`] lists for
    /// `prefix` and `len`, partition by partition, each in sort order, about
    /// `limit` rows a page; a partition may continue on the next page. For
    /// reading a whole index (the default reads `limit / 64` listed
    /// partitions whole per page; an ordered engine reads one key range).
    async fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        len: usize,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let parts = self
            .partitions(table, prefix, len, page, (limit / 64).max(1))
            .await?;
        let ranges = parts
            .keys
            .into_iter()
            .map(|p| (p, SortRange::all()))
            .collect();
        let rows = self
            .scan_ranges(table, ranges, usize::MAX)
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(Page {
            rows,
            next: parts.next,
        })
    }

    /// Set `key` to `new` (`None` deletes) only if its value is `expected`
    /// (`None`: absent). Returns whether it was set. Linearizable with every
    /// other write to the same key.
    async fn compare_and_set(
        &self,
        table: Table,
        key: Key,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<bool, StoreError>;

    /// Several compare-and-sets, each decided on its own (as
    /// [`Store::compare_and_set`]); returns which were set, in order. The
    /// embedded store commits the winners in one batch (one sync); the
    /// default runs them one by one.
    async fn compare_and_set_many(
        &self,
        table: Table,
        items: Vec<(Key, Option<Bytes>, Option<Bytes>)>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for (key, expected, new) in items {
            out.push(self.compare_and_set(table, key, expected, new).await?);
        }
        Ok(out)
    }

    /// Delete every row of a partition.
    async fn delete_partition(&self, table: Table, partition: &[u8]) -> Result<(), StoreError>;

    /// Make everything written so far durable on this node's disk (at
    /// shutdown; each write is already durable when it returns).
    async fn flush(&self) -> Result<(), StoreError>;
}

/// Encode a key for an ordered engine: `u16 BE partition length ‖ partition ‖ sort`.
/// The length prefix keeps partition `ab` from mixing with partition `a`.
#[must_use]
pub fn encode_key(partition: &[u8], sort: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + partition.len() + sort.len());
    k.extend_from_slice(&(partition.len() as u16).to_be_bytes());
    k.extend_from_slice(partition);
    k.extend_from_slice(sort);
    k
}

/// Split an encoded key back into its parts.
#[must_use]
pub fn decode_key(k: &[u8]) -> Option<Key> {
    let len = u16::from_be_bytes([*k.first()?, *k.get(1)?]) as usize;
    let p = k.get(2..2 + len)?;
    Some(Key::new(
        Bytes::copy_from_slice(p),
        Bytes::copy_from_slice(&k[2 + len..]),
    ))
}

/// [`decode_key`] without copies: the parts are slices of `k`'s bytes.
#[must_use]
pub fn decode_key_shared(k: &Bytes) -> Option<Key> {
    let len = u16::from_be_bytes([*k.first()?, *k.get(1)?]) as usize;
    if k.len() < 2 + len {
        return None;
    }
    Some(Key::new(k.slice(2..2 + len), k.slice(2 + len..)))
}

/// Up to `limit` rows of one partition range, page by page (the default
/// `scan_ranges`, and the Cassandra backend's).
pub(crate) async fn scan_limited<S: Store + ?Sized>(
    s: &S,
    table: Table,
    partition: &[u8],
    range: SortRange,
    limit: usize,
) -> Result<Vec<(Key, Bytes)>, StoreError> {
    let mut rows = Vec::new();
    let mut token = None;
    while rows.len() < limit {
        let want = (limit - rows.len()).min(1000);
        let page = s.scan(table, partition, range.clone(), token, want).await?;
        rows.extend(page.rows);
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    rows.truncate(limit);
    Ok(rows)
}
