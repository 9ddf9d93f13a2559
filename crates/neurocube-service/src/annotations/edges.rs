//! A version's edges (synapse count and summed size per (pre, post) root id
//! pair), as the queries and the graph read them.
//!
//! Materialization writes them twice. Each row block's task writes its
//! block's edges under the pre's edge partition (sort key post ‖ block), as
//! the blocks are copied. Once every block is done, one more task per
//! synapse table condenses them: one row per pre root id holding all its
//! partners in post order (an *edge list*). Reading 1,500 neurons' edges is
//! then 1,500 point reads instead of ~400,000 index entries, which was 40%
//! of seed 000's subgraph query (BENCHMARKS.md, issue 10). Versions made
//! before edge lists existed are read from the edge partitions, as is any
//! pre without a list.

use std::sync::Arc;

use bytes::Bytes;
use neurocube_store::{Key, PageToken, SortRange, Store, Table};

use super::Annotations;
use super::tables::ResolvedTable;
use crate::error::{Result, ServiceError};
use crate::keys::{self, IndexKind};

/// Bytes of one partner in an edge list: post root id, count (u64 LE), size
/// sum (f64 LE).
const ENTRY: usize = 24;
/// Edge index entries read per page while condensing.
const CONDENSE_PAGE: usize = 65_536;
/// Edge lists written per store call while condensing.
const WRITE_BATCH: usize = 1024;

/// One pre's edge to a partner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PairEdge {
    /// The partner's (post) root id.
    pub post: u64,
    /// Synapses between them.
    pub count: u64,
    /// Their summed `size`.
    pub size: f64,
}

/// Count and summed size of one edge-index entry.
fn edge_value(v: &[u8]) -> (u64, f64) {
    let n = v
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let s = v
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0.0, f64::from_le_bytes);
    (n, s)
}

fn list_key(uid: u64, version: u32, pre_col: usize, pre: u64) -> Key {
    Key::new(
        keys::index_partition(uid, version, pre_col as u16, IndexKind::EdgeList, pre),
        Bytes::new(),
    )
}

fn encode_list(edges: &[PairEdge]) -> Bytes {
    let mut b = Vec::with_capacity(edges.len() * ENTRY);
    for e in edges {
        b.extend_from_slice(&e.post.to_le_bytes());
        b.extend_from_slice(&e.count.to_le_bytes());
        b.extend_from_slice(&e.size.to_le_bytes());
    }
    Bytes::from(b)
}

fn decode_list(b: &[u8], what: impl Fn() -> String) -> Result<Vec<PairEdge>> {
    if !b.len().is_multiple_of(ENTRY) {
        return Err(ServiceError::Corrupt {
            what: "edge list",
            key: what(),
            reason: format!("{} bytes is not a whole number of edges", b.len()),
        });
    }
    Ok(b.chunks_exact(ENTRY)
        .map(|c| {
            let word = |i: usize| c[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]);
            PairEdge {
                post: u64::from_le_bytes(word(0)),
                count: u64::from_le_bytes(word(1)),
                size: f64::from_le_bytes(word(2)),
            }
        })
        .collect())
}

/// Add one edge-index entry to a pre's list (its entries come in post
/// order, a post's row blocks adjacent).
fn push_entry(list: &mut Vec<PairEdge>, post: u64, v: &[u8]) {
    let (count, size) = edge_value(v);
    match list.last_mut() {
        Some(e) if e.post == post => {
            e.count += count;
            e.size += size;
        }
        _ => list.push(PairEdge { post, count, size }),
    }
}

/// The edges of each of `pres` (in that order) in a version: its edge list,
/// else its edge partition summed over row blocks.
pub(crate) async fn read_edges(
    store: &Arc<dyn Store>,
    uid: u64,
    version: u32,
    pre_col: usize,
    pres: &[u64],
) -> Result<Vec<Vec<PairEdge>>> {
    let list_keys: Vec<Key> = pres
        .iter()
        .map(|p| list_key(uid, version, pre_col, *p))
        .collect();
    let lists = store.get_many(Table::RowIndex, &list_keys).await?;
    let mut out = Vec::with_capacity(pres.len());
    let mut missing = Vec::new();
    for (i, (pre, got)) in pres.iter().zip(lists).enumerate() {
        match got {
            Some(b) => out.push(decode_list(&b, || format!("{uid}/{version}/{pre}"))?),
            None => {
                out.push(Vec::new());
                missing.push(i);
            }
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let ranges = missing
        .iter()
        .map(|i| {
            (
                Bytes::from(keys::index_partition(
                    uid,
                    version,
                    pre_col as u16,
                    IndexKind::Edge,
                    pres[*i],
                )),
                SortRange::all(),
            )
        })
        .collect();
    let scanned = store
        .scan_ranges(Table::RowIndex, ranges, usize::MAX)
        .await?;
    for (i, entries) in missing.into_iter().zip(scanned) {
        for (key, v) in entries {
            if let Some(post) = keys::morton_of(&key.sort) {
                push_entry(&mut out[i], post, &v);
            }
        }
    }
    Ok(out)
}

/// Edge lists read per page of a whole-graph scan.
const LIST_PAGE: usize = 1024;

/// Every edge list of a version, pre root id by pre root id (`None`: the
/// version has none, it was made before them).
pub(crate) async fn all_edge_lists(
    store: &Arc<dyn Store>,
    uid: u64,
    version: u32,
    pre_col: usize,
) -> Result<Option<Vec<(u64, Vec<PairEdge>)>>> {
    let sample = keys::index_partition(uid, version, pre_col as u16, IndexKind::EdgeList, 0);
    let prefix = &sample[..sample.len() - 8];
    let mut out = Vec::new();
    let mut page = None;
    loop {
        let p = store
            .scan_prefix(Table::RowIndex, prefix, sample.len(), page, LIST_PAGE)
            .await?;
        for (key, v) in p.rows {
            let Some(pre) = keys::index_key_of(&key.partition, prefix.len()) else {
                continue;
            };
            out.push((pre, decode_list(&v, || format!("{uid}/{version}/{pre}"))?));
        }
        match p.next {
            Some(n) => page = Some(n),
            None => return Ok((!out.is_empty()).then_some(out)),
        }
    }
}

/// A version's edge index read in order, a page at a time, as one whole
/// list per pre root id (summed over row blocks).
pub(crate) struct EdgeIndexScan {
    store: Arc<dyn Store>,
    sample: Vec<u8>,
    page: Option<PageToken>,
    /// Entries read per page.
    page_rows: usize,
    /// The last pre of the page before (its partition may go on).
    current: Option<(u64, Vec<PairEdge>)>,
    done: bool,
}

impl EdgeIndexScan {
    /// The edge index of `pre_col` in a version.
    pub(crate) fn new(store: Arc<dyn Store>, uid: u64, version: u32, pre_col: usize) -> Self {
        Self {
            store,
            sample: keys::index_partition(uid, version, pre_col as u16, IndexKind::Edge, 0),
            page: None,
            page_rows: CONDENSE_PAGE,
            current: None,
            done: false,
        }
    }

    /// The next page's complete lists (`None` at the end).
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<(u64, Vec<PairEdge>)>>> {
        if self.done {
            return Ok(None);
        }
        let prefix = &self.sample[..self.sample.len() - 8];
        let p = self
            .store
            .scan_prefix(
                Table::RowIndex,
                prefix,
                self.sample.len(),
                self.page.take(),
                self.page_rows,
            )
            .await?;
        let mut out = Vec::new();
        for (key, v) in p.rows {
            let pre = keys::index_key_of(&key.partition, prefix.len());
            let (Some(pre), Some(post)) = (pre, keys::morton_of(&key.sort)) else {
                continue;
            };
            // A pre's partition is read whole before the next one's.
            if self.current.as_ref().is_none_or(|(p, _)| *p != pre) {
                out.extend(self.current.replace((pre, Vec::new())));
            }
            if let Some((_, list)) = self.current.as_mut() {
                push_entry(list, post, &v);
            }
        }
        match p.next {
            Some(n) => self.page = Some(n),
            None => {
                self.done = true;
                out.extend(self.current.take());
            }
        }
        Ok(Some(out))
    }
}

impl Annotations {
    /// Write a version's edge lists of a synapse table from its edge
    /// partitions (the materialization's last task; idempotent, so a task
    /// run again after a lost lease writes the same lists). Returns how
    /// many pre root ids have one.
    pub(super) async fn condense_edges(&self, t: &ResolvedTable, version: u32) -> Result<u64> {
        let Some(pre_col) = t.schema.points.first().and_then(|p| p.ids.map(|(_, r)| r)) else {
            return Ok(0);
        };
        let mut scan = EdgeIndexScan::new(self.store.clone(), t.uid(), version, pre_col);
        let mut written = 0u64;
        while let Some(lists) = scan.next().await? {
            for chunk in lists.chunks(WRITE_BATCH) {
                let rows = chunk
                    .iter()
                    .map(|(pre, list)| {
                        (list_key(t.uid(), version, pre_col, *pre), encode_list(list))
                    })
                    .collect();
                self.store.put_many(Table::RowIndex, rows).await?;
                written += chunk.len() as u64;
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_entries_merge_by_post() {
        let entry = |n: u64, s: f64| {
            let mut v = n.to_le_bytes().to_vec();
            v.extend_from_slice(&s.to_le_bytes());
            v
        };
        let mut list = Vec::new();
        // Post 5 in two row blocks, then post 9.
        push_entry(&mut list, 5, &entry(2, 10.0));
        push_entry(&mut list, 5, &entry(1, 4.5));
        push_entry(&mut list, 9, &entry(3, 1.0));
        let want = vec![
            PairEdge {
                post: 5,
                count: 3,
                size: 14.5,
            },
            PairEdge {
                post: 9,
                count: 3,
                size: 1.0,
            },
        ];
        assert_eq!(list, want);
        assert_eq!(decode_list(&encode_list(&list), String::new).unwrap(), want);
        let e = decode_list(&[0; 25], || "k".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("25 bytes is not a whole number of edges"), "{e}");
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;
    use neurocube_store::embedded::{EmbeddedOptions, EmbeddedStore};
    use neurocube_store::memory::MemoryStore;

    /// An edge-index entry of `pre`: `n` synapses to `post` in `block`.
    fn index_entry(
        uid: u64,
        version: u32,
        col: usize,
        pre: u64,
        post: u64,
        block: u64,
        n: u64,
    ) -> (Key, Bytes) {
        let mut sort = post.to_be_bytes().to_vec();
        sort.extend_from_slice(&block.to_be_bytes());
        let mut v = n.to_le_bytes().to_vec();
        v.extend_from_slice(&(n as f64 * 2.0).to_le_bytes());
        (
            Key::new(
                keys::index_partition(uid, version, col as u16, IndexKind::Edge, pre),
                sort,
            ),
            Bytes::from(v),
        )
    }

    #[tokio::test]
    async fn the_edge_index_scan_sums_blocks_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&EmbeddedOptions::new(dir.path())).unwrap());
        let (uid, version, col) = (7, 2, 1);
        let rows = [(20, 5, 0, 1), (20, 5, 1, 2), (20, 8, 0, 4), (30, 1, 3, 1)]
            .into_iter()
            .map(|(pre, post, block, n)| index_entry(uid, version, col, pre, post, block, n))
            .collect();
        store.put_many(Table::RowIndex, rows).await.unwrap();
        let e = |post: u64, n: u64| PairEdge {
            post,
            count: n,
            size: n as f64 * 2.0,
        };
        // Two entries a page: pre 20's partition goes on to the next page.
        let mut scan = EdgeIndexScan::new(store, uid, version, col);
        scan.page_rows = 2;
        let mut lists = Vec::new();
        while let Some(page) = scan.next().await.unwrap() {
            lists.extend(page);
        }
        assert_eq!(
            lists,
            vec![(20, vec![e(5, 3), e(8, 4)]), (30, vec![e(1, 1)])]
        );
    }

    #[tokio::test]
    async fn lists_are_read_and_pres_without_one_fall_back_to_the_edge_index() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let (uid, version, col) = (7, 2, 1);
        let e = |post: u64, n: u64| PairEdge {
            post,
            count: n,
            size: n as f64 * 2.0,
        };
        // Pre 10 has a list; pre 20 only edge index entries (a version
        // made before lists); pre 30 neither (no synapses out).
        let mut rows = vec![(
            list_key(uid, version, col, 10),
            encode_list(&[e(3, 1), e(4, 2)]),
        )];
        for (post, block, n) in [(5, 0, 1), (5, 1, 2), (8, 0, 4)] {
            rows.push(index_entry(uid, version, col, 20, post, block, n));
        }
        store.put_many(Table::RowIndex, rows).await.unwrap();
        let got = read_edges(&store, uid, version, col, &[30, 20, 10])
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![vec![], vec![e(5, 3), e(8, 4)], vec![e(3, 1), e(4, 2)]]
        );
    }
}
