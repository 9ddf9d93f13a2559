//! The annotation store over HTTP: declared tables, uploads in every
//! format, bad rows, CAVE's filters checked against answers computed here
//! independently, versions that later writes do not change, append-only
//! updates, group commit under 64 writers, paging, Arrow output, reference
//! tables and joins.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

/// The label of the test segmentation at a voxel: 32×32×8 blocks.
fn label(p: [i64; 3]) -> u64 {
    1 + (p[0] / 32) as u64 + 8 * (p[1] / 32) as u64 + 64 * (p[2] / 8) as u64
}

/// A dataset `a` (256×256×32 voxels of 4×4×40 nm) with a segmentation `seg`
/// labelled by [`label`], an image channel `img`, and a synapse table `syn`
/// bound to `seg`.
async fn setup() -> TestApp {
    let app = spawn_app().await;
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
struct Syn {
    id: u64,
    pre: [i64; 3],
    post: [i64; 3],
    ctr: Option<[i64; 3]>,
    size: Option<f64>,
}

fn random_synapses(n: usize, seed: u64) -> Vec<Syn> {
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

fn syn_json(s: &Syn) -> Value {
    let mut v = json!({"pre_pt_position": s.pre, "post_pt_position": s.post});
    if let Some(c) = s.ctr {
        v["ctr_pt_position"] = json!(c);
    }
    if let Some(z) = s.size {
        v["size"] = json!(z);
    }
    v
}

async fn insert(app: &TestApp, rows: &mut [Syn]) {
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

fn ids_of(rows: &[Value]) -> Vec<u64> {
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
    assert_eq!(s["schemas"].as_array().unwrap().len(), 7);
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
        schema.clone(),
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
    let mut buf = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
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

/// The rows a CAVE filter keeps, computed without the server.
fn reference(rows: &[Syn], keep: impl Fn(&Syn) -> bool) -> Vec<u64> {
    rows.iter().filter(|s| keep(s)).map(|s| s.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_agrees_with_an_independent_reference() {
    let app = setup().await;
    let mut rows = random_synapses(600, 3);
    insert(&app, &mut rows).await;
    let roots: Vec<u64> = rows.iter().map(|s| label(s.pre)).collect();
    let some_roots: Vec<u64> = roots.iter().copied().take(12).collect();
    let set: BTreeSet<u64> = some_roots.iter().copied().collect();
    let post_set: BTreeSet<u64> = rows.iter().take(40).map(|s| label(s.post)).collect();
    let inside =
        |p: [i64; 3], lo: [i64; 3], hi: [i64; 3]| (0..3).all(|a| lo[a] <= p[a] && p[a] <= hi[a]);
    type Keep = Box<dyn Fn(&Syn) -> bool>;
    let (s2, s3) = (set.clone(), set.clone());
    let (p2, p3) = (post_set.clone(), post_set.clone());
    let cases: Vec<(Value, Keep, Option<&str>)> = vec![
        (
            json!({"filter_in_dict": {"pre_pt_root_id": some_roots}}),
            Box::new(move |s| set.contains(&label(s.pre))),
            Some("root-id index of pre_pt_root_id"),
        ),
        (
            json!({"filter_in_dict": {"pre_pt_root_id": s2.iter().collect::<Vec<_>>(), "post_pt_root_id": p2.iter().collect::<Vec<_>>()}}),
            Box::new(move |s| s2.contains(&label(s.pre)) && p2.contains(&label(s.post))),
            Some("root-id index of pre_pt_root_id"),
        ),
        (
            json!({"filter_equal_dict": {"post_pt_root_id": label(rows[7].post)}}),
            Box::new({
                let r = label(rows[7].post);
                move |s: &Syn| label(s.post) == r
            }),
            Some("root-id index of post_pt_root_id"),
        ),
        (
            json!({"filter_notin_dict": {"pre_pt_root_id": s3.iter().collect::<Vec<_>>()}}),
            Box::new(move |s| !s3.contains(&label(s.pre))),
            Some("scan"),
        ),
        (
            json!({"filter_out_dict": {"post_pt_root_id": p3.iter().collect::<Vec<_>>()}}),
            Box::new(move |s| !p3.contains(&label(s.post))),
            None,
        ),
        (
            json!({"filter_greater_dict": {"size": 1000}}),
            Box::new(|s| s.size.is_some_and(|z| z > 1000.0)),
            None,
        ),
        (
            json!({"filter_less_dict": {"size": 100}}),
            Box::new(|s| s.size.is_some_and(|z| z < 100.0)),
            None,
        ),
        (
            json!({"filter_greater_equal_dict": {"size": 1500}, "filter_less_equal_dict": {"size": 1600}}),
            Box::new(|s| s.size.is_some_and(|z| (1500.0..=1600.0).contains(&z))),
            None,
        ),
        (
            json!({"filter_spatial_dict": {"pre_pt_position": [[32, 64, 8], [95, 127, 15]]}}),
            Box::new(move |s| inside(s.pre, [32, 64, 8], [95, 127, 15])),
            Some("spatial index of pre_pt_position"),
        ),
        (
            json!({"filter_spatial_dict": {"post_pt_position": [[0, 0, 0], [100, 100, 31]]}}),
            Box::new(move |s| inside(s.post, [0, 0, 0], [100, 100, 31])),
            Some("scan"),
        ),
        (
            json!({"filter_spatial_dict": {"ctr_pt_position": [[0, 0, 0], [255, 255, 31]]}}),
            Box::new(|s| s.ctr.is_some()),
            None,
        ),
        (
            json!({"filter_in_dict": {"id": [5, 77, 300, 9999]}}),
            Box::new(|s| [5, 77, 300].contains(&s.id)),
            Some("ids"),
        ),
        (
            json!({"filter_equal_dict": {"valid": "t"}, "filter_less_dict": {"id": 50}}),
            Box::new(|s| s.id < 50),
            None,
        ),
        (
            json!({"filter_in_dict": {"pre_pt_root_id": []}}),
            Box::new(|_| false),
            None,
        ),
    ];
    // The same filters on the live rows, then on a version (with its
    // covering and edge indexes): the same answers.
    let cases: Vec<(Value, Vec<u64>, Option<&str>)> = cases
        .into_iter()
        .map(|(b, keep, p)| (b, reference(&rows, keep), p))
        .collect();
    let live = cases.iter().map(|(b, w, p)| {
        let mut b = b.clone();
        // Live rows now (a timestamp far ahead), not the newest version.
        b["timestamp"] = json!(4_000_000_000u64);
        (b, w.clone(), *p)
    });
    let v1 = materialize(&app).await;
    let frozen = cases.iter().map(|(b, w, p)| {
        let mut b = b.clone();
        b["version"] = json!(v1);
        let p = if b.get("filter_in_dict").is_some_and(|f| {
            f.get("post_pt_root_id").is_some() && f.get("pre_pt_root_id").is_some()
        }) {
            Some("edge index of")
        } else {
            *p
        };
        (b, w.clone(), p)
    });
    for (body, want, plan) in live.chain(frozen) {
        let r = app
            .post_json("/v1/datasets/a/tables/syn/query", &body)
            .await;
        assert_eq!(r.status(), 200, "{body}");
        let used = r.headers()["x-neurocube-plan"]
            .to_str()
            .unwrap()
            .to_string();
        if let Some(p) = plan {
            assert!(used.starts_with(p), "{body}: plan {used}");
        }
        let got: Vec<Value> = r
            .text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut ids = ids_of(&got);
        // Deterministic: the same query gives the same order.
        let again = ids_of(&app.query("/v1/datasets/a/tables/syn/query", &body).await);
        assert_eq!(ids, again, "{body}");
        ids.sort_unstable();
        assert_eq!(ids, want, "{body}");
    }
    // Bad filters say what is wrong.
    let bad = [
        (
            json!({"filter_in_dict": {"nope": [1]}}),
            "table has no column 'nope'",
        ),
        (
            json!({"filter_spatial_dict": {"pre_pt_position": [[10, 0, 0], [5, 9, 9]]}}),
            "empty or inverted",
        ),
        (
            json!({"filter_spatial": {"pre_pt_position": [[0, 0, 0], [5, 9, 9]]}}),
            "unknown query field 'filter_spatial'",
        ),
        (
            json!({"filter_equal_dict": {"pre_pt_root_id": "abc"}}),
            "non-negative integer id",
        ),
        (
            json!({"filter_regex_dict": {"size": "a"}}),
            "not a text column",
        ),
        (json!({"select_columns": ["nope"]}), "has no column 'nope'"),
        (
            json!({"desired_resolution": [1, 0, 1]}),
            "must be three positive numbers",
        ),
        (json!({"page_token": "zz"}), "is not one this server gave"),
        (
            json!({"version": 1, "timestamp": "2024-01-01T00:00:00Z"}),
            "not both",
        ),
        (json!({"timestamp": "yesterday"}), "is not a time"),
    ];
    for (body, msg) in bad {
        let r = app
            .post_json("/v1/datasets/a/tables/syn/query", &body)
            .await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(msg), "{body}: {v}");
    }
    assert_error(
        app.post_json("/v1/datasets/a/tables/syn/query", &json!({"version": 3}))
            .await,
        404,
        "not_found",
        "version 3 of dataset 'a' does not exist",
    )
    .await;
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

async fn materialize(app: &TestApp) -> u64 {
    let r = app.post_json("/v1/datasets/a/versions", &json!({})).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let version = v["version"].as_u64().unwrap();
    for _ in 0..200 {
        let v: Value = app
            .get(&format!("/v1/datasets/a/versions/{version}"))
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "available" {
            return version;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("version {version} did not become available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_is_frozen_while_live_rows_move_on() {
    let app = setup().await;
    let mut rows = random_synapses(40, 5);
    insert(&app, &mut rows).await;
    let v1 = materialize(&app).await;
    assert_eq!(v1, 1);
    let before = app
        .query("/v1/datasets/a/tables/syn/query", &json!({"version": 1}))
        .await;
    assert_eq!(before.len(), 40);
    // Later: more rows, a delete, an update, and the segmentation rewritten
    // under the first synapse's pre point.
    let mut more = random_synapses(5, 6);
    insert(&app, &mut more).await;
    let r = app
        .client
        .delete(format!("{}/v1/datasets/a/tables/syn/rows", app.url))
        .json(&json!({"ids": [2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut upd = syn_json(&rows[2]);
    upd["id"] = json!(3);
    upd["size"] = json!(12345.0);
    let r = app
        .client
        .put(format!("{}/v1/datasets/a/tables/syn/rows", app.url))
        .json(&json!([upd]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let p = rows[0].pre;
    let r = app
        .put(
            &format!(
                "/a/seg/raw/0/{},{}/{},{}/{},{}/",
                p[0],
                p[0] + 1,
                p[1],
                p[1] + 1,
                p[2],
                p[2] + 1
            ),
            999_999u32.to_le_bytes().to_vec(),
        )
        .await;
    assert_eq!(r.status(), 201);
    // Version 1 answers exactly as before; its count too.
    let after = app
        .query("/v1/datasets/a/tables/syn/query", &json!({"version": 1}))
        .await;
    assert_eq!(after, before);
    let c: Value = app
        .get("/v1/datasets/a/tables/syn/count?version=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["count"], 40);
    let by_root = app
        .query(
            "/v1/datasets/a/tables/syn/query",
            &json!({"version": 1, "filter_equal_dict": {"pre_pt_root_id": label(p)}}),
        )
        .await;
    assert!(ids_of(&by_root).contains(&1));
    // A new version sees the new segmentation and the changes.
    let v2 = materialize(&app).await;
    let now = app
        .query(
            "/v1/datasets/a/tables/syn/query",
            &json!({"version": v2, "filter_in_dict": {"id": [1, 2, 3]}}),
        )
        .await;
    assert_eq!(ids_of(&now), vec![1], "row 2 deleted, row 3 superseded");
    assert_eq!(now[0]["pre_pt_root_id"], 999_999);
    let c: Value = app
        .get(&format!("/v1/datasets/a/tables/syn/count?version={v2}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["count"], 44);
    // The default reads the newest version.
    let r = app
        .post_json("/v1/datasets/a/tables/syn/query", &json!({"limit": 1}))
        .await;
    assert_eq!(r.headers()["x-neurocube-version"], v2.to_string().as_str());
    let list: Value = app
        .get("/v1/datasets/a/versions")
        .await
        .json()
        .await
        .unwrap();
    let vs = list["versions"].as_array().unwrap();
    assert_eq!(vs.len(), 2);
    assert!(
        vs.iter()
            .all(|v| v["valid"] == true && v["time_stamp"].as_str().unwrap().ends_with('Z'))
    );
    assert_error(
        app.get("/v1/datasets/a/versions/9").await,
        404,
        "not_found",
        "version 9 of dataset 'a' does not exist",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_supersede_and_deletes_keep_history() {
    let app = setup().await;
    let mut rows = random_synapses(3, 7);
    insert(&app, &mut rows).await;
    let t0 = chrono_now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut upd = syn_json(&rows[0]);
    upd["id"] = json!(1);
    upd["size"] = json!(5.0);
    let r = app
        .client
        .put(format!("{}/v1/datasets/a/tables/syn/rows", app.url))
        .json(&json!([upd]))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["updated"], json!([{"id": 1, "superceded_id": 4}]));
    let r = app
        .client
        .delete(format!("{}/v1/datasets/a/tables/syn/rows", app.url))
        .json(&json!({"ids": [2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Live now: 3 and 4; at t0: 1, 2, 3 as they were.
    let now = app
        .query(
            "/v1/datasets/a/tables/syn/query",
            &json!({"timestamp": chrono_now()}),
        )
        .await;
    assert_eq!(ids_of(&now), vec![3, 4]);
    assert_eq!(now[1]["size"], 5.0);
    let then = app
        .query("/v1/datasets/a/tables/syn/query", &json!({"timestamp": t0}))
        .await;
    assert_eq!(ids_of(&then), vec![1, 2, 3]);
    // Superseded and deleted rows cannot be changed again.
    let r = app
        .client
        .put(format!("{}/v1/datasets/a/tables/syn/rows", app.url))
        .json(&json!([upd]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("row 1 of table 'syn' is no longer valid (superseded by row 4)"),
        "{v}"
    );
    assert_error(
        app.client
            .delete(format!("{}/v1/datasets/a/tables/syn/rows", app.url))
            .json(&json!({"ids": [2]}))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
        "row 2 of table 'syn' is no longer valid",
    )
    .await;
    assert_error(
        app.client
            .delete(format!("{}/v1/datasets/a/tables/syn/rows", app.url))
            .json(&json!({"ids": [77]}))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
        "table 'syn' has no row 77",
    )
    .await;
    let c: Value = app
        .get("/v1/datasets/a/tables/syn/count")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["count"], 2);
}

/// Now, as seconds since the epoch (a timestamp queries take).
fn chrono_now() -> f64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    ms / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_share_group_commits() {
    let app = setup().await;
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let (client, url) = (app.client.clone(), app.url.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20u64 {
                let body = json!([{"pre_pt_position": [w % 256, i, 1], "post_pt_position": [i, w % 256, 2], "size": (w * 100 + i) as f64}]);
                let r = client.post(format!("{url}/v1/datasets/a/tables/syn/rows")).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201);
                let v: Value = r.json().await.unwrap();
                ids.push((w * 100 + i, v["ids"][0].as_u64().unwrap()));
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: BTreeSet<u64> = all.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), 1280, "every row got its own id");
    let rows = app
        .query("/v1/datasets/a/tables/syn/query", &json!({}))
        .await;
    assert_eq!(rows.len(), 1280);
    for (size, id) in &all {
        let row = rows.iter().find(|r| r["id"] == *id).unwrap();
        assert_eq!(
            row["size"], *size as f64,
            "row {id} holds what its writer sent"
        );
    }
    let c: Value = app
        .get("/v1/datasets/a/tables/syn/count")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["count"], 1280);
    let text = app.get("/metrics").await.text().await.unwrap();
    let commits: f64 = text
        .lines()
        .find(|l| l.starts_with("neurocube_annotation_batch_rows_count"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        commits < 1280.0,
        "1280 single-row writes in {commits} commits: they were grouped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_query_reference_merges_and_joins() {
    let app = setup().await;
    let mut rows = random_synapses(300, 8);
    insert(&app, &mut rows).await;
    // synapse_query: pre and post together mean AND; a box on the post point.
    let (pre, post) = (label(rows[0].pre), label(rows[0].post));
    let got = app
        .query(
            "/v1/datasets/a/synapse_query",
            &json!({"pre_ids": pre, "post_ids": [post]}),
        )
        .await;
    let want = reference(&rows, |s| label(s.pre) == pre && label(s.post) == post);
    let mut ids = ids_of(&got);
    ids.sort_unstable();
    assert_eq!(ids, want);
    let bbox = [[0, 0, 0], [127, 127, 15]];
    let got = app
        .query(
            "/v1/datasets/a/synapse_query",
            &json!({"bounding_box": bbox}),
        )
        .await;
    let want = reference(&rows, |s| (0..3).all(|a| s.post[a] <= bbox[1][a]));
    let mut ids = ids_of(&got);
    ids.sort_unstable();
    assert_eq!(ids, want);
    // A nucleus table, cell types referencing it, merged as CAVE merges them.
    let r = app
        .put_json(
            "/v1/datasets/a/tables/nuclei",
            &json!({"schema": "nucleus", "voxel_resolution": [4, 4, 40], "segmentation": "seg"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app.put_json("/v1/datasets/a/tables/types", &json!({"schema": "cell_type_reference", "voxel_resolution": [4, 4, 40], "reference_table": "nuclei"})).await;
    assert_eq!(r.status(), 201);
    // One nucleus inside each of four pre-synaptic segments.
    let somas: Vec<[i64; 3]> = rows.iter().take(4).map(|s| s.pre).collect();
    let nuc: Vec<Value> = somas
        .iter()
        .map(|p| json!({"pt_position": p, "volume": 250.5}))
        .collect();
    let r = app
        .post_json("/v1/datasets/a/tables/nuclei/rows", &json!(nuc))
        .await;
    assert_eq!(r.status(), 201);
    let types = json!([
        {"target_id": 1, "classification_system": "excitatory", "cell_type": "23P"},
        {"target_id": 2, "classification_system": "excitatory", "cell_type": "23P"},
        {"target_id": 3, "classification_system": "inhibitory", "cell_type": "BC"},
    ]);
    let r = app
        .post_json("/v1/datasets/a/tables/types/rows", &types)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_error(
        app.post_json(
            "/v1/datasets/a/tables/types/rows",
            &json!([{"target_id": 99, "cell_type": "x"}]),
        )
        .await,
        422,
        "invalid_rows",
        "99 is not a valid row of table 'nuclei'",
    )
    .await;
    let merged = app
        .query(
            "/v1/datasets/a/tables/types/query",
            &json!({"filter_equal_dict": {"cell_type": "23P"}}),
        )
        .await;
    assert_eq!(merged.len(), 2);
    let keys: Vec<&str> = merged[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        vec![
            "id",
            "created",
            "valid",
            "target_id",
            "classification_system",
            "cell_type",
            "id_ref",
            "created_ref",
            "valid_ref",
            "pt_position",
            "pt_supervoxel_id",
            "pt_root_id",
            "volume",
            "bb_start_position",
            "bb_end_position"
        ]
    );
    assert_eq!(merged[0]["id_ref"], 1);
    assert_eq!(merged[0]["pt_root_id"], label(somas[0]));
    // Synapses whose pre root id has cell type 23P: a join.
    let p23: BTreeSet<u64> = somas[..2].iter().map(|p| label(*p)).collect();
    let joined = app.query("/v1/datasets/a/tables/syn/query", &json!({"join": {"table": "types", "on": ["pre_pt_root_id", "pt_root_id"], "filter_equal_dict": {"cell_type": "23P"}, "select_columns": ["cell_type"], "suffix": "_pre"}})).await;
    let want = reference(&rows, |s| p23.contains(&label(s.pre)));
    let mut ids = ids_of(&joined);
    ids.sort_unstable();
    assert_eq!(ids, want);
    assert!(joined.iter().all(|r| r["cell_type_pre"] == "23P"));
    assert_error(
        app.post_json(
            "/v1/datasets/a/tables/syn/query",
            &json!({"join": {"table": "types", "on": ["pre_pt_root_id", "nope"]}}),
        )
        .await,
        400,
        "invalid_request",
        "table 'types' has no column 'nope'",
    )
    .await;
}

/// Every page of a query, following `X-Neurocube-Next-Page`.
async fn all_pages(app: &TestApp, body: &Value, limit: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut b = body.clone();
        b["limit"] = json!(limit);
        if let Some(t) = &token {
            b["page_token"] = json!(t);
        }
        let r = app.post_json("/v1/datasets/a/tables/syn/query", &b).await;
        assert_eq!(r.status(), 200);
        token = r
            .headers()
            .get("x-neurocube-next-page")
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        let page: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        seen.extend(ids_of(&page));
        if token.is_none() {
            return seen;
        }
    }
}

/// A neuron pair with more synapses than one index read holds (2,000 per
/// range): a version's root-id and pair plans read it in pieces, and every
/// row comes back exactly once, whole or in pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_neurons_are_read_in_pieces_without_losing_rows() {
    let app = setup().await;
    // 2,600 synapses from the cell at (0, 0, 0) to the cell at (32, 0, 0),
    // 300 from (0, 0, 0) to (64, 0, 0), and 400 anywhere.
    let (a, b, c) = ([3, 3, 3], [40, 3, 3], [70, 3, 3]);
    let mut rows: Vec<Syn> = (0..2600)
        .map(|_| (a, b))
        .chain((0..300).map(|_| (a, c)))
        .map(|(pre, post)| Syn {
            id: 0,
            pre,
            post,
            ctr: None,
            size: Some(1.0),
        })
        .collect();
    rows.extend(random_synapses(400, 11));
    for chunk in rows.chunks_mut(1000) {
        insert(&app, chunk).await;
    }
    let version = materialize(&app).await;
    let (ra, rb, rc) = (label(a), label(b), label(c));
    let want = |keep: &dyn Fn(&Syn) -> bool| {
        let mut ids: Vec<u64> = rows.iter().filter(|s| keep(s)).map(|s| s.id).collect();
        ids.sort_unstable();
        ids
    };
    let sorted = |mut v: Vec<u64>| {
        let n = v.len();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), n, "no row twice");
        v
    };
    // By post root id (several keys: the batched index plan).
    let q = json!({"version": version, "filter_in_dict": {"post_pt_root_id": [rb, rc]}});
    let whole = ids_of(&app.query("/v1/datasets/a/tables/syn/query", &q).await);
    let expect = want(&|s| [rb, rc].contains(&label(s.post)));
    assert!(expect.len() > 2900);
    assert_eq!(sorted(whole.clone()), expect);
    assert_eq!(
        all_pages(&app, &q, 700).await,
        whole,
        "pages in the same order"
    );
    // Both ends (the pair plan).
    let q = json!({"version": version, "filter_in_dict": {"pre_pt_root_id": [ra, rc], "post_pt_root_id": [rb, rc]}});
    let whole = ids_of(&app.query("/v1/datasets/a/tables/syn/query", &q).await);
    let expect = want(&|s| [ra, rc].contains(&label(s.pre)) && [rb, rc].contains(&label(s.post)));
    assert!(expect.len() >= 2900);
    assert_eq!(sorted(whole.clone()), expect);
    assert_eq!(
        all_pages(&app, &q, 900).await,
        whole,
        "pages in the same order"
    );
}
