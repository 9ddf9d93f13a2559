//! Packed root-id blocks: a version's rows of each busy root id (at least
//! `pack_min_rows` on one bound point) stored again, together, in columns
//! ([`RowBlock`]s of up to [`BLOCK_ROWS`] rows, in the root-id index's
//! order). The materialization writes them after its row tasks, from the
//! root-id index. A query for one root id and nothing else (`synapse_query`
//! by one pre or post root id, CAVE's `filter_equal_dict` on a root id)
//! reads a few blocks instead of an index entry per row, and writes Arrow
//! arrays straight from their columns: the row-at-a-time path cost about
//! 0.6 µs a row (the engine's iterator, a `Row` and its values, a cell at
//! a time into Arrow builders), and a neuron with thousands of synapses is
//! the p99 of such queries. Root ids with fewer rows, and versions made
//! before blocks existed, have none and are read from the root-id index.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use neurocube_core::annotation::block::{BlockColumn, RowBlock};
use neurocube_core::annotation::{Col, Filter, Op, Row};
use neurocube_store::{Key, PageToken, SortRange, Store, Table};

use super::cursor::Cursor;
use super::output::Encoder;
use super::query::{At, Plan};
use super::tables::ResolvedTable;
use super::{Annotations, QueryOutput};
use crate::error::{Result, ServiceError};
use crate::keys::{self, IndexKind};

/// Rows per block (a block is about 140 bytes a row for synapses).
pub(super) const BLOCK_ROWS: usize = 2048;
/// Root-index entries read per page while packing.
const PACK_PAGE: usize = 8192;
/// Blocks written per store call while packing (at most).
const PUT_BLOCKS: usize = 16;
/// Blocks read per store call while answering.
const READ_BLOCKS: usize = 4;

fn corrupt(t: &ResolvedTable, what: &'static str, key: String, e: impl ToString) -> ServiceError {
    ServiceError::Corrupt {
        what,
        key: format!("{}/{key}", t.name()),
        reason: e.to_string(),
    }
}

/// The blocks of one root id's rows (in index order) as store rows, or
/// `None` when they do not fit in columns (a column holding values of two
/// types): that root is then not packed at all, and read from the root-id
/// index, rather than failing the version.
fn blocks_of(
    uid: u64,
    version: u32,
    column: usize,
    root: u64,
    entries: &[Bytes],
) -> std::result::Result<Option<Vec<(Key, Bytes)>>, neurocube_core::annotation::RowError> {
    let partition = keys::index_partition(uid, version, column as u16, IndexKind::Packed, root);
    let mut out = Vec::with_capacity(entries.len().div_ceil(BLOCK_ROWS));
    for (n, chunk) in entries.chunks(BLOCK_ROWS).enumerate() {
        let rows = chunk
            .iter()
            .map(|b| Row::decode(b))
            .collect::<std::result::Result<Vec<Row>, _>>()?;
        let Ok(block) = RowBlock::from_rows(&rows) else {
            return Ok(None);
        };
        out.push((
            Key::new(partition.clone(), (n as u32).to_be_bytes().to_vec()),
            Bytes::from(block.to_bytes()),
        ));
    }
    Ok(Some(out))
}

impl Annotations {
    /// Write a version's packed blocks of the busy root ids of `column`
    /// from its root-id index (a task of the materialization's second
    /// phase; idempotent, as a task run again after a lost lease writes the
    /// same blocks). Returns how many root ids got blocks.
    pub(super) async fn pack_roots(
        &self,
        t: &ResolvedTable,
        version: u32,
        column: usize,
    ) -> Result<u64> {
        let min = self.config.pack_min_rows;
        if min == 0 {
            return Ok(0);
        }
        let sample = keys::index_partition(t.uid(), version, column as u16, IndexKind::Root, 0);
        let prefix = &sample[..sample.len() - 8];
        let mut page: Option<PageToken> = None;
        // The root whose entries are being gathered (undecoded: most roots
        // are small and never decoded here).
        let mut current: Option<(u64, Vec<Bytes>)> = None;
        let mut puts: Vec<(Key, Bytes)> = Vec::new();
        let mut packed = 0u64;
        let (started, mut rows, mut bytes) = (std::time::Instant::now(), 0usize, 0usize);
        // A root's entries read whole: its blocks, if it fits in columns.
        let mut finish = |r: u64, entries: &[Bytes], puts: &mut Vec<(Key, Bytes)>| -> Result<()> {
            match blocks_of(t.uid(), version, column, r, entries)
                .map_err(|e| corrupt(t, "row", format!("root {r}"), e))?
            {
                Some(blocks) => {
                    rows += entries.len();
                    bytes += blocks.iter().map(|(_, b)| b.len()).sum::<usize>();
                    puts.extend(blocks);
                    packed += 1;
                }
                None => tracing::warn!(
                    table = %t.name(),
                    version,
                    root = r,
                    "a root id's rows do not fit in columns: not packed"
                ),
            }
            Ok(())
        };
        loop {
            let p = self
                .store
                .scan_prefix(
                    Table::RowIndex,
                    prefix,
                    sample.len(),
                    page.take(),
                    PACK_PAGE,
                )
                .await?;
            for (key, v) in p.rows {
                let Some(root) = keys::index_key_of(&key.partition, prefix.len()) else {
                    continue;
                };
                if current.as_ref().is_none_or(|(r, _)| *r != root) {
                    if let Some((r, entries)) = current.replace((root, Vec::new()))
                        && entries.len() >= min
                    {
                        finish(r, &entries, &mut puts)?;
                    }
                    if puts.len() >= PUT_BLOCKS {
                        self.store
                            .put_many(Table::RowIndex, std::mem::take(&mut puts))
                            .await?;
                    }
                }
                if let Some((_, entries)) = current.as_mut() {
                    entries.push(v);
                }
            }
            match p.next {
                Some(n) => page = Some(n),
                None => break,
            }
        }
        if let Some((r, entries)) = current.take()
            && entries.len() >= min
        {
            finish(r, &entries, &mut puts)?;
        }
        if !puts.is_empty() {
            self.store.put_many(Table::RowIndex, puts).await?;
        }
        tracing::info!(
            table = %t.name(),
            version,
            column = %t.schema.columns[column].name,
            roots = packed,
            rows,
            bytes,
            secs = started.elapsed().as_secs_f64(),
            "packed the busy root ids' rows"
        );
        Ok(packed)
    }
}

/// The one root id a query asks for, when it asks for nothing else: its
/// column and the id (the plan reads that root's index partition, and the
/// filter's only condition is that id set).
#[must_use]
pub(super) fn one_root(plan: &Plan, filter: &Filter) -> Option<(usize, u64)> {
    let Plan::Index {
        column,
        kind: IndexKind::Root,
        keys,
    } = plan
    else {
        return None;
    };
    let ([key], [cond]) = (&keys[..], &filter.conditions[..]) else {
        return None;
    };
    (cond.col == Col::Data(*column) && matches!(cond.op, Op::In(_) | Op::Eq(_)))
        .then_some((*column, *key))
}

/// The sort key of row `i` of a block of `column`'s packed blocks: as in
/// the root-id index (the other bound point's root id, then the id, for a
/// table of two; else the id), for page tokens the row path resumes from.
fn sort_key(t: &ResolvedTable, column: usize, b: &RowBlock, i: usize) -> Bytes {
    let roots = t.schema.root_columns();
    let mut k = Vec::with_capacity(16);
    if let ([a, c], true) = (&roots[..], roots.contains(&column)) {
        let other = if *a == column { *c } else { *a };
        let id = match b.columns.get(other) {
            Some(BlockColumn::Id(t)) if t.has(i) => t.values[i],
            _ => 0,
        };
        k.extend_from_slice(&id.to_be_bytes());
    }
    k.extend_from_slice(&b.ids[i].to_be_bytes());
    Bytes::from(k)
}

/// How a packed answer is shaped.
pub(super) struct PackedQuery {
    /// The version read.
    pub at: At,
    /// The root id's column and the id.
    pub column: usize,
    pub root: u64,
    /// At most this many rows, if.
    pub limit: Option<u64>,
    /// Largest limit whose answer carries a next-page token.
    pub max_paged_limit: u64,
    /// Fields of the answer the caller fills in.
    pub version: Option<u32>,
    pub time_stamp_ms: i64,
    pub resolution: [f64; 3],
}

struct Reading {
    store: Arc<dyn Store>,
    t: ResolvedTable,
    partition: Vec<u8>,
    page: Option<PageToken>,
    /// Blocks read and not yet written.
    queue: std::collections::VecDeque<RowBlock>,
    enc: Encoder,
    left: u64,
    started: bool,
    more: bool,
    done: bool,
}

impl Reading {
    async fn fill(&mut self) -> Result<()> {
        let p = self
            .store
            .scan(
                Table::RowIndex,
                &self.partition,
                SortRange::all(),
                self.page.take(),
                READ_BLOCKS,
            )
            .await?;
        for (k, v) in p.rows {
            let b = RowBlock::decode(&v)
                .map_err(|e| corrupt(&self.t, "row block", format!("{:?}", k.sort), e))?;
            self.queue.push_back(b);
        }
        self.more = p.next.is_some();
        self.page = p.next;
        Ok(())
    }
}

/// Answer a one-root query of a version from its packed blocks, or `None`
/// when that root id has none (few rows, or a version made before blocks).
pub(super) async fn answer(
    ann: &Annotations,
    t: &ResolvedTable,
    q: PackedQuery,
    enc: Encoder,
    plan_text: String,
) -> Result<Option<QueryOutput>> {
    let At::Version(v, _) = q.at else {
        return Ok(None);
    };
    let partition = keys::index_partition(t.uid(), v, q.column as u16, IndexKind::Packed, q.root);
    let mut r = Reading {
        store: ann.store.clone(),
        t: t.clone(),
        partition,
        page: None,
        queue: Default::default(),
        enc,
        left: q.limit.unwrap_or(u64::MAX),
        started: false,
        more: false,
        done: false,
    };
    r.fill().await?;
    if r.queue.is_empty() {
        return Ok(None);
    }
    let plan = format!("{plan_text}, packed");
    let out = |next_page, body| QueryOutput {
        version: q.version,
        time_stamp_ms: q.time_stamp_ms,
        plan: plan.clone(),
        resolution: q.resolution,
        next_page,
        body,
    };
    if let Some(limit) = q.limit.filter(|l| *l <= q.max_paged_limit) {
        // A page: gathered, to know whether another follows.
        let mut parts = vec![r.enc.header()?];
        let mut left = limit as usize;
        let mut last: Option<Bytes> = None;
        let mut cut = false;
        loop {
            while let Some(b) = r.queue.pop_front() {
                if left == 0 {
                    cut = true;
                    break;
                }
                let n = b.len().min(left);
                parts.push(r.enc.block(&b, 0..n)?);
                last = Some(sort_key(t, q.column, &b, n - 1));
                left -= n;
                if n < b.len() {
                    cut = true;
                    break;
                }
            }
            if cut || !r.more {
                break;
            }
            r.fill().await?;
        }
        if last.is_none() {
            parts.push(r.enc.batch(&[])?);
        }
        parts.push(r.enc.finish()?);
        let next_page = last
            .filter(|_| cut)
            .map(|after| Cursor { k: 0, after }.token());
        return Ok(Some(out(
            next_page,
            stream::iter(parts.into_iter().map(Ok)).boxed(),
        )));
    }
    // Streamed: a block at a time, the schema first.
    let body = stream::try_unfold(r, |mut r| async move {
        if r.done {
            return Ok::<_, ServiceError>(None);
        }
        let head = if r.started {
            None
        } else {
            r.started = true;
            Some(r.enc.header()?)
        };
        if r.queue.is_empty() && r.more && r.left > 0 {
            r.fill().await?;
        }
        let part = match r.queue.pop_front().filter(|_| r.left > 0) {
            Some(b) => {
                let n = (b.len() as u64).min(r.left) as usize;
                r.left -= n as u64;
                r.enc.block(&b, 0..n)?
            }
            None => {
                r.done = true;
                r.enc.finish()?
            }
        };
        // A block's bytes go out as they are (a megabyte is not copied to
        // put the schema before it: the schema is a part of its own).
        Ok(Some((
            match head {
                Some(h) => stream::iter([Ok(h), Ok(part)]).boxed(),
                None => stream::iter([Ok(part)]).boxed(),
            },
            r,
        )))
    })
    .try_flatten()
    .boxed();
    Ok(Some(out(None, body)))
}

#[cfg(test)]
mod tests {
    use neurocube_core::annotation::Value;

    use super::*;

    fn entry(id: u64, v: Value) -> Bytes {
        Bytes::from(
            Row {
                id,
                created: 5,
                deleted: None,
                superceded_id: None,
                valid: true,
                values: vec![Value::Id(9), v],
            }
            .to_bytes(),
        )
    }

    #[test]
    fn a_root_is_packed_whole_or_not_at_all() {
        let entries: Vec<Bytes> = (0..5000).map(|i| entry(i, Value::Int(i as i64))).collect();
        let blocks = blocks_of(7, 2, 1, 9, &entries).unwrap().unwrap();
        assert_eq!(blocks.len(), 3, "2,048 rows a block");
        let partition = keys::index_partition(7, 2, 1, IndexKind::Packed, 9);
        let mut back = Vec::new();
        for (n, (k, v)) in blocks.iter().enumerate() {
            assert_eq!(k.partition, partition);
            assert_eq!(k.sort.as_ref(), (n as u32).to_be_bytes());
            let b = RowBlock::decode(v).unwrap();
            back.extend((0..b.len()).map(|i| Bytes::from(b.row(i).to_bytes())));
        }
        assert_eq!(back, entries, "every row, in order");
        // One row of another type in the last block: no block at all.
        let mut mixed = entries.clone();
        mixed[4500] = entry(4500, Value::Float(1.5));
        assert_eq!(blocks_of(7, 2, 1, 9, &mixed).unwrap(), None);
        // A corrupt entry is an error.
        mixed[10] = Bytes::from_static(b"\x01\x02");
        assert!(blocks_of(7, 2, 1, 9, &mixed).is_err());
    }
}
