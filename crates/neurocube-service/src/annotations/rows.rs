//! Writing rows: every row is checked (required columns, positions inside
//! the dataset, target ids that exist) before anything is written; ids are
//! assigned (or given ids reserved) by compare-and-set on the table's next
//! id; supervoxel and root ids of bound points are looked up in the bound
//! segmentation, a chunk decode serving every point inside it; the rows and
//! their index entries then go through the batch writer in one group.
//! Updates append a new row and supersede the old; deletes set `deleted`.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use neurocube_core::annotation::{ColumnType, Role, Row, Value};
use neurocube_core::{ChunkIndex, morton};
use neurocube_store::Table;

use super::Annotations;
use super::tables::ResolvedTable;
use super::upload::Incoming;
use super::writer::WriteSet;
use crate::error::{Result, ServiceError};
use crate::jobs::now_ms;
use crate::keys::{self, IndexKind};
use crate::volume::Target;

/// Ids a process reserves at once for rows without given ids.
const ID_BLOCK: u64 = 1024;
/// Given ids may run this far past twice a table's rows.
const SPARSE_IDS_SLACK: u64 = 1 << 20;
/// Chunks decoded at once for a root-id lookup.
const LOOKUP_IN_FLIGHT: usize = 8;

fn row_error(row: usize, column: &str, reason: String) -> ServiceError {
    ServiceError::InvalidRow {
        row,
        column: column.to_string(),
        reason,
    }
}

impl Annotations {
    /// The next free id of a table (1 for a new table).
    pub(crate) async fn next_id(&self, uid: u64) -> Result<u64> {
        let got = self
            .store
            .get_many(Table::Meta, &[keys::table_ids(uid)])
            .await?
            .remove(0);
        Ok(got.filter(|b| b.len() == 8).map_or(1, |b| {
            u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
        }))
    }

    /// Ids for rows without given ids, from this process's reserved block
    /// of the table's ids (a new block of at least [`ID_BLOCK`] ids is
    /// reserved by compare-and-set when it runs out): no compare-and-set per
    /// request, so many writers do not contend on one key.
    async fn assign(&self, t: &ResolvedTable, n: u64) -> Result<Vec<u64>> {
        {
            let mut blocks = self
                .id_blocks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((next, end)) = blocks.get_mut(&t.uid())
                && *end - *next >= n
            {
                let ids = (*next..*next + n).collect();
                *next += n;
                return Ok(ids);
            }
        }
        let want = n.max(ID_BLOCK);
        let key = keys::table_ids(t.uid());
        for _ in 0..64 {
            let old = self
                .store
                .get_many(Table::Meta, std::slice::from_ref(&key))
                .await?
                .remove(0);
            let next = old.as_ref().filter(|b| b.len() == 8).map_or(1, |b| {
                u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
            });
            let end = next
                .checked_add(want)
                .ok_or_else(|| row_error(0, "id", "ids would pass 2^64; use smaller ids".into()))?;
            if self
                .store
                .compare_and_set(
                    Table::Meta,
                    key.clone(),
                    old,
                    Some(Bytes::from(end.to_le_bytes().to_vec())),
                )
                .await?
            {
                let mut blocks = self
                    .id_blocks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                blocks.insert(t.uid(), (next + n, end));
                return Ok((next..next + n).collect());
            }
        }
        Err(ServiceError::Contended {
            what: format!("the ids of table {}", t.name()),
            attempts: 64,
        })
    }

    /// Ids for `rows`: given ids are reserved (each must be new: at or past
    /// the table's next free id), the rest assigned after them.
    async fn allocate(&self, t: &ResolvedTable, rows: &[Incoming]) -> Result<Vec<u64>> {
        if rows.iter().all(|r| r.id.is_none()) {
            return self.assign(t, rows.len() as u64).await;
        }
        let mut given: Vec<(usize, u64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.id.map(|id| (i, id)))
            .collect();
        given.sort_unstable_by_key(|g| g.1);
        if let Some(w) = given.windows(2).find(|w| w[0].1 == w[1].1) {
            return Err(row_error(
                w[1].0,
                "id",
                format!("id {} is given twice in this upload", w[1].1),
            ));
        }
        let auto = (rows.len() - given.len()) as u64;
        // Rows live in blocks of ids, which scans and versions read one by
        // one: ids spread thin would make them read mostly empty blocks.
        let (added, _) = self.writer.counts(t.uid()).await?;
        let bound = (u64::try_from(added).unwrap_or(0) + rows.len() as u64)
            .saturating_mul(2)
            .saturating_add(SPARSE_IDS_SLACK);
        if let Some((i, id)) = given.last().filter(|g| g.1 >= bound) {
            return Err(row_error(
                *i,
                "id",
                format!(
                    "id {id} would spread the table's ids too thin: with {} rows (this upload's included) ids must stay below {bound} (twice the rows, plus {SPARSE_IDS_SLACK}), because rows are stored in blocks of {} ids that scans and versions read one by one; leave ids out to have them assigned (keep your own id in a column of its own)",
                    u64::try_from(added).unwrap_or(0) + rows.len() as u64,
                    1u64 << keys::ROW_BLOCK_BITS
                ),
            ));
        }
        let key = keys::table_ids(t.uid());
        for _ in 0..64 {
            let old = self
                .store
                .get_many(Table::Meta, std::slice::from_ref(&key))
                .await?
                .remove(0);
            let next = old.as_ref().filter(|b| b.len() == 8).map_or(1, |b| {
                u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
            });
            if let Some((i, id)) = given.first().filter(|g| g.1 < next) {
                return Err(row_error(
                    *i,
                    "id",
                    format!(
                        "id {id} is below the table's next free id {next}: it may exist or have been handed out; leave ids out to have them assigned, or use ids from {next} on"
                    ),
                ));
            }
            let start = given.last().map_or(next, |g| g.1 + 1).max(next);
            let end = start
                .checked_add(auto)
                .ok_or_else(|| row_error(0, "id", "ids would pass 2^64; use smaller ids".into()))?;
            if self
                .store
                .compare_and_set(
                    Table::Meta,
                    key.clone(),
                    old,
                    Some(Bytes::from(end.to_le_bytes().to_vec())),
                )
                .await?
            {
                let mut next_auto = start;
                return Ok(rows
                    .iter()
                    .map(|r| {
                        r.id.unwrap_or_else(|| {
                            next_auto += 1;
                            next_auto - 1
                        })
                    })
                    .collect());
            }
        }
        Err(ServiceError::Contended {
            what: format!("the ids of table {}", t.name()),
            attempts: 64,
        })
    }

    /// Check every row before anything is written.
    async fn check(&self, t: &ResolvedTable, rows: &[Incoming]) -> Result<()> {
        let ds = self.catalog.dataset(&t.dataset).await?;
        let res = t.record.spec.voxel_resolution;
        let schema = &t.schema;
        for (i, r) in rows.iter().enumerate() {
            for (c, col) in schema.columns.iter().enumerate() {
                let v = &r.values[c];
                if col.required && matches!(v, Value::Null) {
                    return Err(row_error(i, &col.name, "is required".into()));
                }
                if let (ColumnType::Position, Value::Pos(p)) = (&col.kind, v) {
                    for a in 0..3 {
                        let nm = p[a] as f64 * res[a];
                        let lo = ds.offset[a] as f64 * ds.voxel_size[a];
                        let hi = (ds.offset[a] + ds.extent[a]) as f64 * ds.voxel_size[a];
                        if nm < lo || nm >= hi {
                            return Err(row_error(
                                i,
                                &col.name,
                                format!(
                                    "position {p:?} (voxels of {res:?} nm) lies outside dataset '{}', which spans {}..{} on {} in these voxels",
                                    ds.name,
                                    (lo / res[a]).ceil(),
                                    (hi / res[a]).ceil(),
                                    ["x", "y", "z"][a]
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if schema.reference {
            self.check_targets(t, rows).await?;
        }
        Ok(())
    }

    /// Every `target_id` names a valid row of the target table.
    async fn check_targets(&self, t: &ResolvedTable, rows: &[Incoming]) -> Result<()> {
        let Some(target) = &t.record.spec.reference_table else {
            return Ok(());
        };
        let target = self.table(&t.dataset, target).await?;
        let col = t.schema.column("target_id").unwrap_or(0);
        for (start, chunk) in rows.chunks(1000).enumerate().map(|(i, c)| (i * 1000, c)) {
            let ids: Vec<Option<u64>> = chunk.iter().map(|r| r.values[col].as_id()).collect();
            let keys: Vec<_> = ids
                .iter()
                .map(|id| keys::row(target.uid(), keys::LIVE, id.unwrap_or(0)))
                .collect();
            let got = self.store.get_many(Table::Rows, &keys).await?;
            for (j, (id, g)) in ids.iter().zip(got).enumerate() {
                let ok = g
                    .as_deref()
                    .and_then(|b| Row::decode(b).ok())
                    .is_some_and(|r| r.valid);
                if !ok {
                    return Err(row_error(
                        start + j,
                        "target_id",
                        format!(
                            "{} is not a valid row of table '{}'",
                            id.map_or_else(|| "null".to_string(), |i| i.to_string()),
                            target.name()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Fill the supervoxel and root ids of bound points from the table's
    /// segmentation (unchanged when the table has none): points grouped by
    /// chunk, each chunk decoded once (through the decoded-chunk cache).
    pub(super) async fn lookup_rows(&self, t: &ResolvedTable, rows: &mut [Row]) -> Result<()> {
        let Some(seg) = &t.record.spec.segmentation else {
            return Ok(());
        };
        let bound: Vec<(usize, usize, usize)> = t
            .schema
            .points
            .iter()
            .filter_map(|p| p.ids.map(|(sv, root)| (p.position, sv, root)))
            .collect();
        if bound.is_empty() {
            return Ok(());
        }
        let rc = self.catalog.channel(&t.dataset, seg).await?;
        let grid = rc.channel.meta.grid();
        let level = rc.dataset.level(0);
        let bounds = level.bounds();
        let res = t.record.spec.voxel_resolution;
        let vox = rc.dataset.voxel_size;
        // (row, point) wanting the label at a voxel, by chunk.
        let mut wants: HashMap<ChunkIndex, Vec<(usize, usize, [u64; 3])>> = HashMap::new();
        for (ri, row) in rows.iter().enumerate() {
            for (pi, (pos_col, _, _)) in bound.iter().enumerate() {
                let Some(p) = row.values[*pos_col].as_pos() else {
                    continue;
                };
                let v: [u64; 3] = std::array::from_fn(|a| {
                    ((p[a] as f64 * res[a] / vox[a]).floor().max(0.0)) as u64
                });
                if (0..3).any(|a| v[a] < bounds.start[a] || v[a] >= bounds.end[a]) {
                    continue;
                }
                let idx = [
                    v[0] / grid.chunk[0],
                    v[1] / grid.chunk[1],
                    v[2] / grid.chunk[2],
                ];
                wants.entry(idx).or_default().push((ri, pi, v));
            }
        }
        let elem = rc.channel.meta.dtype.size();
        let labels: Vec<Vec<(usize, usize, u64)>> = stream::iter(wants)
            .map(|(idx, points)| {
                let t = Target {
                    rc: rc.clone(),
                    level,
                    bbox: grid.chunk_box(idx),
                };
                async move {
                    let chunk = self.tiles.decoded_chunk(&t, idx).await?;
                    let cb = chunk.bbox;
                    Ok::<_, ServiceError>(
                        points
                            .into_iter()
                            .map(|(ri, pi, v)| {
                                let label = chunk.data.as_ref().map_or(0, |d| {
                                    let s = cb.shape();
                                    let off = (((v[2] - cb.start[2]) * s[1] + (v[1] - cb.start[1]))
                                        * s[0]
                                        + (v[0] - cb.start[0]))
                                        as usize
                                        * elem;
                                    let mut w = [0u8; 8];
                                    if let Some(b) = d.get(off..off + elem) {
                                        w[..elem].copy_from_slice(b);
                                    }
                                    u64::from_le_bytes(w)
                                });
                                (ri, pi, label)
                            })
                            .collect(),
                    )
                }
            })
            .buffer_unordered(LOOKUP_IN_FLIGHT)
            .try_collect()
            .await?;
        for (ri, pi, label) in labels.into_iter().flatten() {
            let (_, sv, root) = bound[pi];
            rows[ri].values[sv] = Value::Id(label);
            rows[ri].values[root] = Value::Id(label);
        }
        Ok(())
    }

    /// The index partitions a row belongs to in a version: by root id of
    /// each bound point, and by spatial cell of the first point.
    pub(super) fn index_partitions(
        &self,
        t: &ResolvedTable,
        version: u32,
        row: &Row,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (c, col) in t.schema.columns.iter().enumerate() {
            if let (Role::Root(_), Some(root)) = (&col.role, row.values[c].as_id()) {
                out.push(keys::index_partition(
                    t.uid(),
                    version,
                    c as u16,
                    IndexKind::Root,
                    root,
                ));
            }
        }
        if let Some(p) = t.schema.points.first()
            && let Some(pos) = row.values[p.position].as_pos()
        {
            let bits = t.cell_bits;
            if pos.iter().all(|c| *c >= 0) {
                let cell = morton::encode([
                    pos[0] as u64 >> bits[0],
                    pos[1] as u64 >> bits[1],
                    pos[2] as u64 >> bits[2],
                ]);
                out.push(keys::index_partition(
                    t.uid(),
                    version,
                    p.position as u16,
                    IndexKind::Cell,
                    cell,
                ));
            }
        }
        out
    }

    /// Insert uploaded rows; returns their ids, in upload order.
    pub async fn insert(&self, t: &ResolvedTable, rows: Vec<Incoming>) -> Result<Vec<u64>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, mut set) = self.prepare_insert(t, rows).await?;
        let min = self.config.ingest_min_rows;
        if min > 0 && set.rows >= min && self.store.ingests() {
            // Index entries first, straight into the engine's tables; the
            // rows' group commit after them is the commit point. Live reads
            // go from an index entry to its row and skip entries without
            // one, so until then (or for good, if the commit never comes)
            // the entries are invisible. Three of a synapse's four store
            // entries then skip the journal, the memtable and its flush.
            self.writer.check_room(set.rows)?;
            let (index, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut set.puts)
                .into_iter()
                .partition(|(table, _, _)| *table == Table::RowIndex);
            set.puts = rest;
            let index = index.into_iter().map(|(_, k, v)| (k, v)).collect();
            self.store.ingest(Table::RowIndex, index).await?;
        }
        self.writer.submit(set).await?;
        Ok(ids)
    }

    /// Check new rows, give them ids and look their points up: their ids
    /// and the store writes that insert them (for the batch writer, with
    /// whatever else must be durable with them).
    pub(crate) async fn prepare_insert(
        &self,
        t: &ResolvedTable,
        rows: Vec<Incoming>,
    ) -> Result<(Vec<u64>, WriteSet)> {
        self.check(t, &rows).await?;
        let ids = self.allocate(t, &rows).await?;
        let now = now_ms() as i64;
        let mut full: Vec<Row> = rows
            .into_iter()
            .zip(&ids)
            .map(|(r, id)| Row {
                id: *id,
                created: now,
                deleted: None,
                superceded_id: None,
                valid: true,
                values: r.values,
            })
            .collect();
        self.lookup_rows(t, &mut full).await?;
        let set = self.live_writes(t, &full, 0)?;
        Ok((ids, set))
    }

    /// The store writes of new live rows and their index entries.
    fn live_writes(&self, t: &ResolvedTable, rows: &[Row], invalidated: i64) -> Result<WriteSet> {
        let uid = t.uid();
        let mut puts = Vec::with_capacity(rows.len() * 4);
        for row in rows {
            for partition in self.index_partitions(t, keys::LIVE, row) {
                puts.push((
                    Table::RowIndex,
                    keys::index_entry(partition, row.id),
                    Bytes::new(),
                ));
            }
            puts.push((
                Table::Rows,
                keys::row(uid, keys::LIVE, row.id),
                Bytes::from(row.to_bytes()),
            ));
        }
        Ok(WriteSet {
            puts,
            counts: vec![(uid, rows.len() as i64, invalidated)],
            rows: rows.len(),
        })
    }

    /// The current live row of an id, with its stored bytes.
    pub(crate) async fn live_row(&self, t: &ResolvedTable, id: u64) -> Result<(Row, Bytes)> {
        let key = keys::row(t.uid(), keys::LIVE, id);
        let got = self
            .store
            .get_many(Table::Rows, std::slice::from_ref(&key))
            .await?
            .remove(0)
            .ok_or_else(|| ServiceError::UnknownRow {
                table: t.name().to_string(),
                id,
            })?;
        let row = Row::decode(&got).map_err(|e| ServiceError::Corrupt {
            what: "row",
            key: format!("{}/{id}", t.name()),
            reason: e.to_string(),
        })?;
        Ok((row, got))
    }

    /// Mark a live row deleted (and superseded by `by`), if it is still
    /// what was read.
    async fn retire(&self, t: &ResolvedTable, old: (Row, Bytes), by: Option<u64>) -> Result<bool> {
        let (row, bytes) = old;
        let now = now_ms() as i64;
        let new = Row {
            deleted: Some(now.max(row.created)),
            superceded_id: by,
            valid: false,
            ..row
        };
        Ok(self
            .store
            .compare_and_set(
                Table::Rows,
                keys::row(t.uid(), keys::LIVE, new.id),
                Some(bytes),
                Some(Bytes::from(new.to_bytes())),
            )
            .await?)
    }

    /// Update rows: each names the id of a valid row; a new row with the
    /// given values supersedes it. Returns (old id, new id) pairs.
    pub async fn update(&self, t: &ResolvedTable, rows: Vec<Incoming>) -> Result<Vec<(u64, u64)>> {
        let mut olds = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let Some(id) = r.id else {
                return Err(row_error(
                    i,
                    "id",
                    "an update names the id of the row it replaces".into(),
                ));
            };
            let (row, bytes) = self.live_row(t, id).await.map_err(|e| match e {
                ServiceError::UnknownRow { id, .. } => {
                    row_error(i, "id", format!("no row {id} in table '{}'", t.name()))
                }
                other => other,
            })?;
            if !row.valid {
                return Err(ServiceError::RowNotValid {
                    table: t.name().to_string(),
                    id,
                    superceded_id: row.superceded_id,
                });
            }
            olds.push((row, bytes));
        }
        let fresh: Vec<Incoming> = rows
            .into_iter()
            .map(|r| Incoming {
                id: None,
                values: r.values,
            })
            .collect();
        let new_ids = self.insert(t, fresh).await?;
        let mut pairs = Vec::with_capacity(new_ids.len());
        let mut retired = 0;
        for (old, new) in olds.into_iter().zip(&new_ids) {
            let old_id = old.0.id;
            if self.retire(t, old, Some(*new)).await? {
                retired += 1;
                pairs.push((old_id, *new));
            } else {
                // Another update got there first: withdraw ours.
                let mine = self.live_row(t, *new).await?;
                self.retire(t, mine, None).await?;
                self.count(t, 0, retired + 1).await?;
                return Err(ServiceError::RowNotValid {
                    table: t.name().to_string(),
                    id: old_id,
                    superceded_id: None,
                });
            }
        }
        self.count(t, 0, retired).await?;
        Ok(pairs)
    }

    /// Delete rows by id (they stay, with `deleted` set and `valid` false).
    pub async fn delete_rows(&self, t: &ResolvedTable, ids: &[u64]) -> Result<usize> {
        let mut olds = Vec::with_capacity(ids.len());
        for &id in ids {
            let (row, bytes) = self.live_row(t, id).await?;
            if !row.valid {
                return Err(ServiceError::RowNotValid {
                    table: t.name().to_string(),
                    id,
                    superceded_id: row.superceded_id,
                });
            }
            olds.push((row, bytes));
        }
        let mut n = 0;
        for old in olds {
            let id = old.0.id;
            if !self.retire(t, old, None).await? {
                self.count(t, 0, n).await?;
                return Err(ServiceError::RowNotValid {
                    table: t.name().to_string(),
                    id,
                    superceded_id: None,
                });
            }
            n += 1;
        }
        self.count(t, 0, n).await?;
        Ok(n as usize)
    }

    async fn count(&self, t: &ResolvedTable, added: i64, invalidated: i64) -> Result<()> {
        if added == 0 && invalidated == 0 {
            return Ok(());
        }
        self.writer
            .submit(WriteSet {
                puts: Vec::new(),
                counts: vec![(t.uid(), added, invalidated)],
                rows: 0,
            })
            .await
    }
}
