//! The connectivity graph of a synapse table: its (pre, post) edges with
//! synapse count and summed size, over a version or the live rows at a
//! time, for a selection of nodes (root ids), with node attributes joined
//! from node tables (cell types, proofreading status).
//!
//! A version's edges come from its edge index (one partition per pre root
//! id, built when the version was materialized), so a subgraph reads its
//! nodes' partitions and no synapse rows, and the whole graph reads every
//! edge partition once. Live rows, boxes and post-only selections read the
//! synapses through the query planner and add them up. Memory holds the
//! distinct edges, never the synapses.

mod encode;
mod nodes;
mod request;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use neurocube_core::annotation::{Filter, Row, Value};

use crate::annotations::edges::{EdgeIndexScan, all_edge_lists, read_edges};
use crate::annotations::{Annotations, At, ResolvedTable};
use crate::error::{Result, ServiceError};

pub use encode::{Bin, GraphFormat, GraphOutput, Stats, encode, stats};
pub use request::GraphRequest;

use nodes::NodeAttrs;

/// Pre root ids whose edges are read per store call.
const KEY_BATCH: usize = 256;

/// One edge: synapses from `pre` onto `post`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Edge {
    /// Presynaptic root id.
    pub pre: u64,
    /// Postsynaptic root id.
    pub post: u64,
    /// Synapses.
    pub syn_count: u64,
    /// Their summed `size` (0 when the table has none).
    pub size_sum: f64,
}

/// A node with its degrees and attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Root id.
    pub id: u64,
    /// Partners it sends synapses to.
    pub out_degree: u64,
    /// Partners it receives synapses from.
    pub in_degree: u64,
    /// Synapses it sends.
    pub out_synapses: u64,
    /// Synapses it receives.
    pub in_synapses: u64,
    /// Values of the attribute columns (same order as [`Graph::attributes`]).
    pub attrs: Vec<Value>,
}

/// A node attribute column.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    /// Name in the output.
    pub name: String,
    /// The node table it comes from.
    pub table: String,
    /// Its type.
    pub kind: neurocube_core::annotation::ColumnType,
}

/// A built graph.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The synapse table.
    pub table: String,
    /// Names of its root-id columns (pre, post).
    pub root_columns: [String; 2],
    /// The version read (`None`: live rows).
    pub version: Option<u32>,
    /// The time the rows were valid at (ms).
    pub time_stamp_ms: i64,
    /// Nodes, by id.
    pub nodes: Vec<Node>,
    /// Attribute columns of the nodes.
    pub attributes: Vec<Attribute>,
    /// Edges, by (pre, post).
    pub edges: Vec<Edge>,
    /// How the edges were found.
    pub plan: String,
}

/// Which synapses and nodes a request selects, resolved to ids.
#[derive(Debug, Default)]
struct Selection {
    /// The induced subgraph of these (sorted) nodes.
    ids: Option<Vec<u64>>,
    /// Edges out of these (sorted).
    pre: Option<Vec<u64>>,
    /// Edges into these.
    post: Option<Vec<u64>>,
    /// Synapses whose point (column) lies in the box (inclusive).
    bbox: Option<(String, [[i64; 3]; 2])>,
}

/// The root-id columns (pre, post) of a synapse-like table: exactly two
/// bound points.
fn root_columns(t: &ResolvedTable) -> Result<[usize; 2]> {
    let roots = t.schema.root_columns();
    match roots[..] {
        [a, b] => Ok([a, b]),
        _ => Err(ServiceError::field(
            "table",
            format!(
                "table '{}' (schema '{}') is not a synapse table: a graph needs two bound points (pre and post), it has {}",
                t.name(),
                t.record.spec.schema,
                roots.len()
            ),
        )),
    }
}

impl Annotations {
    /// Build the graph a request asks for.
    pub async fn graph(
        self: &Arc<Self>,
        ds: &neurocube_core::DatasetName,
        req: &GraphRequest,
    ) -> Result<Graph> {
        let name = match &req.table {
            Some(t) => t.clone(),
            None => crate::annotations::synapse_table(self, ds).await?,
        };
        let t = self.table(ds, &name).await?;
        let roots = root_columns(&t)?;
        let (at, version, time_stamp_ms) = self
            .resolve_at(&t, req.version, req.timestamp.as_ref())
            .await?;
        let mut sel = req.selection()?;
        // A selection through a node table: its rows' root ids.
        if let Some(s) = &req.select_table {
            let chosen = nodes::select(self, ds, s, req, &at).await?;
            sel.ids = Some(match sel.ids.take() {
                Some(ids) => {
                    let keep: HashSet<u64> = chosen.into_iter().collect();
                    ids.into_iter().filter(|i| keep.contains(i)).collect()
                }
                None => chosen,
            });
        }
        let (mut edges, plan) = self.edges(&t, roots, &at, &sel).await?;
        let autapses = req.autapses.unwrap_or(false);
        let min = req.min_synapses.unwrap_or(1);
        edges.retain(|e| (autapses || e.pre != e.post) && e.syn_count >= min);
        edges.sort_unstable_by_key(|e| (e.pre, e.post));
        // Nodes: the selected ids (isolated ones too), else the edges' ends.
        let mut degrees: BTreeMap<u64, [u64; 4]> = BTreeMap::new();
        if let Some(ids) = &sel.ids {
            for i in ids {
                degrees.insert(*i, [0; 4]);
            }
        }
        for e in &edges {
            let d = degrees.entry(e.pre).or_default();
            d[0] += 1;
            d[2] += e.syn_count;
            let d = degrees.entry(e.post).or_default();
            d[1] += 1;
            d[3] += e.syn_count;
        }
        let ids: Vec<u64> = degrees.keys().copied().collect();
        let NodeAttrs { attributes, values } =
            nodes::attributes(self, ds, req, &name, &at, &ids).await?;
        let nodes = degrees
            .into_iter()
            .map(|(id, d)| Node {
                id,
                out_degree: d[0],
                in_degree: d[1],
                out_synapses: d[2],
                in_synapses: d[3],
                attrs: values
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| vec![Value::Null; attributes.len()]),
            })
            .collect();
        Ok(Graph {
            table: name.to_string(),
            root_columns: [
                t.schema.columns[roots[0]].name.clone(),
                t.schema.columns[roots[1]].name.clone(),
            ],
            version,
            time_stamp_ms,
            nodes,
            attributes,
            edges,
            plan,
        })
    }

    /// The edges a selection spans, and how they were found.
    async fn edges(
        self: &Arc<Self>,
        t: &ResolvedTable,
        roots: [usize; 2],
        at: &At,
        sel: &Selection,
    ) -> Result<(Vec<Edge>, String)> {
        if let At::Version(v, _) = at
            && sel.bbox.is_none()
        {
            let v = *v;
            match (&sel.ids, &sel.pre, &sel.post) {
                (Some(ids), None, None) => {
                    let keep: HashSet<u64> = ids.iter().copied().collect();
                    let e = self.edge_index(t, v, roots[0], ids, Some(&keep)).await?;
                    return Ok((e, format!("edge index of {} nodes", ids.len())));
                }
                (None, Some(pre), post) => {
                    let keep: Option<HashSet<u64>> =
                        post.as_ref().map(|p| p.iter().copied().collect());
                    let e = self.edge_index(t, v, roots[0], pre, keep.as_ref()).await?;
                    return Ok((e, format!("edge index of {} pre ids", pre.len())));
                }
                (None, None, None) => {
                    let e = self.all_edges(t, v, roots[0]).await?;
                    return Ok((e, "the whole edge index".into()));
                }
                _ => {}
            }
        }
        // Otherwise: the synapses themselves, through the query planner.
        let filter = sel.filter(t)?;
        let plan = crate::annotations::query::plan(t, &filter, matches!(at, At::Version(..)));
        let text = format!("synapses by {}", plan.describe(t));
        let size_col = t.schema.column("size");
        let mut sums: HashMap<(u64, u64), (u64, f64)> = HashMap::new();
        let rows = self.matching_rows(t, at, filter, plan);
        futures::pin_mut!(rows);
        while let Some(batch) = rows.try_next().await? {
            for r in batch {
                add_synapse(&mut sums, &r, roots, size_col);
            }
        }
        let edges = sums
            .into_iter()
            .map(|((pre, post), (n, s))| Edge {
                pre,
                post,
                syn_count: n,
                size_sum: s,
            })
            .collect();
        Ok((edges, text))
    }

    /// Edges out of `pres` from a version's edge index (summed over its row
    /// blocks), to partners in `keep` if given.
    async fn edge_index(
        &self,
        t: &ResolvedTable,
        version: u32,
        pre_col: usize,
        pres: &[u64],
        keep: Option<&HashSet<u64>>,
    ) -> Result<Vec<Edge>> {
        let mut out = Vec::new();
        for batch in pres.chunks(KEY_BATCH) {
            let got = read_edges(self.store(), t.uid(), version, pre_col, batch).await?;
            for (pre, edges) in batch.iter().zip(got) {
                out.extend(
                    edges
                        .into_iter()
                        .filter(|e| keep.is_none_or(|k| k.contains(&e.post)))
                        .map(|e| Edge {
                            pre: *pre,
                            post: e.post,
                            syn_count: e.count,
                            size_sum: e.size,
                        }),
                );
            }
        }
        Ok(out)
    }

    /// Every edge of a version: its edge lists, else (a version made before
    /// them) its whole edge index, read in order.
    async fn all_edges(
        &self,
        t: &ResolvedTable,
        version: u32,
        pre_col: usize,
    ) -> Result<Vec<Edge>> {
        let lists = match all_edge_lists(self.store(), t.uid(), version, pre_col).await? {
            Some(lists) => lists,
            None => {
                let mut scan = EdgeIndexScan::new(self.store().clone(), t.uid(), version, pre_col);
                let mut lists = Vec::new();
                while let Some(page) = scan.next().await? {
                    lists.extend(page);
                }
                lists
            }
        };
        Ok(lists
            .into_iter()
            .flat_map(|(pre, edges)| {
                edges.into_iter().map(move |e| Edge {
                    pre,
                    post: e.post,
                    syn_count: e.count,
                    size_sum: e.size,
                })
            })
            .collect())
    }
}

fn add_synapse(
    sums: &mut HashMap<(u64, u64), (u64, f64)>,
    r: &Row,
    roots: [usize; 2],
    size_col: Option<usize>,
) {
    let (Some(pre), Some(post)) = (r.values[roots[0]].as_id(), r.values[roots[1]].as_id()) else {
        return;
    };
    let size = size_col
        .and_then(|c| match r.values[c] {
            Value::Float(f) => Some(f),
            Value::Int(i) => Some(i as f64),
            _ => None,
        })
        .unwrap_or(0.0);
    let e = sums.entry((pre, post)).or_insert((0, 0.0));
    e.0 += 1;
    e.1 += size;
}

impl Selection {
    /// The selection as a filter on the synapse table.
    fn filter(&self, t: &ResolvedTable) -> Result<Filter> {
        let roots = root_columns(t)?;
        let name = |c: usize| t.schema.columns[c].name.clone();
        let mut in_dict = serde_json::Map::new();
        if let Some(ids) = &self.ids {
            in_dict.insert(name(roots[0]), ids.clone().into());
            in_dict.insert(name(roots[1]), ids.clone().into());
        }
        if let Some(p) = &self.pre {
            in_dict.insert(name(roots[0]), p.clone().into());
        }
        if let Some(p) = &self.post {
            in_dict.insert(name(roots[1]), p.clone().into());
        }
        let mut f = neurocube_core::annotation::Filters::default();
        if !in_dict.is_empty() {
            f.filter_in_dict = Some(in_dict);
        }
        if let Some((col, b)) = &self.bbox {
            let mut m = serde_json::Map::new();
            m.insert(col.clone(), serde_json::json!(b));
            f.filter_spatial_dict = Some(m);
        }
        Filter::parse(&f, &t.schema).map_err(|e| ServiceError::field(e.field, e.message))
    }
}
