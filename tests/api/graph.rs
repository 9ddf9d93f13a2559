//! The connectivity graph over HTTP: a small hand-built synapse table
//! checked edge by edge in every format, node selection by ids, pre/post
//! ids, a box and a reference table, node attributes from node tables, a
//! frozen version against later writes, statistics, and bad input.

use serde_json::{Value, json};

use crate::annotation_versions::materialize;
use crate::annotations::{setup, setup_with};
use crate::helpers::{TestApp, assert_error};

/// A voxel inside the segment `l` of the test segmentation (see
/// `annotations::label`: 32×32×8 blocks, 8 per row, 64 per layer).
pub(crate) fn inside(l: u64) -> [i64; 3] {
    let b = l - 1;
    [
        32 * (b % 8) as i64 + 5,
        32 * ((b / 8) % 8) as i64 + 7,
        8 * (b / 64) as i64 + 2,
    ]
}

/// (pre, post, size) of the hand-built synapses between segments 1 to 5.
const SYNAPSES: [(u64, u64, Option<f64>); 13] = [
    (1, 2, Some(10.0)),
    (1, 2, Some(20.0)),
    (1, 2, Some(30.0)),
    (2, 1, Some(5.0)),
    (1, 3, Some(1.0)),
    (1, 3, Some(2.0)),
    (3, 4, Some(7.0)),
    (4, 4, Some(9.0)),
    (2, 3, Some(1.0)),
    (2, 3, Some(1.0)),
    (2, 3, Some(1.0)),
    (2, 3, Some(1.0)),
    (5, 1, None),
];

/// The edge list of the whole version 1 graph without autapses.
const CSV_ALL: &str = "pre_pt_root_id,post_pt_root_id,syn_count,size_sum\n1,2,3,60\n1,3,2,3\n2,1,1,5\n2,3,4,4\n3,4,1,7\n5,1,1,0\n";

async fn post_rows(app: &TestApp, table: &str, rows: Value) {
    let r = app
        .post_json(&format!("/v1/datasets/a/tables/{table}/rows"), &rows)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

pub(crate) async fn create_table(app: &TestApp, name: &str, spec: Value) {
    let r = app
        .put_json(&format!("/v1/datasets/a/tables/{name}"), &spec)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Dataset `a` with the synapses, nuclei in segments 1 to 4, cell types on
/// those nuclei, proofreading status of 1 to 3, and version 1.
pub(crate) async fn graph_app(app: TestApp) -> TestApp {
    let rows: Vec<Value> = SYNAPSES
        .iter()
        .map(|(a, b, s)| {
            let mut v = json!({"pre_pt_position": inside(*a), "post_pt_position": inside(*b)});
            if let Some(s) = s {
                v["size"] = json!(s);
            }
            v
        })
        .collect();
    post_rows(&app, "syn", json!(rows)).await;
    create_table(
        &app,
        "nuclei",
        json!({"schema": "nucleus", "voxel_resolution": [4, 4, 40], "segmentation": "seg"}),
    )
    .await;
    create_table(
        &app,
        "types",
        json!({"schema": "cell_type_reference", "voxel_resolution": [4, 4, 40], "reference_table": "nuclei"}),
    )
    .await;
    create_table(
        &app,
        "proof",
        json!({"schema": "proofreading_status_and_strategy", "voxel_resolution": [4, 4, 40], "segmentation": "seg"}),
    )
    .await;
    let nuclei: Vec<Value> = (1..=4)
        .map(|l| json!({"pt_position": inside(l), "volume": 100.0 * l as f64}))
        .collect();
    post_rows(&app, "nuclei", json!(nuclei)).await;
    // Nucleus ids are 1 to 4 in segment order.
    post_rows(
        &app,
        "types",
        json!([
            {"target_id": 1, "classification_system": "excitatory", "cell_type": "23P"},
            {"target_id": 2, "classification_system": "excitatory", "cell_type": "23P"},
            {"target_id": 3, "classification_system": "inhibitory", "cell_type": "BPC"},
            {"target_id": 4, "classification_system": "excitatory", "cell_type": "6P"},
        ]),
    )
    .await;
    post_rows(
        &app,
        "proof",
        json!([
            {"pt_position": inside(1), "status_axon": "t", "strategy_axon": "axon_fully_extended"},
            {"pt_position": inside(2), "status_axon": "t", "strategy_axon": "axon_partially_extended"},
            {"pt_position": inside(3), "status_axon": "f"},
        ]),
    )
    .await;
    assert_eq!(materialize(&app).await, 1);
    app
}

async fn text(app: &TestApp, query: &str) -> String {
    let r = app.get(&format!("/v1/datasets/a/graph?{query}")).await;
    assert_eq!(r.status(), 200, "{query}: {}", r.text().await.unwrap());
    r.text().await.unwrap()
}

/// The edges of a CSV answer as (pre, post, count, size) rows.
async fn edges(app: &TestApp, query: &str) -> Vec<(u64, u64, u64, f64)> {
    text(app, &format!("format=csv&{query}"))
        .await
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn pairs(e: &[(u64, u64, u64, f64)]) -> Vec<(u64, u64)> {
    e.iter().map(|(a, b, _, _)| (*a, *b)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_of_a_hand_built_table_in_every_format() {
    let app = graph_app(setup().await).await;
    // CSV: the whole version, edge by edge, autapse left out.
    let r = app.get("/v1/datasets/a/graph?format=csv").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv");
    assert_eq!(r.headers()["x-neurocube-version"], "1");
    assert_eq!(r.headers()["x-neurocube-edges"], "6");
    assert_eq!(r.text().await.unwrap(), CSV_ALL);
    // Accept picks the format too; POST takes the same fields as JSON.
    let r = app
        .client
        .get(format!("{}/v1/datasets/a/graph", app.url))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), CSV_ALL);
    let r = app
        .post_json("/v1/datasets/a/graph", &json!({"format": "csv"}))
        .await;
    assert_eq!(r.text().await.unwrap(), CSV_ALL);

    // JSON: nodes with degrees and attributes from the node tables.
    let g: Value = serde_json::from_str(&text(&app, "format=json").await).unwrap();
    assert_eq!(g["directed"], true);
    assert_eq!(g["graph"]["table"], "syn");
    assert_eq!(g["graph"]["version"], 1);
    let want_edges = json!([
        {"source": 1, "target": 2, "syn_count": 3, "size_sum": 60.0},
        {"source": 1, "target": 3, "syn_count": 2, "size_sum": 3.0},
        {"source": 2, "target": 1, "syn_count": 1, "size_sum": 5.0},
        {"source": 2, "target": 3, "syn_count": 4, "size_sum": 4.0},
        {"source": 3, "target": 4, "syn_count": 1, "size_sum": 7.0},
        {"source": 5, "target": 1, "syn_count": 1, "size_sum": 0.0},
    ]);
    assert_eq!(g["edges"], want_edges);
    let nodes = g["nodes"].as_array().unwrap();
    let ids: Vec<u64> = nodes.iter().map(|n| n["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    let n1 = &nodes[0];
    assert_eq!(
        (n1["in_degree"].as_u64(), n1["out_degree"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (n1["in_synapses"].as_u64(), n1["out_synapses"].as_u64()),
        (Some(2), Some(5))
    );
    assert_eq!(n1["cell_type"], "23P");
    assert_eq!(n1["classification_system"], "excitatory");
    assert_eq!(n1["status_axon"], true);
    assert_eq!(n1["strategy_axon"], "axon_fully_extended");
    assert_eq!(n1["volume"], 100.0);
    assert_eq!(nodes[2]["cell_type"], "BPC");
    assert_eq!(nodes[2]["status_axon"], false);
    assert_eq!(nodes[3]["cell_type"], "6P");
    assert_eq!(nodes[3]["status_axon"], Value::Null);
    // Segment 5 has no nucleus and no proofreading row.
    assert_eq!(nodes[4]["cell_type"], Value::Null);
    assert_eq!(nodes[4]["out_degree"], 1);

    // GraphML: keys typed, every node and edge there.
    let x = text(&app, "format=graphml").await;
    assert!(x.starts_with("<?xml"), "{x}");
    assert!(x.contains("<key id=\"e0\" for=\"edge\" attr.name=\"syn_count\" attr.type=\"long\"/>"));
    assert!(x.contains("attr.name=\"cell_type\" attr.type=\"string\""));
    assert!(x.contains("attr.name=\"status_axon\" attr.type=\"boolean\""));
    assert!(x.contains("<graph id=\"G\" edgedefault=\"directed\">"));
    for (a, b, n, s) in [
        (1, 2, 3, 60),
        (1, 3, 2, 3),
        (2, 1, 1, 5),
        (2, 3, 4, 4),
        (3, 4, 1, 7),
        (5, 1, 1, 0),
    ] {
        let e = format!(
            "<edge source=\"{a}\" target=\"{b}\"><data key=\"e0\">{n}</data><data key=\"e1\">{s}</data></edge>"
        );
        assert!(x.contains(&e), "{e} missing from\n{x}");
    }
    assert_eq!(x.matches("<node id=").count(), 5);
    assert_eq!(x.matches("<edge ").count(), 6);

    // Arrow IPC: the same edges, ids as int64 (as CAVE sends them).
    let r = app.get("/v1/datasets/a/graph?format=arrow").await;
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let body = r.bytes().await.unwrap();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
            .unwrap();
    let mut got = Vec::new();
    for batch in reader {
        let b = batch.unwrap();
        let col = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .clone()
        };
        let sizes = b
            .column(3)
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            got.push((
                col(0).value(i),
                col(1).value(i),
                col(2).value(i),
                sizes.value(i),
            ));
        }
        assert_eq!(b.schema().field(0).name(), "pre_pt_root_id");
    }
    assert_eq!(
        got,
        vec![
            (1, 2, 3, 60.0),
            (1, 3, 2, 3.0),
            (2, 1, 1, 5.0),
            (2, 3, 4, 4.0),
            (3, 4, 1, 7.0),
            (5, 1, 1, 0.0)
        ]
    );

    // npz: a zip of .npy members (read back by scipy in the Python tests).
    let r = app.get("/v1/datasets/a/graph?format=npz").await;
    assert_eq!(r.headers()["content-type"], "application/x-npz");
    let z = r.bytes().await.unwrap();
    assert_eq!(&z[..4], b"PK\x03\x04");
    for member in [
        "indptr.npy",
        "indices.npy",
        "data.npy",
        "shape.npy",
        "format.npy",
        "node_ids.npy",
    ] {
        assert!(
            z.windows(member.len()).any(|w| w == member.as_bytes()),
            "{member}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_selected_by_ids_partners_boxes_and_reference_tables() {
    let app = graph_app(setup().await).await;
    let all = [(1, 2), (1, 3), (2, 1), (2, 3), (3, 4), (5, 1)];
    assert_eq!(pairs(&edges(&app, "").await), all);
    // Autapses on request; a synapse threshold.
    let with_self = edges(&app, "autapses=true").await;
    assert!(with_self.contains(&(4, 4, 1, 9.0)));
    assert_eq!(with_self.len(), 7);
    assert_eq!(
        pairs(&edges(&app, "min_synapses=2").await),
        [(1, 2), (1, 3), (2, 3)]
    );
    // The induced subgraph, by GET and POST; a node without synapses is a node.
    assert_eq!(
        pairs(&edges(&app, "ids=1,2,3").await),
        [(1, 2), (1, 3), (2, 1), (2, 3)]
    );
    let g: Value = app
        .post_json("/v1/datasets/a/graph", &json!({"ids": [3, 2, 1, 9]}))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<u64> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 9]);
    assert_eq!(g["edges"].as_array().unwrap().len(), 4);
    // Edges out of, into, and between.
    assert_eq!(pairs(&edges(&app, "pre_ids=2").await), [(2, 1), (2, 3)]);
    assert_eq!(pairs(&edges(&app, "post_ids=3").await), [(1, 3), (2, 3)]);
    assert_eq!(
        pairs(&edges(&app, "pre_ids=1&post_ids=2,3").await),
        [(1, 2), (1, 3)]
    );
    // A box on the post point (segments 3 and 4: x 64..127 of row 0).
    let boxed = edges(&app, "bounding_box=64,0,0,127,31,7").await;
    assert_eq!(boxed, vec![(1, 3, 2, 3.0), (2, 3, 4, 4.0), (3, 4, 1, 7.0)]);
    // Through reference and node tables: cell type 23P, proofread axons.
    let by_type = "select_table=types&select_column=cell_type&select_values=23P";
    assert_eq!(pairs(&edges(&app, by_type).await), [(1, 2), (2, 1)]);
    let typed = "select_table=types&select_column=cell_type&select_values=23P,BPC";
    assert_eq!(
        pairs(&edges(&app, typed).await),
        [(1, 2), (1, 3), (2, 1), (2, 3)]
    );
    let proofread = "select_table=proof&select_column=status_axon&select_values=t";
    assert_eq!(pairs(&edges(&app, proofread).await), [(1, 2), (2, 1)]);
    // Only the attributes asked for.
    let g: Value = serde_json::from_str(&text(&app, "ids=1&node_tables=proof").await).unwrap();
    let n = g["nodes"][0].as_object().unwrap();
    assert!(
        n.contains_key("status_axon") && !n.contains_key("cell_type"),
        "{n:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_version_keeps_its_graph_while_live_rows_move_on() {
    let app = graph_app(setup().await).await;
    post_rows(
        &app,
        "syn",
        json!([{"pre_pt_position": inside(1), "post_pt_position": inside(5), "size": 3.0}]),
    )
    .await;
    assert_eq!(text(&app, "format=csv&version=1").await, CSV_ALL);
    // The live rows now have the new edge; a time before it does not.
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
        + 1000.0)
        / 1000.0;
    let live = edges(&app, &format!("timestamp={now}")).await;
    assert!(live.contains(&(1, 5, 1, 3.0)), "{live:?}");
    assert_eq!(live.len(), 7);
    let r = app
        .get(&format!("/v1/datasets/a/graph?format=csv&timestamp={now}"))
        .await;
    assert_eq!(r.headers()["x-neurocube-version"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_and_the_connectivity_png() {
    let app = graph_app(setup().await).await;
    let s: Value = app
        .get("/v1/datasets/a/graph/stats")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["nodes"], 5);
    assert_eq!(s["edges"], 6);
    assert_eq!(s["synapses"], 12);
    assert_eq!(s["reciprocity"], 2.0 / 6.0);
    assert_eq!(s["synapses_per_edge_max"], 4);
    assert_eq!(s["synapses_per_edge_median"], 1.5);
    assert_eq!(s["synapses_per_edge_mean"], 2.0);
    assert_eq!(
        s["synapses_per_edge"],
        json!([{"from": 1, "to": 1, "count": 3}, {"from": 2, "to": 3, "count": 2}, {"from": 4, "to": 7, "count": 1}])
    );
    assert_eq!(
        s["out_degree"],
        json!([{"from": 0, "to": 0, "count": 1}, {"from": 1, "to": 1, "count": 2}, {"from": 2, "to": 3, "count": 2}])
    );
    // The PNG: nodes ordered by cell type (23P: 1, 2; 6P: 4; BPC: 3;
    // unknown: 5), exactly the picture the heatmap encoder draws for them.
    let r = app.get("/v1/datasets/a/graph?format=png").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let png_bytes = r.bytes().await.unwrap();
    let labels: Vec<String> = ["23P", "23P", "6P", "BPC", ""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Rows and columns in that order: 1, 2, 4, 3, 5.
    let cells = vec![
        (0, 1, 3),
        (0, 3, 2),
        (1, 0, 1),
        (1, 3, 4),
        (3, 2, 1),
        (4, 0, 1),
    ];
    let (want, layout) = neurocube_core::graph::heatmap::connectivity_png(
        &labels,
        &cells,
        &neurocube_core::graph::heatmap::HeatmapOptions {
            max_side: 1024,
            title: "syn v1 - 5 nodes, 6 edges, by cell_type".into(),
        },
    )
    .unwrap();
    assert!(
        png_bytes.as_ref() == want.as_slice(),
        "the PNG differs from the expected drawing"
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes.to_vec()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (layout.width, layout.height));
    let channels = info.line_size / info.width as usize;
    let pixel = |x: u32, y: u32| {
        let o = y as usize * info.line_size + x as usize * channels;
        [buf[o], buf[o + 1], buf[o + 2]]
    };
    let names: Vec<&str> = layout.bands.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(names, ["23P", "6P", "BPC", "unknown"]);
    for (_, from, to, color) in &layout.bands {
        let mid = layout.matrix_y0 + ((*from + *to) as u32 * layout.cell) / 2;
        assert_eq!(
            pixel(layout.band_left_x0 + layout.band_width / 2, mid),
            *color
        );
        let mid = layout.matrix_x0 + ((*from + *to) as u32 * layout.cell) / 2;
        assert_eq!(
            pixel(mid, layout.band_top_y0 + layout.band_width / 2),
            *color
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_graph_requests_are_4xx_with_a_message() {
    let app = graph_app(setup_with(|s| s.annotations.max_graph_png_nodes = 3).await).await;
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            "table=nope",
            404,
            "not_found",
            "table 'nope' does not exist",
        ),
        (
            "table=nuclei",
            400,
            "invalid_request",
            "table 'nuclei' (schema 'nucleus') is not a synapse table",
        ),
        ("version=9", 404, "not_found", "version 9"),
        (
            "format=gexf",
            400,
            "invalid_request",
            "unknown graph format 'gexf'; use one of csv, json, graphml, npz, arrow, png",
        ),
        (
            "bounding_box=10,0,0,5,9,9",
            400,
            "invalid_request",
            "is inverted",
        ),
        (
            "bounding_box=1,2,3",
            400,
            "invalid_request",
            "bounding_box must be six integers",
        ),
        (
            "ids=1,x",
            400,
            "invalid_request",
            "ids must be root ids (non-negative integers), not 'x'",
        ),
        (
            "pre_ids=-4",
            400,
            "invalid_request",
            "pre_ids must be root ids",
        ),
        ("ids=1&pre_ids=2", 400, "invalid_request", "not both"),
        (
            "select_table=types",
            400,
            "invalid_request",
            "select_table needs select_column and select_values",
        ),
        (
            "select_table=types&select_column=colour&select_values=red",
            400,
            "invalid_request",
            "colour",
        ),
        (
            "select_table=syn&select_column=size&select_values=1",
            400,
            "invalid_request",
            "does not name neurons",
        ),
        (
            "min_synapses=many",
            400,
            "invalid_request",
            "min_synapses must be a non-negative integer",
        ),
        (
            "colour=red",
            400,
            "invalid_request",
            "unknown graph parameter 'colour'",
        ),
        (
            "format=png",
            400,
            "invalid_request",
            "the connectivity PNG draws at most 3 nodes",
        ),
        (
            "format=png&ids=1,2,3,4",
            400,
            "invalid_request",
            "at most 3 nodes (server setting annotations.max_graph_png_nodes) and 4 ids were given",
        ),
        (
            "format=png&ids=1,2&order_by=colour",
            400,
            "invalid_request",
            "no node attribute 'colour'",
        ),
    ];
    for (q, status, code, msg) in cases {
        assert_error(
            app.get(&format!("/v1/datasets/a/graph?{q}")).await,
            *status,
            code,
            msg,
        )
        .await;
    }
    assert_error(
        app.post_json("/v1/datasets/a/graph", &json!({"ids": ["a"]}))
            .await,
        400,
        "invalid_request",
        "ids must be a list of root ids",
    )
    .await;
    assert_error(
        app.get("/v1/datasets/zz/graph").await,
        404,
        "not_found",
        "dataset 'zz'",
    )
    .await;
    // A small selection draws.
    let r = app.get("/v1/datasets/a/graph?format=png&ids=1,2").await;
    assert_eq!(r.status(), 200);
}
