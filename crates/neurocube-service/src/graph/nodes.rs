//! Node tables: tables whose rows each name one neuron (root id), either by
//! a bound point of their own (proofreading status, cell types as points,
//! nuclei) or through the target of a reference table (cell types on
//! nuclei, as MICrONS has them). They select nodes and give them
//! attributes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use neurocube_core::annotation::{ColumnType, Filter, Filters, Role, Row, Value};
use neurocube_core::{DatasetName, TableName};

use super::{Attribute, GraphRequest};
use crate::annotations::query::plan;
use crate::annotations::{Annotations, At, ResolvedTable};
use crate::error::{Result, ServiceError};

/// How a node table's row names its neuron.
enum NodeRoot {
    /// Its own bound point's root-id column.
    Own(usize),
    /// The target row's root-id column (`root`), through `target_id` (`col`).
    Target {
        target: ResolvedTable,
        col: usize,
        root: usize,
    },
}

/// The single bound point's root-id column of a schema, if it has exactly one.
fn single_root(t: &ResolvedTable) -> Option<usize> {
    match t.schema.root_columns()[..] {
        [r] => Some(r),
        _ => None,
    }
}

async fn node_root(ann: &Annotations, t: &ResolvedTable) -> Result<Option<NodeRoot>> {
    if let Some(r) = single_root(t) {
        return Ok(Some(NodeRoot::Own(r)));
    }
    if let (true, Some(name)) = (t.schema.reference, &t.record.spec.reference_table) {
        let target = ann.table(&t.dataset, name).await?;
        let col = t.schema.columns.iter().position(|c| c.role == Role::Target);
        if let (Some(col), Some(root)) = (col, single_root(&target)) {
            return Ok(Some(NodeRoot::Target { target, col, root }));
        }
    }
    Ok(None)
}

/// The rows of a node table matching `filter`, each with its neuron.
async fn rooted_rows(
    ann: &Arc<Annotations>,
    t: &ResolvedTable,
    how: &NodeRoot,
    at: &At,
    filter: Filter,
) -> Result<Vec<(u64, Row)>> {
    // A reference table's targets, read at the same version or time.
    let target_at = match how {
        NodeRoot::Target { target, .. } => Some(ann.at_same(target, at).await?),
        NodeRoot::Own(_) => None,
    };
    let p = plan(t, &filter, matches!(at, At::Version(..)));
    let rows = ann.matching_rows(t, at, filter, p);
    futures::pin_mut!(rows);
    let mut out = Vec::new();
    while let Some(batch) = rows.try_next().await? {
        match how {
            NodeRoot::Own(r) => {
                out.extend(
                    batch
                        .into_iter()
                        .filter_map(|row| Some((row.values[*r].as_id()?, row))),
                );
            }
            NodeRoot::Target { target, col, root } => {
                let tat = target_at.as_ref().unwrap_or(at);
                for (row, tr) in ann.with_target_rows(target, tat, *col, batch).await? {
                    if let Some(id) = tr.values[*root].as_id() {
                        out.push((id, row));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Root ids of the rows of `select_table` whose `select_column` is one of
/// `select_values`.
pub(super) async fn select(
    ann: &Arc<Annotations>,
    ds: &DatasetName,
    name: &TableName,
    req: &GraphRequest,
    at: &At,
) -> Result<Vec<u64>> {
    let t = ann.table(ds, name).await?;
    let how = node_root(ann, &t)
        .await?
        .ok_or_else(|| not_node_table(&t, "select_table"))?;
    let tat = ann.at_same(&t, at).await?;
    let column = req.select_column.clone().unwrap_or_default();
    let mut in_dict = serde_json::Map::new();
    in_dict.insert(
        column,
        serde_json::Value::Array(req.select_values.clone().unwrap_or_default()),
    );
    let filters = Filters {
        filter_in_dict: Some(in_dict),
        ..Filters::default()
    };
    let filter = Filter::parse(&filters, &t.schema).map_err(|e| {
        ServiceError::field(
            "select_column",
            format!("select_table '{name}': {}", e.message),
        )
    })?;
    let mut ids: Vec<u64> = rooted_rows(ann, &t, &how, &tat, filter)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn not_node_table(t: &ResolvedTable, field: &str) -> ServiceError {
    ServiceError::field(
        field,
        format!(
            "table '{}' does not name neurons: a node table has one bound point (a pt_root_id) or references a table that has",
            t.name()
        ),
    )
}

/// Node attributes: columns and each node's values.
pub(super) struct NodeAttrs {
    /// The columns.
    pub attributes: Vec<Attribute>,
    /// Values by root id (nodes without a row are absent).
    pub values: HashMap<u64, Vec<Value>>,
}

fn attribute_kind(k: &ColumnType) -> bool {
    matches!(
        k,
        ColumnType::Int
            | ColumnType::Float
            | ColumnType::Bool
            | ColumnType::String
            | ColumnType::Enum(_)
    )
}

/// The attributes of `ids` from the requested node tables (default: every
/// node table of the dataset in the same version). A neuron with several
/// rows in a table takes its first (lowest id, as CAVE users keep with
/// `drop_duplicates`).
pub(super) async fn attributes(
    ann: &Arc<Annotations>,
    ds: &DatasetName,
    req: &GraphRequest,
    graph_table: &TableName,
    at: &At,
    ids: &[u64],
) -> Result<NodeAttrs> {
    let explicit = req.node_tables.is_some();
    let names: Vec<TableName> = match &req.node_tables {
        Some(n) => n.clone(),
        None => ann
            .tables(ds)
            .await?
            .into_iter()
            .map(|r| r.name)
            .filter(|n| n != graph_table)
            .collect(),
    };
    let mut attributes: Vec<Attribute> = Vec::new();
    let mut values: HashMap<u64, Vec<Value>> = HashMap::new();
    let wanted: HashSet<u64> = ids.iter().copied().collect();
    for name in names {
        let t = ann.table(ds, &name).await?;
        let Some(how) = node_root(ann, &t).await? else {
            if explicit {
                return Err(not_node_table(&t, "node_tables"));
            }
            continue;
        };
        let tat = match ann.at_same(&t, at).await {
            Ok(a) => a,
            Err(e) if explicit => return Err(e),
            // Not in this version: no attributes from it.
            Err(_) => continue,
        };
        let cols: Vec<usize> = t
            .schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.role == Role::Data && attribute_kind(&c.kind))
            .map(|(i, _)| i)
            .collect();
        if cols.is_empty() {
            continue;
        }
        let first = attributes.len();
        for &c in &cols {
            let col = &t.schema.columns[c];
            let mut out = col.name.clone();
            if attributes.iter().any(|a| a.name == out) {
                out = format!("{}_{}", col.name, t.name());
            }
            attributes.push(Attribute {
                name: out,
                table: t.name().to_string(),
                kind: col.kind.clone(),
            });
        }
        // Own root ids are indexed: read only the nodes' rows. A reference
        // table is read whole (its rows name targets, not neurons).
        let filter = match &how {
            NodeRoot::Own(r)
                if !ids.is_empty() && ids.len() <= neurocube_core::annotation::MAX_LIST =>
            {
                let mut in_dict = serde_json::Map::new();
                in_dict.insert(t.schema.columns[*r].name.clone(), ids.to_vec().into());
                Filter::parse(
                    &Filters {
                        filter_in_dict: Some(in_dict),
                        ..Filters::default()
                    },
                    &t.schema,
                )
                .map_err(|e| ServiceError::field(e.field, e.message))?
            }
            _ => Filter::default(),
        };
        let mut seen: HashSet<u64> = HashSet::new();
        let mut rows = rooted_rows(ann, &t, &how, &tat, filter).await?;
        rows.sort_by_key(|(id, r)| (*id, r.id));
        for (id, row) in rows {
            if !wanted.contains(&id) || !seen.insert(id) {
                continue;
            }
            let v = values.entry(id).or_default();
            v.resize(first, Value::Null);
            v.extend(cols.iter().map(|&c| row.values[c].clone()));
        }
    }
    for v in values.values_mut() {
        v.resize(attributes.len(), Value::Null);
    }
    Ok(NodeAttrs { attributes, values })
}
