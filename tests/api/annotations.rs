//! The annotation store over HTTP: declared tables, uploads in every
//! format, bad rows, CAVE's filters checked against answers computed here
//! independently, versions that later writes do not change, append-only
//! updates, group commit under 64 writers, paging, Arrow output, reference
//! tables and joins (versions, history, group commit and synapse_query in
//! `annotation_versions.rs`).

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_with};

/// The label of the test segmentation at a voxel: 32×32×8 blocks.
pub(crate) fn label(p: [i64; 3]) -> u64 {
    1 + (p[0] / 32) as u64 + 8 * (p[1] / 32) as u64 + 64 * (p[2] / 8) as u64
}

/// A dataset `a` (256×256×32 voxels of 4×4×40 nm) with a segmentation `seg`
/// labelled by [`label`], an image channel `img`, and a synapse table `syn`
/// bound to `seg`.
pub(crate) async fn setup() -> TestApp {
    setup_with(|_| {}).await
}

/// [`setup`] on a server with changed settings.
pub(crate) async fn setup_with(tweak: impl FnOnce(&mut neurocube_server::Settings)) -> TestApp {
    let app = spawn_with(tweak).await;
    app.dataset("a", [256, 256, 32], 1).await;
    app.channel("a", "seg", "segmentation", "uint32", [64, 64, 8])
        .await;
    app.channel("a", "img", "image", "uint8", [64, 64, 8]).await;
    let mut vox = Vec::with_capacity(256 * 256 * 32 * 4);
    for z in 0..32 {
        for y in 0..256 {
            for x in 0..256 {
                vox.extend_from_slice(&(label([x, y, z]) as u32).to_le_bytes());
            }
        }
    }
    let r = app.put("/a/seg/raw/0/0,256/0,256/0,32/", vox).await;
    assert_eq!(r.status(), 201);
    let r = app
        .put_json(
            "/v1/datasets/a/tables/syn",
            &json!({"schema": "synapse", "voxel_resolution": [4, 4, 40], "segmentation": "seg", "description": "test synapses"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    app
}

#[derive(Clone, Debug)]
pub(crate) struct Syn {
    pub(crate) id: u64,
    pub(crate) pre: [i64; 3],
    pub(crate) post: [i64; 3],
    pub(crate) ctr: Option<[i64; 3]>,
    pub(crate) size: Option<f64>,
}

pub(crate) fn random_synapses(n: usize, seed: u64) -> Vec<Syn> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut pos = || {
                [
                    rng.random_range(0..256i64),
                    rng.random_range(0..256i64),
                    rng.random_range(0..32i64),
                ]
            };
            let (pre, post, ctr) = (pos(), pos(), pos());
            Syn {
                id: 0,
                pre,
                post,
                ctr: rng.random_bool(0.5).then_some(ctr),
                size: rng
                    .random_bool(0.8)
                    .then(|| f64::from(rng.random_range(1..2000u32))),
            }
        })
        .collect()
}

pub(crate) fn syn_json(s: &Syn) -> Value {
    let mut v = json!({"pre_pt_position": s.pre, "post_pt_position": s.post});
    if let Some(c) = s.ctr {
        v["ctr_pt_position"] = json!(c);
    }
    if let Some(z) = s.size {
        v["size"] = json!(z);
    }
    v
}

pub(crate) async fn insert(app: &TestApp, rows: &mut [Syn]) {
    let body: Vec<Value> = rows.iter().map(syn_json).collect();
    let r = app
        .post_json("/v1/datasets/a/tables/syn/rows", &json!(body))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    let ids = v["ids"].as_array().unwrap();
    assert_eq!(ids.len(), rows.len());
    for (s, id) in rows.iter_mut().zip(ids) {
        s.id = id.as_u64().unwrap();
    }
}

pub(crate) fn ids_of(rows: &[Value]) -> Vec<u64> {
    rows.iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_declared_checked_and_listed() {
    let app = setup().await;
    let t: Value = app
        .get("/v1/datasets/a/tables/syn")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["schema"], "synapse");
    assert_eq!(t["segmentation"], "seg");
    assert_eq!(t["row_count"], 0);
    assert_eq!(t["owner"], "anonymous");
    let cols: Vec<&str> = t["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        vec![
            "pre_pt_position",
            "pre_pt_supervoxel_id",
            "pre_pt_root_id",
            "post_pt_position",
            "post_pt_supervoxel_id",
            "post_pt_root_id",
            "ctr_pt_position",
            "size"
        ]
    );
    // Identical re-declaration is fine; a different one is a conflict.
    let same = json!({"schema": "synapse", "voxel_resolution": [4, 4, 40], "segmentation": "seg", "description": "test synapses"});
    assert_eq!(
        app.put_json("/v1/datasets/a/tables/syn", &same)
            .await
            .status(),
        200
    );
    let mut other = same.clone();
    other["voxel_resolution"] = json!([8, 8, 40]);
    assert_error(
        app.put_json("/v1/datasets/a/tables/syn", &other).await,
        409,
        "conflict",
        "already exists with a different declaration",
    )
    .await;
    let cases = [
        (
            json!({"schema": "synaps", "voxel_resolution": [4, 4, 40]}),
            400,
            "unknown schema 'synaps'",
        ),
        (
            json!({"schema": "synapse", "voxel_resolution": [4, 0, 40]}),
            400,
            "must be three positive numbers",
        ),
        (
            json!({"schema": "synapse", "voxel_resolution": [4, 4, 40], "segmentation": "img"}),
            400,
            "channel 'img' is an image channel",
        ),
        (
            json!({"schema": "synapse", "voxel_resolution": [4, 4, 40], "segmentation": "nope"}),
            404,
            "channel 'nope' does not exist",
        ),
        (
            json!({"schema": "cell_type_reference", "voxel_resolution": [4, 4, 40]}),
            400,
            "name the table its target_id points into",
        ),
        (
            json!({"schema": "cell_type_reference", "voxel_resolution": [4, 4, 40], "reference_table": "nope"}),
            404,
            "table 'nope' does not exist",
        ),
        (
            json!({"schema": "custom", "voxel_resolution": [4, 4, 40]}),
            400,
            "a custom schema needs \"fields\"",
        ),
        (
            json!({"schema": "custom", "voxel_resolution": [4, 4, 40], "fields": [{"name": "x", "type": "int"}, {"name": "x", "type": "float"}]}),
            400,
            "'x' is declared twice",
        ),
        (
            json!({"schema": "synapse", "voxel_resolution": [4, 4, 40], "extra": 1}),
            400,
            "unknown field `extra`",
        ),
    ];
    for (body, status, msg) in cases {
        let r = app.put_json("/v1/datasets/a/tables/t2", &body).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(msg), "{body}: {v}");
    }
    assert_error(
        app.get("/v1/datasets/a/tables/t2").await,
        404,
        "not_found",
        "table 't2' does not exist in dataset 'a'",
    )
    .await;
    assert_error(
        app.get("/v1/datasets/nope/tables/t2").await,
        404,
        "not_found",
        "dataset 'nope' does not exist",
    )
    .await;
    assert_error(
        app.get("/v1/datasets/a/tables/v1").await,
        400,
        "invalid_request",
        "table name 'v1' is reserved",
    )
    .await;
    // A reference table, and the order of deletion it imposes.
    let r = app
        .put_json("/v1/datasets/a/tables/ct", &json!({"schema": "cell_type_reference", "voxel_resolution": [4, 4, 40], "reference_table": "syn"}))
        .await;
    assert_eq!(r.status(), 201);
    let list: Value = app.get("/v1/datasets/a/tables").await.json().await.unwrap();
    let names: Vec<&str> = list["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ct", "syn"]);
    assert_error(
        app.delete("/v1/datasets/a/tables/syn").await,
        409,
        "conflict",
        "is the target of reference tables (ct)",
    )
    .await;
    assert_eq!(app.delete("/v1/datasets/a/tables/ct").await.status(), 204);
    assert_eq!(app.delete("/v1/datasets/a/tables/syn").await.status(), 204);
    assert_error(
        app.get("/v1/datasets/a/tables/syn").await,
        404,
        "not_found",
        "table 'syn' does not exist",
    )
    .await;
    let s: Value = app.get("/v1/schemas").await.json().await.unwrap();
    let names: Vec<&str> = s["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "synapse",
            "nucleus",
            "point",
            "cell_type_local",
            "cell_type_reference",
            "proofreading_status_and_strategy",
            "proofreading_status_reference",
            "ramon_synapse",
            "ramon_seed",
            "ramon_segment",
            "ramon_neuron",
            "ramon_organelle",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upload_format_lands_the_same_rows_with_root_ids_looked_up() {
    let app = setup().await;
    let rows = random_synapses(6, 1);
    // JSON
    let mut a = rows[..2].to_vec();
    insert(&app, &mut a).await;
    // NDJSON
    let nd: String = rows[2..4]
        .iter()
        .map(|s| syn_json(s).to_string() + "\n")
        .collect();
    let r = app
        .post_as("/v1/datasets/a/tables/syn/rows", "application/x-ndjson", nd)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // CSV, with split positions and an empty size.
    let mut csv = String::from(
        "pre_pt_position_x,pre_pt_position_y,pre_pt_position_z,post_pt_position,ctr_pt_position,size\n",
    );
    for s in &rows[4..5] {
        csv += &format!(
            "{},{},{},\"{:?}\",{},{}\n",
            s.pre[0],
            s.pre[1],
            s.pre[2],
            s.post,
            s.ctr.map_or(String::new(), |c| format!("\"{c:?}\"")),
            s.size.map_or(String::new(), |z| z.to_string())
        );
    }
    let r = app
        .post_as("/v1/datasets/a/tables/syn/rows", "text/csv", csv)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Arrow IPC stream.
    let s = &rows[5];
    let arrow = arrow_upload(s);
    let r = app
        .post_as(
            "/v1/datasets/a/tables/syn/rows",
            "application/vnd.apache.arrow.stream",
            arrow,
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let got = app
        .query("/v1/datasets/a/tables/syn/query", &json!({}))
        .await;
    assert_eq!(ids_of(&got), vec![1, 2, 3, 4, 5, 6]);
    for (row, s) in got.iter().zip(&rows) {
        assert_eq!(row["pre_pt_position"], json!(s.pre));
        assert_eq!(row["post_pt_position"], json!(s.post));
        assert_eq!(
            row["ctr_pt_position"],
            s.ctr.map_or(Value::Null, |c| json!(c))
        );
        assert_eq!(row["size"], s.size.map_or(Value::Null, |z| json!(z)));
        assert_eq!(row["pre_pt_root_id"], label(s.pre));
        assert_eq!(row["pre_pt_supervoxel_id"], label(s.pre));
        assert_eq!(row["post_pt_root_id"], label(s.post));
        assert_eq!(row["valid"], true);
        assert!(row["superceded_id"].is_null());
    }
    let c: Value = app
        .get("/v1/datasets/a/tables/syn/count")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["count"], 6);
}

fn arrow_upload(s: &Syn) -> Vec<u8> {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("pre_pt_position_x", DataType::Int64, false),
        Field::new("pre_pt_position_y", DataType::Int64, false),
        Field::new("pre_pt_position_z", DataType::Int64, false),
        Field::new("post_pt_position_x", DataType::Int64, false),
        Field::new("post_pt_position_y", DataType::Int64, false),
        Field::new("post_pt_position_z", DataType::Int64, false),
        Field::new("ctr_pt_position_x", DataType::Int64, true),
        Field::new("ctr_pt_position_y", DataType::Int64, true),
        Field::new("ctr_pt_position_z", DataType::Int64, true),
        Field::new("size", DataType::Float64, true),
    ]));
    let one = |v: i64| Arc::new(Int64Array::from(vec![v])) as arrow_array::ArrayRef;
    let opt = |v: Option<i64>| Arc::new(Int64Array::from(vec![v])) as arrow_array::ArrayRef;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            one(s.pre[0]),
            one(s.pre[1]),
            one(s.pre[2]),
            one(s.post[0]),
            one(s.post[1]),
            one(s.post[2]),
            opt(s.ctr.map(|c| c[0])),
            opt(s.ctr.map(|c| c[1])),
            opt(s.ctr.map(|c| c[2])),
            Arc::new(Float64Array::from(vec![s.size])),
        ],
    )
    .unwrap();
    crate::helpers::arrow_stream(&batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_refused_with_their_index_and_nothing_is_written() {
    let app = setup().await;
    let mut one = random_synapses(1, 2);
    insert(&app, &mut one).await;
    let url = "/v1/datasets/a/tables/syn/rows";
    let ok = json!({"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6]});
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!([ok, {"pre_pt_position": [1, 2, 3]}]),
            "post_pt_position",
            "row 1, column 'post_pt_position': is required",
        ),
        (
            json!([ok, ok, {"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 99]}]),
            "post_pt_position",
            "row 2, column 'post_pt_position': position [4, 5, 99] (voxels of [4.0, 4.0, 40.0] nm) lies outside dataset 'a'",
        ),
        (
            json!([{"pre_pt_position": [-1, 2, 3], "post_pt_position": [4, 5, 6]}]),
            "pre_pt_position",
            "lies outside dataset 'a'",
        ),
        (
            json!([{"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6], "size": "big"}]),
            "size",
            "expected a number, got \"big\"",
        ),
        (
            json!([{"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6], "pre_pt_root_id": 7}]),
            "pre_pt_root_id",
            "is looked up in the table's segmentation",
        ),
        (
            json!([{"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6], "colour": "red"}]),
            "colour",
            "unknown column 'colour'",
        ),
        (
            json!([{"id": 1, "pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6]}]),
            "id",
            "id 1 is below the table's next free id 1025",
        ),
        (
            json!([{"id": 5_000_000, "pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6]}]),
            "id",
            "id 5000000 would spread the table's ids too thin",
        ),
        (
            json!([{"id": 50, "pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6]}, {"id": 50, "pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6]}]),
            "id",
            "id 50 is given twice",
        ),
        (
            json!([{"id": "x", "pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6]}]),
            "id",
            "expected a non-negative integer id",
        ),
        (
            json!([{"pre_pt_position": [1.5, 2, 3], "post_pt_position": [4, 5, 6]}]),
            "pre_pt_position",
            "of integers",
        ),
    ];
    for (body, column, msg) in cases {
        let r = app.post_json(url, &body).await;
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "invalid_rows");
        assert_eq!(v["column"], column, "{v}");
        assert!(v["message"].as_str().unwrap().contains(msg), "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .ends_with("nothing of this upload was written"),
            "{v}"
        );
    }
    assert_error(
        app.post_as(url, "text/csv", "size\n1\n2,3\n").await,
        422,
        "invalid_rows",
        "unreadable CSV record",
    )
    .await;
    assert_error(
        app.post_as(url, "application/json", "[{").await,
        400,
        "invalid_request",
        "invalid JSON",
    )
    .await;
    assert_error(
        app.post_as(url, "image/png", "x").await,
        400,
        "invalid_request",
        "is not an upload format",
    )
    .await;
    assert_error(
        app.post_json("/v1/datasets/a/tables/nope/rows", &json!([ok]))
            .await,
        404,
        "not_found",
        "table 'nope' does not exist",
    )
    .await;
    let big = vec![b' '; (512 << 20) + 1];
    assert_error(
        app.post_as(url, "application/json", big).await,
        413,
        "too_large",
        "annotations.max_upload_bytes",
    )
    .await;
    // Nothing of any refused upload was stored.
    let c: Value = app
        .get("/v1/datasets/a/tables/syn/count")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["count"], 1);
    let all = app
        .query("/v1/datasets/a/tables/syn/query", &json!({}))
        .await;
    assert_eq!(ids_of(&all), vec![1]);
    // Given ids at or past the next free one are kept; others follow them.
    let r = app
        .post_json(
            url,
            &json!([{"id": 5000, "pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6]}, ok]),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ids"], json!([5000, 5001]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_offsets_resolution_and_formats() {
    let app = setup().await;
    let mut rows = random_synapses(250, 4);
    insert(&app, &mut rows).await;
    let url = "/v1/datasets/a/tables/syn/query";
    // Pages of 60 cover every row once, in order.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"limit": 60});
        if let Some(t) = &token {
            body["page_token"] = json!(t);
        }
        let r = app.post_json(url, &body).await;
        token = r
            .headers()
            .get("x-neurocube-next-page")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Vec<Value> = r
            .text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(page.len() <= 60);
        seen.extend(ids_of(&page));
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, (1..=250).collect::<Vec<u64>>());
    let page = app.query(url, &json!({"offset": 245})).await;
    assert_eq!(ids_of(&page), vec![246, 247, 248, 249, 250]);
    // Positions rescaled to 1 nm and split, with the resolution header.
    let r = app.post_json(url, &json!({"limit": 1, "desired_resolution": [1, 1, 1], "split_positions": true, "select_columns": ["id", "pre_pt_position"]})).await;
    assert_eq!(r.headers()["dataframe_resolution"], "1.0, 1.0, 1.0");
    let row: Value = serde_json::from_str(r.text().await.unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(
        row,
        json!({"id": 1, "pre_pt_position_x": rows[0].pre[0] as f64 * 4.0, "pre_pt_position_y": rows[0].pre[1] as f64 * 4.0, "pre_pt_position_z": rows[0].pre[2] as f64 * 40.0})
    );
    // CSV.
    let r = app
        .post_json(
            &format!("{url}?format=csv"),
            &json!({"limit": 2, "split_positions": true}),
        )
        .await;
    assert_eq!(r.headers()["content-type"], "text/csv");
    let text = r.text().await.unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("id,created,superceded_id,valid,pre_pt_position_x,")
    );
    assert!(lines.next().unwrap().starts_with("1,"));
    // Arrow, by Accept: CAVE's column types.
    let r = app
        .client
        .post(format!("{}{url}", app.url))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = r.bytes().await.unwrap();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    let schema = reader.schema();
    use arrow_schema::{DataType, TimeUnit};
    let f = schema.fields();
    assert_eq!(
        (f[0].name().as_str(), f[0].data_type()),
        ("id", &DataType::Int64)
    );
    assert_eq!(f[1].name(), "created");
    assert!(
        matches!(f[1].data_type(), DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC")
    );
    assert_eq!(
        (f[3].name().as_str(), f[3].data_type()),
        ("valid", &DataType::Boolean)
    );
    assert!(
        matches!(f[4].data_type(), DataType::FixedSizeList(_, 3)),
        "positions are [x, y, z] lists"
    );
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 250);
    // An empty answer still carries its schema.
    let r = app
        .post_json(
            &format!("{url}?format=arrow"),
            &json!({"filter_in_dict": {"id": [9999]}}),
        )
        .await;
    let bytes = r.bytes().await.unwrap();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    assert_eq!(reader.schema().fields().len(), 12);
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 0);
    assert_error(
        app.post_json(&format!("{url}?format=xml"), &json!({}))
            .await,
        400,
        "invalid_request",
        "unknown format 'xml'",
    )
    .await;
}
