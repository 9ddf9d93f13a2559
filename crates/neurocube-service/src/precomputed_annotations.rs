//! Annotation tables as Neuroglancer precomputed annotations, served from
//! the table (its newest version, else its live rows, as queries read):
//! a table with two points (a synapse table) is a `line` layer from the
//! first point to the second, with `size` as a float32 property if the
//! table has it; a table with one point is a `point` layer. Each bound
//! point's root id column is a relationship (`rel_{column}/{root id}`), so
//! Neuroglancer shows the synapses of a selected segment; `by_id/{id}` is
//! one row; `spatial{l}/{i}_{j}_{k}` are the cells of a multi-level spatial
//! index (see [`SpatialIndex`]) over each annotation's first point.

use bytes::Bytes;
use futures::TryStreamExt;
use neurocube_core::annotation::precomputed::{Annotation, encode_many, encode_one};
use neurocube_core::annotation::{Filter, Filters, Row, Value};
use neurocube_core::{DatasetName, TableName};
use serde_json::{Value as J, json};

use crate::Services;
use crate::annotations::ResolvedTable;
use crate::context::RequestContext;
use crate::error::{Result, ServiceError};

/// Annotations per spatial cell the index aims at (the `limit` of each level).
pub const CELL_LIMIT: u64 = 10_000;
/// The finest level has 2^6 = 64 cells per axis.
const MAX_LEVEL: u32 = 6;
/// Most ids a coarse cell reads by id (level 0 of dense ids reads about
/// `CELL_LIMIT`; level 1 eight times as many).
const MAX_ID_READS: u64 = 1 << 18;

/// A table's multi-level spatial index: level `l` has `2^l` cells per
/// axis, and every annotation is in exactly one cell of one level, coarse
/// levels holding an even sample of about `CELL_LIMIT` per cell, as
/// Neuroglancer's format asks. Which level an annotation is in follows
/// from its id alone:
///
/// - Ids dense (at most twice as many ids handed out as rows, the usual
///   case: the server assigns them): by an even spread of ids. With `n`
///   ids handed out and `q = CELL_LIMIT·8^l`, the ids of levels up to `l`
///   are `ceil(j·n/q)` for `j = 0, 1, ...`: about `CELL_LIMIT·8^l` of them,
///   each level's set inside the next one's, and all ids once `n ≤ q`. A
///   coarse cell then reads only those ids (about `CELL_LIMIT` at level 0)
///   instead of every row in its box (the whole table at level 0).
/// - Otherwise (ids given by users, spread over a wide range): by hash. An
///   annotation is in the first level `l` where its id's hash falls below
///   `p[l] = min(1, CELL_LIMIT·8^l / rows)` (the finest level takes the
///   rest), and a cell reads the rows in its box.
struct SpatialIndex {
    lo: [f64; 3],
    hi: [f64; 3],
    p: Vec<f64>,
    /// Rows.
    rows: u64,
    /// Ids handed out (the table's next id), when they are dense.
    dense: Option<u64>,
}

impl SpatialIndex {
    fn new(lo: [f64; 3], hi: [f64; 3], rows: u64, next_id: u64) -> Self {
        let mut last = 0;
        while last < MAX_LEVEL && rows > CELL_LIMIT.saturating_mul(8u64.pow(last)) {
            last += 1;
        }
        let p = (0..=last)
            .map(|l| {
                if l == last {
                    1.0
                } else {
                    (CELL_LIMIT as f64 * 8f64.powi(l as i32) / rows.max(1) as f64).min(1.0)
                }
            })
            .collect();
        let dense = (next_id <= rows.saturating_mul(2)).then_some(next_id);
        Self {
            lo,
            hi,
            p,
            rows,
            dense,
        }
    }

    /// The finest level.
    fn last(&self) -> usize {
        self.p.len() - 1
    }

    /// Rows in a cell of level `l` on average (what reading its box reads).
    fn rows_per_cell(&self, l: usize) -> u64 {
        self.rows / 8u64.pow(l as u32)
    }

    /// `(n, q)` of level `l`'s spread of dense ids (see [`SpatialIndex`]).
    fn spread(next: u64, l: usize) -> (u128, u128) {
        (
            u128::from(next),
            u128::from(CELL_LIMIT) * 8u128.pow(l as u32),
        )
    }

    /// Whether a dense id is among the ids of levels up to `l`: some `j`
    /// has `ceil(j·n/q) = id`, i.e. a multiple of `n` in `((id-1)·q, id·q]`.
    fn in_spread(next: u64, l: usize, id: u64) -> bool {
        let (n, q) = Self::spread(next, l);
        let id = u128::from(id);
        n <= q || id == 0 || id * q / n > (id - 1) * q / n
    }

    /// The dense ids of levels up to `l`, ascending.
    fn spread_ids(next: u64, l: usize) -> Vec<u64> {
        let (n, q) = Self::spread(next, l);
        if n <= q {
            return (0..next).collect();
        }
        (0u128..)
            .map(|j| (j * n).div_ceil(q))
            .take_while(|&id| id < n)
            .map(|id| id as u64)
            .collect()
    }

    fn cells(l: usize) -> u64 {
        1 << l
    }

    fn width(&self, l: usize) -> [f64; 3] {
        [0, 1, 2].map(|i| ((self.hi[i] - self.lo[i]) / Self::cells(l) as f64).max(1e-9))
    }

    /// The level of an annotation, from its id.
    fn level_of(&self, id: u64) -> usize {
        if let Some(next) = self.dense {
            return (0..self.last())
                .find(|&l| Self::in_spread(next, l, id))
                .unwrap_or(self.last());
        }
        // splitmix64: an even spread of ids over [0, 1).
        let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        self.p
            .iter()
            .position(|&p| u < p)
            .unwrap_or(self.p.len() - 1)
    }

    /// The integer voxel box `[a, b)` of a cell, per axis.
    fn cell_box(&self, l: usize, idx: [u64; 3]) -> ([i64; 3], [i64; 3]) {
        let w = self.width(l);
        let n = Self::cells(l);
        let mut a = [0i64; 3];
        let mut b = [0i64; 3];
        for i in 0..3 {
            a[i] = (self.lo[i] + idx[i] as f64 * w[i]).floor() as i64;
            b[i] = if idx[i] + 1 == n {
                self.hi[i].ceil() as i64
            } else {
                (self.lo[i] + (idx[i] + 1) as f64 * w[i]).floor() as i64
            };
        }
        (a, b)
    }

    fn info(&self) -> J {
        (0..self.p.len())
            .map(|l| {
                let n = Self::cells(l);
                json!({
                    "key": format!("spatial{l}"),
                    "grid_shape": [n, n, n],
                    "chunk_size": self.width(l),
                    "limit": CELL_LIMIT,
                })
            })
            .collect()
    }
}

/// Which columns make an annotation.
struct Layout {
    /// Position columns: one (point) or two (line).
    positions: Vec<usize>,
    /// The `size` column, if any.
    size: Option<usize>,
    /// Root id columns, with their names (the relationships).
    related: Vec<(String, usize)>,
}

fn layout(t: &ResolvedTable) -> Result<Layout> {
    let points = &t.schema.points;
    let positions: Vec<usize> = points.iter().take(2).map(|p| p.position).collect();
    if positions.is_empty() {
        return Err(ServiceError::field(
            "table",
            format!(
                "table '{}' has no position column: only tables with points are precomputed annotations",
                t.name()
            ),
        ));
    }
    let related = points
        .iter()
        .take(2)
        .filter_map(|p| p.ids.map(|(_, root)| root))
        .map(|c| (t.schema.columns[c].name.clone(), c))
        .collect();
    Ok(Layout {
        positions,
        size: t.schema.column("size"),
        related,
    })
}

fn number(v: &Value) -> f32 {
    match v {
        Value::Int(i) => *i as f32,
        Value::Float(f) => *f as f32,
        Value::Id(i) => *i as f32,
        _ => 0.0,
    }
}

fn annotation(l: &Layout, r: &Row) -> Option<Annotation> {
    let mut geometry = Vec::with_capacity(6);
    for &c in &l.positions {
        match r.values.get(c)? {
            Value::Pos(p) => geometry.extend(p.iter().map(|&v| v as f32)),
            _ => return None,
        }
    }
    let related = l
        .related
        .iter()
        .map(|(_, c)| match r.values.get(*c) {
            Some(Value::Id(id)) if *id != 0 => vec![*id],
            Some(Value::Int(id)) if *id > 0 => vec![*id as u64],
            _ => Vec::new(),
        })
        .collect();
    Some(Annotation {
        id: r.id,
        geometry,
        properties: l.size.map(|c| number(&r.values[c])).into_iter().collect(),
        related,
    })
}

impl Services {
    /// The rows of `t` matching `f`, where its queries read by default.
    async fn annotation_rows(&self, t: &ResolvedTable, f: Filters) -> Result<Vec<Row>> {
        self.rows_at(t, f, None).await
    }

    /// The rows of `t` matching `f` at `timestamp` (live rows then), or
    /// where its queries read by default (`None`).
    pub(crate) async fn rows_at(
        &self,
        t: &ResolvedTable,
        f: Filters,
        timestamp: Option<&J>,
    ) -> Result<Vec<Row>> {
        let (at, _, _) = self.annotations.resolve_at(t, None, timestamp).await?;
        let filter =
            Filter::parse(&f, &t.schema).map_err(|e| ServiceError::field(e.field, e.message))?;
        let plan = crate::annotations::query::plan(
            t,
            &filter,
            matches!(at, crate::annotations::query::At::Version(..)),
        );
        let mut out = Vec::new();
        let rows = self.annotations.matching_rows(t, &at, filter, plan);
        futures::pin_mut!(rows);
        while let Some(batch) = rows.try_next().await? {
            out.extend(batch);
        }
        Ok(out)
    }

    /// The spatial index of a table: the dataset's bounds in the table's
    /// voxels, levels by its row count.
    async fn spatial_index(&self, t: &ResolvedTable) -> Result<SpatialIndex> {
        let d = self.catalog.dataset(&t.dataset).await?;
        let res = t.record.spec.voxel_resolution;
        let lo = [0, 1, 2].map(|i| d.offset[i] as f64 * d.voxel_size[i] / res[i]);
        let hi = [0, 1, 2].map(|i| (d.offset[i] + d.extent[i]) as f64 * d.voxel_size[i] / res[i]);
        let rows = self.annotations.live_count(t).await?;
        let next_id = self.annotations.next_id(t.uid()).await?;
        Ok(SpatialIndex::new(lo, hi, rows, next_id))
    }

    /// The precomputed annotation `info` of a table.
    pub async fn annotation_info(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
    ) -> Result<J> {
        let t = self.annotations.table(ds, name).await?;
        let l = layout(&t)?;
        let res = t.record.spec.voxel_resolution;
        let index = self.spatial_index(&t).await?;
        let (lo, hi) = (index.lo, index.hi);
        let spatial = index.info();
        Ok(json!({
            "@type": "neuroglancer_annotations_v1",
            "dimensions": {
                "x": [res[0] * 1e-9, "m"], "y": [res[1] * 1e-9, "m"], "z": [res[2] * 1e-9, "m"],
            },
            "lower_bound": lo, "upper_bound": hi,
            "annotation_type": if l.positions.len() == 2 { "line" } else { "point" },
            "properties": if l.size.is_some() { json!([{"id": "size", "type": "float32"}]) } else { json!([]) },
            "relationships": l.related.iter().map(|(n, _)| json!({"id": n, "key": format!("rel_{n}")})).collect::<Vec<_>>(),
            "by_id": {"key": "by_id"},
            "spatial": spatial,
        }))
    }

    /// One file of a table's annotation indexes: `by_id/{id}`,
    /// `rel_{column}/{root id}` or `spatial0/0_0_0`.
    pub async fn annotation_index(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
        index: &str,
        key: &str,
    ) -> Result<Bytes> {
        let t = self.annotations.table(ds, name).await?;
        let l = layout(&t)?;
        let id = |what: &str| {
            key.parse::<u64>()
                .map_err(|_| ServiceError::field(what, format!("'{key}' must be a decimal {what}")))
        };
        let in_dict = |col: &str, v: u64| {
            let mut m = serde_json::Map::new();
            m.insert(col.to_string(), json!([v]));
            Filters {
                filter_in_dict: Some(m),
                ..Filters::default()
            }
        };
        if index == "by_id" {
            let id = id("id")?;
            let rows = self.annotation_rows(&t, in_dict("id", id)).await?;
            let a = rows.iter().find_map(|r| annotation(&l, r)).ok_or_else(|| {
                ServiceError::UnknownRow {
                    table: name.to_string(),
                    id,
                }
            })?;
            return Ok(encode_one(&a).into());
        }
        if let Some(col) = index.strip_prefix("rel_")
            && l.related.iter().any(|(n, _)| n == col)
        {
            let root = id("root id")?;
            let rows = self.annotation_rows(&t, in_dict(col, root)).await?;
            let list: Vec<Annotation> = rows.iter().filter_map(|r| annotation(&l, r)).collect();
            return Ok(encode_many(&list).into());
        }
        let spatial = self.spatial_index(&t).await?;
        if let Some(level) = index
            .strip_prefix("spatial")
            .and_then(|v| v.parse::<usize>().ok())
            && level < spatial.p.len()
        {
            let n = SpatialIndex::cells(level);
            let idx: Vec<u64> = key.split('_').filter_map(|v| v.parse().ok()).collect();
            let [i, j, k] = idx[..] else {
                return Err(ServiceError::field(
                    "cell",
                    format!("cell '{key}' must look like i_j_k"),
                ));
            };
            if i >= n || j >= n || k >= n {
                return Err(ServiceError::field(
                    "cell",
                    format!("cell '{key}' is outside level {level}'s {n}x{n}x{n} grid"),
                ));
            }
            let (a, b) = spatial.cell_box(level, [i, j, k]);
            if (0..3).any(|x| b[x] <= a[x]) {
                return Ok(encode_many(&[]).into());
            }
            let col = t.schema.columns[l.positions[0]].name.clone();
            let mut m = serde_json::Map::new();
            m.insert(col, json!([a, [b[0] - 1, b[1] - 1, b[2] - 1]]));
            let mut f = Filters {
                filter_spatial_dict: Some(m),
                ..Filters::default()
            };
            // A coarse cell of dense ids: read its level's ids, not its box.
            if let Some(next) = spatial.dense {
                let candidates = CELL_LIMIT.saturating_mul(8u64.pow(level as u32));
                if candidates <= MAX_ID_READS && candidates < spatial.rows_per_cell(level) {
                    let mut ids = serde_json::Map::new();
                    ids.insert("id".into(), J::from(SpatialIndex::spread_ids(next, level)));
                    f.filter_in_dict = Some(ids);
                }
            }
            let rows = self.annotation_rows(&t, f).await?;
            let list: Vec<Annotation> = rows
                .iter()
                .filter(|r| spatial.level_of(r.id) == level)
                .filter_map(|r| annotation(&l, r))
                .collect();
            return Ok(encode_many(&list).into());
        }
        let mut known = vec![
            "by_id/{id}".to_string(),
            "spatial{level}/{i}_{j}_{k}".into(),
        ];
        known.extend(
            l.related
                .iter()
                .map(|(n, _)| format!("rel_{n}/{{root id}}")),
        );
        Err(ServiceError::UnknownScale {
            key: format!("{index}/{key}"),
            keys: known.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_ids_spread_evenly_over_nested_levels() {
        for next in [1u64, 9_999, 10_001, 20_001, 30_001, 1_000_001] {
            let idx = SpatialIndex::new([0.0; 3], [1.0; 3], next.max(1), next);
            let mut seen = vec![0usize; idx.p.len()];
            for id in 0..next {
                seen[idx.level_of(id)] += 1;
            }
            assert_eq!(seen.iter().sum::<usize>() as u64, next);
            for (l, &count) in seen.iter().enumerate() {
                // About the limit per cell, never much more.
                let per_cell = count as f64 / 8f64.powi(l as i32);
                assert!(
                    per_cell <= CELL_LIMIT as f64 + 1.0,
                    "{next}: level {l} {per_cell}"
                );
                // The ids listed for a level are exactly those of it and coarser.
                let listed = SpatialIndex::spread_ids(next, l);
                let want: Vec<u64> = (0..next).filter(|&id| idx.level_of(id) <= l).collect();
                if l < idx.last() {
                    assert_eq!(listed, want, "{next}: level {l}");
                }
            }
            if idx.p.len() > 1 {
                // Level 0 holds about the limit.
                assert!(seen[0] as u64 >= CELL_LIMIT - 1, "{next}: {}", seen[0]);
            }
        }
    }
}
