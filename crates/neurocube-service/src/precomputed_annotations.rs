//! Annotation tables as Neuroglancer precomputed annotations, served from
//! the table (its newest version, else its live rows, as queries read):
//! a table with two points (a synapse table) is a `line` layer from the
//! first point to the second, with `size` as a float32 property if the
//! table has it; a table with one point is a `point` layer. Each bound
//! point's root id column is a relationship (`rel_{column}/{root id}`), so
//! Neuroglancer shows the synapses of a selected segment; `by_id/{id}` is
//! one row; `spatial0/0_0_0` is every row, for tables of at most
//! [`MAX_SPATIAL_ROWS`] (larger ones list no spatial index and are browsed
//! by segment).

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

/// Tables with more valid rows than this get no single-cell spatial index.
pub const MAX_SPATIAL_ROWS: u64 = 1_000_000;

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
        let (at, _, _) = self.annotations.resolve_at(t, None, None).await?;
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

    /// The precomputed annotation `info` of a table.
    pub async fn annotation_info(
        &self,
        _ctx: &RequestContext,
        ds: &DatasetName,
        name: &TableName,
    ) -> Result<J> {
        let t = self.annotations.table(ds, name).await?;
        let l = layout(&t)?;
        let d = self.catalog.dataset(ds).await?;
        let res = t.record.spec.voxel_resolution;
        // The dataset's bounds in the table's voxels.
        let lo: Vec<f64> = (0..3)
            .map(|i| d.offset[i] as f64 * d.voxel_size[i] / res[i])
            .collect();
        let hi: Vec<f64> = (0..3)
            .map(|i| (d.offset[i] + d.extent[i]) as f64 * d.voxel_size[i] / res[i])
            .collect();
        let rows = self.annotations.live_count(&t).await?;
        let spatial = if rows <= MAX_SPATIAL_ROWS {
            json!([{
                "key": "spatial0", "grid_shape": [1, 1, 1],
                "chunk_size": (0..3).map(|i| (hi[i] - lo[i]).max(1.0)).collect::<Vec<_>>(),
                "limit": rows.max(1),
            }])
        } else {
            json!([])
        };
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
        if index == "spatial0" && key == "0_0_0" {
            if self.annotations.live_count(&t).await? > MAX_SPATIAL_ROWS {
                return Err(ServiceError::field(
                    "index",
                    format!(
                        "table '{name}' has more than {MAX_SPATIAL_ROWS} rows: it has no spatial index; browse it by segment"
                    ),
                ));
            }
            let rows = self.annotation_rows(&t, Filters::default()).await?;
            let list: Vec<Annotation> = rows.iter().filter_map(|r| annotation(&l, r)).collect();
            return Ok(encode_many(&list).into());
        }
        let mut known = vec!["by_id/{id}".to_string(), "spatial0/0_0_0".into()];
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
