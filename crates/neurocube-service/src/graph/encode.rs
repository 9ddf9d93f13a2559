//! A graph on the wire: a CSV edge list, JSON (nodes and edges, networkx's
//! node-link form), GraphML, an npz sparse adjacency matrix, Arrow IPC, or
//! the connectivity matrix as a PNG heatmap ordered by cell type; and its
//! statistics. Text formats are written a slice at a time as the body is
//! sent, so the response never holds a second copy of the graph.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use neurocube_core::annotation::{ColumnType, Value};
use serde::Serialize;

use super::Graph;
use crate::error::{Result, ServiceError};

/// Wire format of a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// Edge list: `pre,post,syn_count,size_sum`.
    Csv,
    /// `{"nodes": [...], "edges": [...]}` (networkx node-link).
    Json,
    /// GraphML (networkx, Gephi).
    GraphMl,
    /// scipy.sparse CSR matrix and its node order.
    Npz,
    /// Arrow IPC stream of the edges.
    Arrow,
    /// The connectivity matrix as a heatmap.
    Png,
}

impl GraphFormat {
    /// All names, for error messages.
    pub const NAMES: &'static str = "csv, json, graphml, npz, arrow, png";

    /// From `format=`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "csv" => Self::Csv,
            "json" => Self::Json,
            "graphml" => Self::GraphMl,
            "npz" => Self::Npz,
            "arrow" | "ipc" => Self::Arrow,
            "png" => Self::Png,
            _ => return None,
        })
    }

    /// From an `Accept` header: the first type named that we speak.
    #[must_use]
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept.split(',').find_map(|part| {
            Some(match part.split(';').next()?.trim() {
                "text/csv" => Self::Csv,
                "application/json" => Self::Json,
                "application/graphml+xml" => Self::GraphMl,
                "application/x-npz" => Self::Npz,
                "application/vnd.apache.arrow.stream" => Self::Arrow,
                "image/png" => Self::Png,
                _ => return None,
            })
        })
    }

    /// MIME type.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv",
            Self::Json => "application/json",
            Self::GraphMl => "application/graphml+xml",
            Self::Npz => "application/x-npz",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Png => "image/png",
        }
    }

    /// File name extension.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::GraphMl => "graphml",
            Self::Npz => "npz",
            Self::Arrow => "arrow",
            Self::Png => "png",
        }
    }
}

/// A graph ready to stream.
pub struct GraphOutput {
    /// The format.
    pub format: GraphFormat,
    /// The version read (`None`: live rows).
    pub version: Option<u32>,
    /// The time the rows were valid at (ms).
    pub time_stamp_ms: i64,
    /// How the edges were found.
    pub plan: String,
    /// Nodes.
    pub nodes: usize,
    /// Edges.
    pub edges: usize,
    /// The body.
    pub body: BoxStream<'static, Result<Bytes>>,
}

/// Bytes of text written per body chunk, about.
const CHUNK: usize = 256 << 10;

/// Encode a graph (`png_nodes`: the most nodes a PNG may draw).
pub fn encode(
    g: Graph,
    format: GraphFormat,
    order_by: Option<&str>,
    png_nodes: usize,
) -> Result<GraphOutput> {
    let (version, time_stamp_ms, plan) = (g.version, g.time_stamp_ms, g.plan.clone());
    let (nodes, edges) = (g.nodes.len(), g.edges.len());
    let body = match format {
        GraphFormat::Csv | GraphFormat::Json | GraphFormat::GraphMl => text(Arc::new(g), format),
        GraphFormat::Npz => one(npz(&g)?),
        GraphFormat::Arrow => one(arrow(&g)?),
        GraphFormat::Png => one(png(&g, order_by, png_nodes)?),
    };
    Ok(GraphOutput {
        format,
        version,
        time_stamp_ms,
        plan,
        nodes,
        edges,
        body,
    })
}

fn one(b: Vec<u8>) -> BoxStream<'static, Result<Bytes>> {
    stream::once(async move { Ok(Bytes::from(b)) }).boxed()
}

/// Sections of a text body, written in order.
#[derive(Clone, Copy)]
enum Section {
    Head,
    Nodes(usize),
    Between,
    Edges(usize),
    Tail,
    Done,
}

fn text(g: Arc<Graph>, f: GraphFormat) -> BoxStream<'static, Result<Bytes>> {
    stream::unfold(Section::Head, move |mut s| {
        let g = g.clone();
        async move {
            let mut out = String::with_capacity(CHUNK + 1024);
            while out.len() < CHUNK {
                s = match s {
                    Section::Head => {
                        head(&g, f, &mut out);
                        Section::Nodes(0)
                    }
                    Section::Nodes(i) if i < g.nodes.len() && f != GraphFormat::Csv => {
                        node(&g, f, i, &mut out);
                        Section::Nodes(i + 1)
                    }
                    Section::Nodes(_) => {
                        if f == GraphFormat::Json {
                            out.push_str("],\"edges\":[");
                        }
                        Section::Between
                    }
                    Section::Between => Section::Edges(0),
                    Section::Edges(i) if i < g.edges.len() => {
                        edge(&g, f, i, &mut out);
                        Section::Edges(i + 1)
                    }
                    Section::Edges(_) => Section::Tail,
                    Section::Tail => {
                        match f {
                            GraphFormat::Json => out.push_str("]}\n"),
                            GraphFormat::GraphMl => out.push_str("</graph>\n</graphml>\n"),
                            _ => {}
                        }
                        Section::Done
                    }
                    Section::Done => break,
                };
            }
            if out.is_empty() {
                None
            } else {
                Some((Ok(Bytes::from(out)), s))
            }
        }
    })
    .boxed()
}

fn graphml_type(k: &ColumnType) -> &'static str {
    match k {
        ColumnType::Int => "long",
        ColumnType::Float => "double",
        ColumnType::Bool => "boolean",
        _ => "string",
    }
}

const DEGREES: [&str; 4] = ["in_degree", "out_degree", "in_synapses", "out_synapses"];

fn head(g: &Graph, f: GraphFormat, out: &mut String) {
    let [pre, post] = &g.root_columns;
    match f {
        GraphFormat::Csv => {
            let _ = writeln!(out, "{pre},{post},syn_count,size_sum");
        }
        GraphFormat::Json => {
            out.push_str("{\"directed\":true,\"multigraph\":false,\"graph\":");
            let meta = serde_json::json!({
                "table": g.table,
                "version": g.version,
                "time_stamp_ms": g.time_stamp_ms,
                "pre_column": pre,
                "post_column": post,
                "node_attributes": g.attributes.iter().map(|a| serde_json::json!({"name": a.name, "table": a.table})).collect::<Vec<_>>(),
            });
            out.push_str(&meta.to_string());
            out.push_str(",\"nodes\":[");
        }
        GraphFormat::GraphMl => {
            out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"http://graphml.graphdrawing.org/xmlns http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd\">\n");
            for (i, d) in DEGREES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "<key id=\"n{i}\" for=\"node\" attr.name=\"{d}\" attr.type=\"long\"/>"
                );
            }
            for (i, a) in g.attributes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "<key id=\"a{i}\" for=\"node\" attr.name=\"{}\" attr.type=\"{}\"/>",
                    xml(&a.name),
                    graphml_type(&a.kind)
                );
            }
            out.push_str("<key id=\"e0\" for=\"edge\" attr.name=\"syn_count\" attr.type=\"long\"/>\n<key id=\"e1\" for=\"edge\" attr.name=\"size_sum\" attr.type=\"double\"/>\n");
            out.push_str("<graph id=\"G\" edgedefault=\"directed\">\n");
        }
        _ => {}
    }
}

fn node(g: &Graph, f: GraphFormat, i: usize, out: &mut String) {
    let n = &g.nodes[i];
    let degrees = [n.in_degree, n.out_degree, n.in_synapses, n.out_synapses];
    match f {
        GraphFormat::Json => {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"id\":{}", n.id);
            for (d, v) in DEGREES.iter().zip(degrees) {
                let _ = write!(out, ",\"{d}\":{v}");
            }
            for (a, v) in g.attributes.iter().zip(&n.attrs) {
                let _ = write!(
                    out,
                    ",{}:{}",
                    serde_json::Value::String(a.name.clone()),
                    json_value(v)
                );
            }
            out.push('}');
        }
        GraphFormat::GraphMl => {
            let _ = write!(out, "<node id=\"{}\">", n.id);
            for (k, v) in degrees.iter().enumerate() {
                let _ = write!(out, "<data key=\"n{k}\">{v}</data>");
            }
            for (k, v) in n.attrs.iter().enumerate() {
                if let Some(t) = plain(v) {
                    let _ = write!(out, "<data key=\"a{k}\">{}</data>", xml(&t));
                }
            }
            out.push_str("</node>\n");
        }
        _ => {}
    }
}

fn edge(g: &Graph, f: GraphFormat, i: usize, out: &mut String) {
    let e = &g.edges[i];
    match f {
        GraphFormat::Csv => {
            let _ = writeln!(out, "{},{},{},{}", e.pre, e.post, e.syn_count, e.size_sum);
        }
        GraphFormat::Json => {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"source\":{},\"target\":{},\"syn_count\":{},\"size_sum\":{}}}",
                e.pre,
                e.post,
                e.syn_count,
                json_float(e.size_sum)
            );
        }
        GraphFormat::GraphMl => {
            let _ = writeln!(
                out,
                "<edge source=\"{}\" target=\"{}\"><data key=\"e0\">{}</data><data key=\"e1\">{}</data></edge>",
                e.pre, e.post, e.syn_count, e.size_sum
            );
        }
        _ => {}
    }
}

fn json_float(f: f64) -> String {
    if f.is_finite() {
        serde_json::Value::from(f).to_string()
    } else {
        "null".into()
    }
}

fn json_value(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => json_float(*f),
        Value::Bool(b) => b.to_string(),
        Value::Id(i) => i.to_string(),
        Value::Str(s) => serde_json::Value::String(s.clone()).to_string(),
        _ => "null".into(),
    }
}

/// A value as plain text (`None`: absent).
fn plain(v: &Value) -> Option<String> {
    Some(match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Id(i) => i.to_string(),
        Value::Str(s) => s.clone(),
        _ => return None,
    })
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

fn encode_error(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal {
        during: "encoding a graph",
        reason: e.to_string(),
    }
}

/// The node order and (row, column, synapses) cells of the adjacency matrix.
fn cells(g: &Graph, order: &[usize]) -> Vec<(u32, u32, u64)> {
    let index: HashMap<u64, u32> = order
        .iter()
        .enumerate()
        .map(|(pos, &i)| (g.nodes[i].id, pos as u32))
        .collect();
    let mut c: Vec<(u32, u32, u64)> = g
        .edges
        .iter()
        .filter_map(|e| Some((*index.get(&e.pre)?, *index.get(&e.post)?, e.syn_count)))
        .collect();
    c.sort_unstable();
    c
}

fn npz(g: &Graph) -> Result<Vec<u8>> {
    let order: Vec<usize> = (0..g.nodes.len()).collect();
    let ids: Vec<u64> = g.nodes.iter().map(|n| n.id).collect();
    let c: Vec<(u32, u32, i64)> = cells(g, &order)
        .into_iter()
        .map(|(r, c, n)| (r, c, n as i64))
        .collect();
    neurocube_core::graph::npz::csr_npz(&ids, &c).map_err(encode_error)
}

fn arrow(g: &Graph) -> Result<Vec<u8>> {
    let [pre, post] = &g.root_columns;
    let schema = Arc::new(ArrowSchema::new(vec![
        Field::new(pre, DataType::Int64, false),
        Field::new(post, DataType::Int64, false),
        Field::new("syn_count", DataType::Int64, false),
        Field::new("size_sum", DataType::Float64, false),
    ]));
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(encode_error)?;
    for part in g.edges.chunks(65_536) {
        let mut a = Int64Builder::with_capacity(part.len());
        let mut b = Int64Builder::with_capacity(part.len());
        let mut n = Int64Builder::with_capacity(part.len());
        let mut s = Float64Builder::with_capacity(part.len());
        for e in part {
            a.append_value(e.pre as i64);
            b.append_value(e.post as i64);
            n.append_value(e.syn_count as i64);
            s.append_value(e.size_sum);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(a.finish()),
            Arc::new(b.finish()),
            Arc::new(n.finish()),
            Arc::new(s.finish()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(encode_error)?;
        w.write(&batch).map_err(encode_error)?;
    }
    w.finish().map_err(encode_error)?;
    w.into_inner().map_err(encode_error)
}

/// The label a node is grouped by in the PNG ("" when it has none).
fn label(g: &Graph, attr: Option<usize>, i: usize) -> String {
    attr.and_then(|a| plain(&g.nodes[i].attrs[a]))
        .unwrap_or_default()
}

fn png(g: &Graph, order_by: Option<&str>, limit: usize) -> Result<Vec<u8>> {
    if g.nodes.len() > limit {
        return Err(ServiceError::field(
            "format",
            format!(
                "the connectivity PNG draws at most {limit} nodes (server setting annotations.max_graph_png_nodes) and this selection has {}; select fewer nodes (ids, pre_ids, select_table) or ask for format=npz",
                g.nodes.len()
            ),
        ));
    }
    let by = order_by.unwrap_or("cell_type");
    let attr = g.attributes.iter().position(|a| a.name == by);
    if attr.is_none() && order_by.is_some() {
        return Err(ServiceError::field(
            "order_by",
            format!(
                "no node attribute '{by}'; the attributes are: {}",
                g.attributes
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let mut order: Vec<usize> = (0..g.nodes.len()).collect();
    // By label (unlabelled last), then id.
    order.sort_by_cached_key(|&i| {
        let l = label(g, attr, i);
        (l.is_empty(), l, g.nodes[i].id)
    });
    let labels: Vec<String> = order.iter().map(|&i| label(g, attr, i)).collect();
    let title = format!(
        "{} {} - {} nodes, {} edges, by {by}",
        g.table,
        g.version
            .map_or_else(|| "live".to_string(), |v| format!("v{v}")),
        g.nodes.len(),
        g.edges.len()
    );
    let (bytes, _) = neurocube_core::graph::heatmap::connectivity_png(
        &labels,
        &cells(g, &order),
        &neurocube_core::graph::heatmap::HeatmapOptions {
            max_side: 1024,
            title,
        },
    )
    .map_err(encode_error)?;
    Ok(bytes)
}

/// A histogram bin: values in `from..=to` and how many there are.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Bin {
    /// Smallest value.
    pub from: u64,
    /// Largest value.
    pub to: u64,
    /// How many.
    pub count: u64,
}

/// Powers-of-two bins: 0, 1, 2–3, 4–7, ... (empty bins left out).
fn log_bins(values: impl Iterator<Item = u64>) -> Vec<Bin> {
    let mut counts: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for v in values {
        let b = if v == 0 { 0 } else { 64 - v.leading_zeros() };
        *counts.entry(b).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(b, count)| {
            let (from, to) = if b == 0 {
                (0, 0)
            } else {
                (1u64 << (b - 1), (1u64 << (b - 1)).saturating_mul(2) - 1)
            };
            Bin { from, to, count }
        })
        .collect()
}

/// Numbers describing a graph.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// The synapse table.
    pub table: String,
    /// The version read (`None`: live rows).
    pub version: Option<u32>,
    /// Nodes.
    pub nodes: u64,
    /// Edges (distinct (pre, post) pairs).
    pub edges: u64,
    /// Synapses on those edges.
    pub synapses: u64,
    /// Fraction of edges whose reverse edge exists too.
    pub reciprocity: f64,
    /// Edges over the n·(n−1) possible.
    pub density: f64,
    /// Nodes per in-degree (powers-of-two bins).
    pub in_degree: Vec<Bin>,
    /// Nodes per out-degree.
    pub out_degree: Vec<Bin>,
    /// Edges per synapse count.
    pub synapses_per_edge: Vec<Bin>,
    /// Mean synapses per edge.
    pub synapses_per_edge_mean: f64,
    /// Median synapses per edge.
    pub synapses_per_edge_median: f64,
    /// Most synapses on one edge.
    pub synapses_per_edge_max: u64,
}

/// The statistics of a graph.
#[must_use]
pub fn stats(g: &Graph) -> Stats {
    let pairs: HashSet<(u64, u64)> = g.edges.iter().map(|e| (e.pre, e.post)).collect();
    let reciprocal = g
        .edges
        .iter()
        .filter(|e| e.pre != e.post && pairs.contains(&(e.post, e.pre)))
        .count();
    let mut per: Vec<u64> = g.edges.iter().map(|e| e.syn_count).collect();
    per.sort_unstable();
    let median = match per.len() {
        0 => 0.0,
        n if n.is_multiple_of(2) => (per[n / 2 - 1] + per[n / 2]) as f64 / 2.0,
        n => per[n / 2] as f64,
    };
    let synapses: u64 = per.iter().sum();
    let n = g.nodes.len() as f64;
    Stats {
        table: g.table.clone(),
        version: g.version,
        nodes: g.nodes.len() as u64,
        edges: g.edges.len() as u64,
        synapses,
        reciprocity: if g.edges.is_empty() {
            0.0
        } else {
            reciprocal as f64 / g.edges.len() as f64
        },
        density: if n > 1.0 {
            g.edges.len() as f64 / (n * (n - 1.0))
        } else {
            0.0
        },
        in_degree: log_bins(g.nodes.iter().map(|n| n.in_degree)),
        out_degree: log_bins(g.nodes.iter().map(|n| n.out_degree)),
        synapses_per_edge: log_bins(per.iter().copied()),
        synapses_per_edge_mean: if per.is_empty() {
            0.0
        } else {
            synapses as f64 / per.len() as f64
        },
        synapses_per_edge_median: median,
        synapses_per_edge_max: per.last().copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_bins() {
        let b = log_bins([0, 1, 2, 3, 4, 7, 8, 100].into_iter());
        assert_eq!(
            b,
            vec![
                Bin {
                    from: 0,
                    to: 0,
                    count: 1
                },
                Bin {
                    from: 1,
                    to: 1,
                    count: 1
                },
                Bin {
                    from: 2,
                    to: 3,
                    count: 2
                },
                Bin {
                    from: 4,
                    to: 7,
                    count: 2
                },
                Bin {
                    from: 8,
                    to: 15,
                    count: 1
                },
                Bin {
                    from: 64,
                    to: 127,
                    count: 1
                },
            ]
        );
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml("a<b & \"c\"'"), "a&lt;b &amp; &quot;c&quot;&apos;");
    }
}
