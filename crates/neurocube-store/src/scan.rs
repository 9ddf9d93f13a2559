//! The one way to read many rows: a stream over a partition's sort-key
//! range, or over a whole table, paged underneath. Every page is followed to
//! the end, so no caller can stop at the first page and drop rows silently.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use futures::TryStreamExt;
//! use neurocube_store::{Key, Scan, SortRange, Store, Table, memory::MemoryStore};
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
//! let rows = (0..25u8).map(|i| (Key::new(b"p".to_vec(), vec![i]), vec![i].into())).collect();
//! store.put_many(Table::Meta, rows).await.unwrap();
//! let got = Scan::partition(store, Table::Meta, b"p".to_vec(), SortRange::all())
//!     .page_size(10)
//!     .collect()
//!     .await
//!     .unwrap();
//! assert_eq!(got.len(), 25);
//! # })
//! ```

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::{Key, PageToken, SortRange, Store, StoreError, Table};

/// Rows per store call unless a scan asks otherwise.
pub const DEFAULT_PAGE: usize = 1000;

#[derive(Clone)]
enum Target {
    Partition(Bytes, SortRange),
    Table,
}

/// A scan to run: what to read and the page size underneath.
#[derive(Clone)]
pub struct Scan {
    store: Arc<dyn Store>,
    table: Table,
    target: Target,
    page_size: usize,
}

impl Scan {
    /// Rows of one partition whose sort key lies in `range`, in sort order.
    pub fn partition(
        store: Arc<dyn Store>,
        table: Table,
        partition: impl Into<Bytes>,
        range: SortRange,
    ) -> Self {
        Self {
            store,
            table,
            target: Target::Partition(partition.into(), range),
            page_size: DEFAULT_PAGE,
        }
    }

    /// Every row of a table, in the backend's stable order.
    pub fn table(store: Arc<dyn Store>, table: Table) -> Self {
        Self {
            store,
            table,
            target: Target::Table,
            page_size: DEFAULT_PAGE,
        }
    }

    /// Rows per store call (at least 1).
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// The rows, one at a time; the next page is fetched when this one is used up.
    pub fn rows(self) -> BoxStream<'static, Result<(Key, Bytes), StoreError>> {
        // State: `Some(token)` while pages remain (`Some(None)` = the first).
        let start: Option<Option<PageToken>> = Some(None);
        stream::try_unfold((self, start), |(scan, state)| async move {
            let Some(token) = state else {
                return Ok(None);
            };
            let page = match &scan.target {
                Target::Partition(p, range) => {
                    scan.store
                        .scan(scan.table, p, range.clone(), token, scan.page_size)
                        .await?
                }
                Target::Table => {
                    scan.store
                        .scan_all(scan.table, token, scan.page_size)
                        .await?
                }
            };
            let next = page.next.map(Some);
            let rows = stream::iter(page.rows.into_iter().map(Ok));
            Ok(Some((rows, (scan, next))))
        })
        .try_flatten()
        .boxed()
    }

    /// Every row, in one vector (for scans known to be small).
    pub async fn collect(self) -> Result<Vec<(Key, Bytes)>, StoreError> {
        self.rows().try_collect().await
    }

    /// How many rows there are, stopping at `cap`.
    pub async fn count(self, cap: u64) -> Result<u64, StoreError> {
        let mut rows = self.rows();
        let mut n = 0;
        while n < cap {
            match rows.next().await {
                Some(r) => {
                    r?;
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
}
