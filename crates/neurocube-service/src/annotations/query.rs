//! Queries: CAVE's filters over a version (frozen rows, covering indexes)
//! or over the live rows at a timestamp (rows valid then). The plan reads
//! an index where one applies: the root-id index for an `in`/`equal` filter
//! on a bound point's root id (the shortest list when there are several),
//! the spatial index for a box on the first point, the rows themselves for
//! an id list; otherwise the table in id order. Rows come out as a stream,
//! a page of the store at a time, in a deterministic order (index key, then
//! id), so memory stays bounded whatever the result size; a page token
//! resumes after the last row returned.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use neurocube_core::annotation::{Col, Filter, Op, Role, Row, Set};
use neurocube_core::morton;
use neurocube_store::{Key, SortRange, Table};

use super::Annotations;
use super::cursor::{Cursor, after_range};
use super::edges::read_edges;
use super::output::Record;
use super::pairs::pair_runs;
use super::tables::ResolvedTable;
use crate::error::{Result, ServiceError};
use crate::keys::{self, IndexKind};

/// What rows a query reads.
#[derive(Clone, Debug, PartialEq)]
pub enum At {
    /// A materialized version (its number, and the table's row blocks in it).
    Version(u32, u64),
    /// The live rows valid at this time (ms), and the table's row blocks now.
    Live(i64, u64),
}

impl At {
    fn version(&self) -> u32 {
        match self {
            At::Version(v, _) => *v,
            At::Live(..) => keys::LIVE,
        }
    }

    fn blocks(&self) -> u64 {
        match self {
            At::Version(_, b) | At::Live(_, b) => *b,
        }
    }
}

/// How rows are found.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Index partitions of these keys of a column, in key order.
    Index {
        /// Column.
        column: usize,
        /// Root ids or spatial cells.
        kind: IndexKind,
        /// Sorted keys.
        keys: Vec<u64>,
    },
    /// These ids, sorted.
    Ids(Vec<u64>),
    /// Rows of (pre, post) pairs: for each pre root id in `keys`, its edges
    /// (a version's edge index) to post root ids in `partners`, then those
    /// pairs' ranges of the pre root-id index (sorted by post root id).
    Pairs {
        /// The pre point's root-id column.
        column: usize,
        /// Sorted pre root ids.
        keys: Vec<u64>,
        /// Post root ids.
        partners: std::collections::HashSet<u64>,
    },
    /// Every row block in id order.
    Scan,
}

impl Plan {
    /// A short name for logs and the `X-Neurocube-Plan` header.
    #[must_use]
    pub fn describe(&self, t: &ResolvedTable) -> String {
        match self {
            Plan::Index { column, kind, keys } => format!(
                "{} index of {} ({} keys)",
                match kind {
                    IndexKind::Root => "root-id",
                    IndexKind::Cell => "spatial",
                    IndexKind::Edge | IndexKind::EdgeList => "edge",
                    IndexKind::Packed => "packed root-id",
                },
                t.schema.columns[*column].name,
                keys.len()
            ),
            Plan::Ids(ids) => format!("ids ({})", ids.len()),
            Plan::Pairs { keys, partners, .. } => format!(
                "edge index of {} pre and {} post root ids",
                keys.len(),
                partners.len()
            ),
            Plan::Scan => "scan".into(),
        }
    }
}

/// Most spatial cells a box may touch for the spatial index to be used.
const MAX_CELLS: u64 = 4096;
/// Index entries or rows read per store call.
const PAGE: usize = 2000;
/// Keys (root ids, cells) whose index partitions are read in one store call.
const KEY_BATCH: usize = 128;
/// Most rows read from one index range per store call: a batch of
/// partitions holds at most `KEY_BATCH` × this many rows in memory, however
/// many synapses a neuron has.
const RANGE_ROWS: usize = 2000;

/// Choose how to read the rows a filter selects (`frozen`: reading a
/// version, which has an edge index).
#[must_use]
pub fn plan(t: &ResolvedTable, filter: &Filter, frozen: bool) -> Plan {
    // Both ends of a synapse restricted to root-id sets: walk the edges.
    if frozen && t.schema.points.iter().filter(|p| p.bound).count() == 2 {
        let roots = t.schema.root_columns();
        let set_of = |col: usize| {
            filter.conditions.iter().find_map(|c| match (c.col, &c.op) {
                (Col::Data(i), Op::In(s)) if i == col => s.sorted_ids(),
                (Col::Data(i), Op::Eq(v)) if i == col => v.as_id().map(|x| vec![x]),
                _ => None,
            })
        };
        if let (Some(pre), Some(post)) = (set_of(roots[0]), set_of(roots[1])) {
            return Plan::Pairs {
                column: roots[0],
                keys: pre,
                partners: post.into_iter().collect(),
            };
        }
    }
    let mut best: Option<(usize, Vec<u64>)> = None;
    let mut ids: Option<Vec<u64>> = None;
    let mut cells: Option<(usize, Vec<u64>)> = None;
    for c in &filter.conditions {
        let keys = match &c.op {
            Op::In(s) => s.sorted_ids(),
            Op::Eq(v) => v.as_id().map(|i| vec![i]),
            _ => None,
        };
        match (c.col, keys) {
            (Col::Data(i), Some(k))
                if matches!(t.schema.columns[i].role, Role::Root(_))
                    && best.as_ref().is_none_or(|b| k.len() < b.1.len()) =>
            {
                best = Some((i, k));
            }
            (Col::Id, Some(k)) if ids.as_ref().is_none_or(|i| k.len() < i.len()) => {
                ids = Some(k);
            }
            _ => {}
        }
        if let (Col::Data(i), Op::Within(lo, hi)) = (c.col, &c.op)
            && t.schema.points.first().is_some_and(|p| p.position == i)
        {
            let b = t.cell_bits;
            let lo_c: [u64; 3] = std::array::from_fn(|a| (lo[a].max(0) as u64) >> b[a]);
            let hi_c: [u64; 3] = std::array::from_fn(|a| (hi[a].max(0) as u64) >> b[a]);
            let n = (0..3).map(|a| hi_c[a] - lo_c[a] + 1).product::<u64>();
            if hi.iter().all(|h| *h >= 0) && n <= MAX_CELLS {
                let mut v = Vec::with_capacity(n as usize);
                for z in lo_c[2]..=hi_c[2] {
                    for y in lo_c[1]..=hi_c[1] {
                        for x in lo_c[0]..=hi_c[0] {
                            v.push(morton::encode([x, y, z]));
                        }
                    }
                }
                v.sort_unstable();
                cells = Some((i, v));
            }
        }
    }
    if let Some((column, keys)) = best {
        return Plan::Index {
            column,
            kind: IndexKind::Root,
            keys,
        };
    }
    if let Some(ids) = ids {
        return Plan::Ids(ids);
    }
    if let Some((column, keys)) = cells {
        return Plan::Index {
            column,
            kind: IndexKind::Cell,
            keys,
        };
    }
    Plan::Scan
}

fn decode(t: &ResolvedTable, id: u64, b: &[u8]) -> Result<Row> {
    Row::decode(b).map_err(|e| ServiceError::Corrupt {
        what: "row",
        key: format!("{}/{id}", t.name()),
        reason: e.to_string(),
    })
}

struct State {
    ann: Arc<Annotations>,
    t: ResolvedTable,
    at: At,
    filter: Arc<Filter>,
    plan: Plan,
    cursor: Cursor,
    done: bool,
}

impl State {
    fn positions(&self) -> u64 {
        match &self.plan {
            Plan::Index { keys, .. } => keys.len() as u64,
            Plan::Ids(ids) => ids.len().div_ceil(PAGE) as u64,
            Plan::Pairs { keys, .. } => keys.len() as u64,
            Plan::Scan => self.at.blocks(),
        }
    }

    /// Rows of the live table by id, in order: each if present and valid at
    /// `at`.
    async fn live_rows(&self, ids: &[u64], at: i64) -> Result<Vec<Option<Row>>> {
        let keys: Vec<Key> = ids
            .iter()
            .map(|id| keys::row(self.t.uid(), keys::LIVE, *id))
            .collect();
        let got = self.ann.store.get_many(Table::Rows, &keys).await?;
        ids.iter()
            .zip(got)
            .map(|(id, g)| {
                let r = g.map(|b| decode(&self.t, *id, &b)).transpose()?;
                Ok(r.filter(|r| r.valid_at(at)))
            })
            .collect()
    }

    /// The rows of a batch of pre root ids' pairs with the partner set: one
    /// store call for their edge lists, one for the pairs' index ranges.
    async fn pairs(&mut self, column: usize) -> Result<Vec<(Row, Cursor)>> {
        let Plan::Pairs {
            partners,
            keys: pres,
            ..
        } = &self.plan
        else {
            return Ok(Vec::new());
        };
        let version = self.at.version();
        let uid = self.t.uid();
        let k0 = self.cursor.k as usize;
        let batch: Vec<u64> = pres[k0..(k0 + KEY_BATCH).min(pres.len())].to_vec();
        let edges = read_edges(&self.ann.store, uid, version, column, &batch).await?;
        let mut ranges = Vec::new();
        let mut owners = Vec::new();
        for (i, (p, e)) in batch.iter().zip(edges).enumerate() {
            let edges = e.iter().map(|e| (e.post, e.count));
            let partition = Bytes::from(keys::index_partition(
                uid,
                version,
                column as u16,
                IndexKind::Root,
                *p,
            ));
            let after: &[u8] = if i == 0 && self.cursor.after.len() == 16 {
                &self.cursor.after
            } else {
                &[]
            };
            for (first, last) in pair_runs(edges, partners) {
                let mut start = first.to_be_bytes().to_vec();
                if !after.is_empty() {
                    if after[..8] > last.to_be_bytes()[..] {
                        continue;
                    }
                    if after[..8] >= start[..] {
                        start = after.to_vec();
                        start.push(0);
                    }
                }
                let end = last
                    .checked_add(1)
                    .map(|e| Bytes::from(e.to_be_bytes().to_vec()));
                ranges.push((
                    partition.clone(),
                    SortRange {
                        start: Some(Bytes::from(start)),
                        end,
                    },
                ));
                owners.push((k0 + i) as u64);
            }
        }
        let found = self
            .ann
            .store
            .scan_ranges(Table::RowIndex, ranges.clone(), RANGE_ROWS)
            .await?;
        self.cursor = Cursor::at((k0 + batch.len()) as u64);
        let budget = self.ann.config.query_batch_rows.max(RANGE_ROWS);
        let mut out = Vec::new();
        'ranges: for ((k, mut rows), (partition, range)) in
            owners.into_iter().zip(found).zip(ranges)
        {
            let mut asked = RANGE_ROWS;
            loop {
                let cut = rows.len() >= asked;
                let last = rows.last().map(|(key, _)| key.sort.clone());
                for (key, v) in rows {
                    // A run may span partners outside the set: skip them undecoded.
                    if !keys::morton_of(&key.sort).is_some_and(|q| partners.contains(&q)) {
                        continue;
                    }
                    let id = keys::row_id(&key.sort).unwrap_or(0);
                    out.push((decode(&self.t, id, &v)?, Cursor { k, after: key.sort }));
                }
                let Some(after) = last.filter(|_| cut) else {
                    break;
                };
                if out.len() >= budget {
                    // Read on from here next time; later ranges are read again.
                    self.cursor = Cursor { k, after };
                    break 'ranges;
                }
                // A pair with many synapses: read on in this range alone,
                // so the ranges after it are read once (in order, so a
                // page token stays a position).
                let mut start = after.to_vec();
                start.push(0);
                asked = budget - out.len();
                rows = self
                    .ann
                    .store
                    .scan_ranges(
                        Table::RowIndex,
                        vec![(
                            partition.clone(),
                            SortRange {
                                start: Some(Bytes::from(start)),
                                end: range.end.clone(),
                            },
                        )],
                        asked,
                    )
                    .await?
                    .pop()
                    .unwrap_or_default();
            }
        }
        Ok(out)
    }

    /// A batch of small index partitions (one per key) in one store call.
    async fn index_batch(&mut self, column: usize, kind: IndexKind) -> Result<Vec<(Row, Cursor)>> {
        let Plan::Index { keys: ks, .. } = &self.plan else {
            return Ok(Vec::new());
        };
        let version = self.at.version();
        let uid = self.t.uid();
        let k0 = self.cursor.k as usize;
        let batch: Vec<u64> = ks[k0..(k0 + KEY_BATCH).min(ks.len())].to_vec();
        let ranges = batch
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let range = if i == 0 {
                    after_range(&self.cursor.after)
                } else {
                    SortRange::all()
                };
                (
                    Bytes::from(keys::index_partition(
                        uid,
                        version,
                        column as u16,
                        kind,
                        *key,
                    )),
                    range,
                )
            })
            .collect();
        let found = self
            .ann
            .store
            .scan_ranges(Table::RowIndex, ranges, RANGE_ROWS)
            .await?;
        self.cursor = Cursor::at((k0 + batch.len()) as u64);
        let mut entries: Vec<(u64, u64, Bytes, Bytes)> = Vec::new();
        for (i, rows) in found.into_iter().enumerate() {
            let k = (k0 + i) as u64;
            let cut = rows.len() >= RANGE_ROWS;
            let last = rows.last().map(|(key, _)| key.sort.clone());
            for (key, v) in rows {
                if let Some(id) = keys::row_id(&key.sort) {
                    entries.push((k, id, key.sort, v));
                }
            }
            if cut && let Some(after) = last {
                // Read on from here next time; later partitions are read again.
                self.cursor = Cursor { k, after };
                break;
            }
        }
        let rows: Vec<Option<Row>> = match (&self.at, kind) {
            (At::Version(..), IndexKind::Root) => entries
                .iter()
                .map(|(_, id, _, v)| decode(&self.t, *id, v).map(Some))
                .collect::<Result<_>>()?,
            (at, _) => {
                // Entries that only name ids: read the rows.
                let keys: Vec<Key> = entries
                    .iter()
                    .map(|(_, id, _, _)| keys::row(uid, version, *id))
                    .collect();
                let got = self.ann.store.get_many(Table::Rows, &keys).await?;
                let mut out = Vec::with_capacity(got.len());
                for ((_, id, _, _), g) in entries.iter().zip(got) {
                    let r = g.map(|b| decode(&self.t, *id, &b)).transpose()?;
                    out.push(match at {
                        At::Live(t, _) => r.filter(|r| r.valid_at(*t)),
                        At::Version(..) => r,
                    });
                }
                out
            }
        };
        Ok(entries
            .into_iter()
            .zip(rows)
            .filter_map(|((k, _, after, _), r)| r.map(|r| (r, Cursor { k, after })))
            .collect())
    }

    /// The next page of rows (before filtering), and where it ends.
    async fn page(&mut self) -> Result<Vec<(Row, Cursor)>> {
        let version = self.at.version();
        let uid = self.t.uid();
        let k = self.cursor.k;
        let (partition, table) = match &self.plan {
            Plan::Index { column, kind, keys } if keys.len() > 1 => {
                let (c, kind) = (*column, *kind);
                return self.index_batch(c, kind).await;
            }
            Plan::Index { column, kind, keys } => (
                keys::index_partition(uid, version, *column as u16, *kind, keys[k as usize]),
                Table::RowIndex,
            ),
            Plan::Pairs { column, .. } => {
                let c = *column;
                return self.pairs(c).await;
            }
            Plan::Scan => (keys::rows_partition(uid, version, k), Table::Rows),
            Plan::Ids(ids) => {
                let start = k as usize * PAGE;
                let chunk = &ids[start..(start + PAGE).min(ids.len())];
                self.cursor = Cursor::at(k + 1);
                let rows = match self.at {
                    At::Live(at, _) => self
                        .live_rows(chunk, at)
                        .await?
                        .into_iter()
                        .flatten()
                        .collect(),
                    At::Version(..) => {
                        let keys: Vec<Key> = chunk
                            .iter()
                            .map(|id| keys::row(uid, version, *id))
                            .collect();
                        let got = self.ann.store.get_many(Table::Rows, &keys).await?;
                        let mut out = Vec::new();
                        for (id, g) in chunk.iter().zip(got) {
                            if let Some(b) = g {
                                out.push(decode(&self.t, *id, &b)?);
                            }
                        }
                        out
                    }
                };
                let c = self.cursor.clone();
                return Ok(rows.into_iter().map(|r| (r, c.clone())).collect());
            }
        };
        let page = self
            .ann
            .store
            .scan(
                table,
                &partition,
                after_range(&self.cursor.after),
                None,
                PAGE,
            )
            .await?;
        let entries: Vec<(u64, Bytes, Bytes)> = page
            .rows
            .into_iter()
            .filter_map(|(key, v)| keys::row_id(&key.sort).map(|id| (id, key.sort, v)))
            .collect();
        if page.next.is_none() {
            self.cursor = Cursor::at(k + 1);
        } else if let Some((_, sort, _)) = entries.last() {
            self.cursor = Cursor {
                k,
                after: sort.clone(),
            };
        }
        // One row (or none: absent, or not valid then) per entry, in order.
        let rows: Vec<Option<Row>> = match (&self.plan, &self.at) {
            // Live index entries (and a version's spatial ones) only name
            // ids: read the rows.
            (Plan::Index { kind, .. }, At::Version(..)) if *kind == IndexKind::Cell => {
                let keys: Vec<Key> = entries
                    .iter()
                    .map(|(id, _, _)| keys::row(uid, version, *id))
                    .collect();
                let got = self.ann.store.get_many(Table::Rows, &keys).await?;
                entries
                    .iter()
                    .zip(got)
                    .map(|((id, _, _), g)| g.map(|b| decode(&self.t, *id, &b)).transpose())
                    .collect::<Result<_>>()?
            }
            (Plan::Index { .. }, At::Live(at, _)) => {
                let ids: Vec<u64> = entries.iter().map(|e| e.0).collect();
                self.live_rows(&ids, *at).await?
            }
            (_, At::Live(at, _)) => entries
                .iter()
                .map(|(id, _, b)| Ok(Some(decode(&self.t, *id, b)?).filter(|r| r.valid_at(*at))))
                .collect::<Result<_>>()?,
            (_, At::Version(..)) => entries
                .iter()
                .map(|(id, _, b)| decode(&self.t, *id, b).map(Some))
                .collect::<Result<_>>()?,
        };
        Ok(entries
            .into_iter()
            .zip(rows)
            .filter_map(|((_, after, _), r)| r.map(|r| (r, Cursor { k, after })))
            .collect())
    }
}

/// Rows matching a filter, a batch at a time, each with the cursor after it.
pub fn run(
    ann: Arc<Annotations>,
    t: ResolvedTable,
    at: At,
    filter: Arc<Filter>,
    plan: Plan,
    start: Cursor,
) -> BoxStream<'static, Result<Vec<(Row, Cursor)>>> {
    let state = State {
        ann,
        t,
        at,
        filter,
        plan,
        cursor: start,
        done: false,
    };
    stream::try_unfold(state, |mut s| async move {
        loop {
            if s.done || s.cursor.k >= s.positions() {
                return Ok(None);
            }
            let page = s.page().await?;
            let kept: Vec<(Row, Cursor)> = page
                .into_iter()
                .filter(|(r, _)| s.filter.matches(r))
                .collect();
            if !kept.is_empty() {
                return Ok(Some((kept, s)));
            }
            if s.cursor.k >= s.positions() {
                s.done = true;
            }
        }
    })
    .boxed()
}

/// Join each reference row with the target row it points to (inner join:
/// rows whose target is missing or not valid then are dropped).
pub async fn with_targets(
    ann: &Annotations,
    target: &ResolvedTable,
    at: &At,
    target_col: usize,
    rows: Vec<(Row, Cursor)>,
) -> Result<Vec<(Record, Cursor)>> {
    let version = at.version();
    let keys: Vec<Key> = rows
        .iter()
        .map(|(r, _)| {
            keys::row(
                target.uid(),
                version,
                r.values[target_col].as_id().unwrap_or(0),
            )
        })
        .collect();
    let got = ann.store.get_many(Table::Rows, &keys).await?;
    let mut out = Vec::with_capacity(rows.len());
    for ((r, c), g) in rows.into_iter().zip(got) {
        let Some(b) = g else { continue };
        let tr = decode(target, r.values[target_col].as_id().unwrap_or(0), &b)?;
        let ok = match at {
            At::Live(t, _) => tr.valid_at(*t),
            At::Version(..) => true,
        };
        if ok {
            out.push((vec![Some(r), Some(tr)], c));
        }
    }
    Ok(out)
}

/// Ids in an `in` set (used by joins to restrict the left side).
#[must_use]
pub fn id_set(ids: impl IntoIterator<Item = u64>) -> Set {
    Set::Ids(ids.into_iter().collect())
}
