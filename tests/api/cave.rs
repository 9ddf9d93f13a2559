//! CAVE's protocol over HTTP (what caveclient 8.x sends, byte for byte):
//! discovery, datastack info, versions and their timestamps, table
//! metadata and counts, queries as `data.arrow` with
//! `dataframe_resolution`, reference merges and joins with CAVE's column
//! names, the chunkedgraph calls of live queries, and bad input. The real
//! caveclient runs the notebooks' cells in tests/python/test_cave.py.

use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use serde_json::{Value, json};

use crate::annotations::setup;
use crate::graph::{graph_app, inside};
use crate::helpers::{TestApp, assert_error};

const M: &str = "/materialize/api/v3/datastack/a";

pub(crate) async fn get_json(app: &TestApp, path: &str) -> Value {
    let r = app.get(path).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// POST a CAVE query; the batches, and the `dataframe_resolution` header.
async fn cave_query(app: &TestApp, path: &str, body: &Value) -> (Vec<RecordBatch>, String) {
    let r = app
        .client
        .post(format!(
            "{}{path}{}return_pyarrow=True&arrow_format=True&split_positions=True&direct_sql_pandas=True",
            app.url,
            if path.contains('?') { '&' } else { '?' }
        ))
        .header("Content-Type", "application/json")
        .header("Accept-Encoding", "zstd")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    // Exactly this: caveclient compares the whole string.
    assert_eq!(headers["content-type"], "data.arrow");
    assert!(headers.get("content-encoding").is_none());
    let res = headers["dataframe_resolution"]
        .to_str()
        .unwrap()
        .to_string();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    (reader.map(Result::unwrap).collect(), res)
}

fn names(b: &[RecordBatch]) -> Vec<String> {
    b[0].schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// A column's values across batches, as `A` (which it must be).
fn column<A: Array + 'static, T>(
    b: &[RecordBatch],
    col: &str,
    get: impl Fn(&A, usize) -> T,
) -> Vec<T> {
    b.iter()
        .flat_map(|b| {
            let a = b.column_by_name(col).unwrap();
            let a = a.as_any().downcast_ref::<A>().unwrap();
            (0..a.len()).map(|i| get(a, i)).collect::<Vec<_>>()
        })
        .collect()
}

fn ints(b: &[RecordBatch], col: &str) -> Vec<i64> {
    column(b, col, |a: &Int64Array, i| a.value(i))
}

fn floats(b: &[RecordBatch], col: &str) -> Vec<f64> {
    column(b, col, |a: &Float64Array, i| a.value(i))
}

fn texts(b: &[RecordBatch], col: &str) -> Vec<String> {
    column(b, col, |a: &StringArray, i| a.value(i).to_string())
}

fn is_cave_time(s: &str) -> bool {
    // YYYY-MM-DDTHH:MM:SS.ffffff, no zone.
    s.len() == 26
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && s[20..].bytes().all(|c| c.is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_datastack_versions_and_table_metadata() {
    let app = graph_app(setup().await).await;
    assert_eq!(
        get_json(&app, "/materialize/api/versions").await,
        json!([2, 3])
    );
    assert_eq!(
        get_json(&app, "/materialize/version").await,
        json!("5.26.4")
    );
    assert_eq!(get_json(&app, "/schema/versions").await, json!([1, 2]));
    assert_eq!(
        get_json(&app, "/segmentation/api/versions").await,
        json!([0, 1])
    );
    assert!(get_json(&app, "/info/version").await.is_string());
    assert_eq!(
        get_json(&app, "/info/api/v2/datastacks").await,
        json!(["a"])
    );

    let info = get_json(&app, "/info/api/v2/datastack/full/a").await;
    assert_eq!(info["aligned_volume"]["name"], "a");
    assert!(info["aligned_volume"]["id"].is_u64());
    assert_eq!(info["local_server"], app.url.as_str());
    assert_eq!(info["synapse_table"], "syn");
    assert_eq!(info["soma_table"], "nuclei");
    assert_eq!(
        info["segmentation_source"],
        format!("graphene://{}/segmentation/table/a", app.url)
    );
    assert_eq!(info["viewer_resolution_z"], 40.0);

    assert_eq!(
        get_json(&app, &format!("{M}/versions?expired=False")).await,
        json!([1])
    );
    let v = get_json(&app, &format!("{M}/version/1")).await;
    assert_eq!(v["version"], 1);
    assert_eq!(v["valid"], true);
    assert!(v["expires_on"].is_null());
    assert!(is_cave_time(v["time_stamp"].as_str().unwrap()), "{v}");
    let meta = get_json(&app, &format!("{M}/metadata?expired=True")).await;
    assert_eq!(meta.as_array().unwrap().len(), 1);
    assert_eq!(meta[0]["id"], 1);

    // Tables and counts are on the v2 paths, as caveclient asks.
    let tables = get_json(&app, "/materialize/api/v2/datastack/a/version/1/tables").await;
    assert_eq!(tables, json!(["nuclei", "proof", "syn", "types"]));
    let t = get_json(&app, &format!("{M}/version/1/table/types/metadata")).await;
    assert_eq!(t["table_name"], "types");
    assert_eq!(t["schema"], "cell_type_reference");
    assert_eq!(t["schema_type"], "cell_type_reference");
    assert_eq!(t["reference_table"], "nuclei");
    assert_eq!(t["voxel_resolution_x"], 4.0);
    assert_eq!(t["voxel_resolution_z"], 40.0);
    assert!(t.get("notice_text").is_some_and(Value::is_null));
    let syn = get_json(&app, &format!("{M}/version/1/table/syn/metadata")).await;
    assert!(syn.get("reference_table").is_some_and(Value::is_null));
    assert_eq!(syn["description"], "test synapses");
    let all = get_json(&app, &format!("{M}/version/1/tables/metadata")).await;
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert_eq!(
        get_json(
            &app,
            "/materialize/api/v2/datastack/a/version/1/table/syn/count"
        )
        .await,
        json!(13)
    );

    // The schema service: bound points as the table manager reads them.
    let schemas = get_json(&app, "/schema/api/v2/types_all").await;
    let proof = &schemas["proofreading_status_and_strategy"];
    let props = &proof["definitions"]["proofreading_status_and_strategy"]["properties"];
    assert_eq!(
        proof["$ref"],
        "#/definitions/proofreading_status_and_strategy"
    );
    assert_eq!(props["pt"]["$ref"], "#/definitions/BoundSpatialPoint");
    assert_eq!(props["status_axon"]["type"], "boolean");
    let one = get_json(&app, "/schema/api/v2/type/synapse").await;
    assert_eq!(one, schemas["synapse"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_arrow_with_split_rescaled_positions() {
    let app = graph_app(setup().await).await;
    let url = format!("{M}/version/1/table/syn/query");
    // synapse_query(pre_ids=1): caveclient's exact body.
    let body = json!({
        "filter_in_dict": {"syn": {}},
        "filter_equal_dict": {"syn": {"pre_pt_root_id": 1}},
        "desired_resolution": [1, 1, 1],
    });
    let (b, res) = cave_query(&app, &url, &body).await;
    assert_eq!(res, "1.0, 1.0, 1.0");
    assert_eq!(
        names(&b),
        [
            "id",
            "created",
            "superceded_id",
            "valid",
            "pre_pt_position_x",
            "pre_pt_position_y",
            "pre_pt_position_z",
            "pre_pt_supervoxel_id",
            "pre_pt_root_id",
            "post_pt_position_x",
            "post_pt_position_y",
            "post_pt_position_z",
            "post_pt_supervoxel_id",
            "post_pt_root_id",
            "ctr_pt_position_x",
            "ctr_pt_position_y",
            "ctr_pt_position_z",
            "size"
        ]
    );
    // Synapses 1-5 leave segment 1: three onto 2, two onto 3.
    assert_eq!(ints(&b, "id"), [1, 2, 3, 5, 6]);
    assert_eq!(ints(&b, "pre_pt_root_id"), [1; 5]);
    assert_eq!(ints(&b, "post_pt_root_id"), [2, 2, 2, 3, 3]);
    let p = inside(1);
    assert_eq!(floats(&b, "pre_pt_position_x"), [p[0] as f64 * 4.0; 5]);
    assert_eq!(floats(&b, "pre_pt_position_z"), [p[2] as f64 * 40.0; 5]);
    assert_eq!(floats(&b, "size"), [10.0, 20.0, 30.0, 1.0, 2.0]);
    // Unbound, unset points are nulls (NaN in pandas).
    assert_eq!(
        b[0].column_by_name("ctr_pt_position_x")
            .unwrap()
            .null_count(),
        b[0].num_rows()
    );
    assert_eq!(
        b[0].column_by_name("superceded_id").unwrap().null_count(),
        b[0].num_rows()
    );
    let valid = b[0].column_by_name("valid").unwrap();
    let valid = valid.as_any().downcast_ref::<BooleanArray>().unwrap();
    assert!((0..valid.len()).all(|i| valid.value(i)));

    // Without desired_resolution: the table's voxels, as integers, and the
    // table's resolution in the header.
    let (b, res) = cave_query(
        &app,
        &url,
        &json!({"filter_in_dict": {"syn": {"post_pt_root_id": [1, 4]}}}),
    )
    .await;
    assert_eq!(res, "4.0, 4.0, 40.0");
    // Rows come in index order (CAVE promises no order): sort to compare.
    let mut ids = ints(&b, "id");
    ids.sort_unstable();
    assert_eq!(ids, [4, 7, 8, 13]);
    let post = ints(&b, "post_pt_root_id");
    let x = ints(&b, "post_pt_position_x");
    for (root, x) in post.iter().zip(&x) {
        assert_eq!(*x, inside(*root as u64)[0]);
    }
    // select_columns, "t"/"f" booleans, and counts.
    let (b, _) = cave_query(
        &app,
        &format!("{M}/version/1/table/proof/query"),
        &json!({"filter_equal_dict": {"proof": {"status_axon": "t"}}, "select_columns": ["id", "pt_position", "strategy_axon"]}),
    )
    .await;
    assert_eq!(
        names(&b),
        [
            "id",
            "pt_position_x",
            "pt_position_y",
            "pt_position_z",
            "strategy_axon"
        ]
    );
    assert_eq!(
        texts(&b, "strategy_axon"),
        ["axon_fully_extended", "axon_partially_extended"]
    );
    let (b, _) = cave_query(&app, &format!("{url}?count=True"), &json!({})).await;
    assert_eq!(ints(&b, "count"), [13]);
    // A limit cut the answer: CAVE's warning header, and only that many.
    let r = app
        .client
        .post(format!("{}{url}", app.url))
        .body(json!({"limit": 2}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["warning"], "201 - \"Limited query to 2 rows\"");
    let bytes = r.bytes().await.unwrap();
    let n: usize =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
    assert_eq!(n, 2);
    // An empty answer still has every column.
    let (b, _) = cave_query(
        &app,
        &url,
        &json!({"filter_equal_dict": {"syn": {"pre_pt_root_id": 999}}}),
    )
    .await;
    assert_eq!(b.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    assert_eq!(names(&b).len(), 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_merge_references_with_caves_column_names() {
    let app = graph_app(setup().await).await;
    let url = format!("{M}/version/1/query");
    // query_table(reference table): the reference's names stay, the
    // target's shared ones get "_ref".
    let body = json!({
        "tables": [["types", "target_id"], ["nuclei", "id"]],
        "suffix_map": {"types": "", "nuclei": "_ref"},
        "desired_resolution": [1, 1, 1],
    });
    let (b, res) = cave_query(&app, &url, &body).await;
    assert_eq!(res, "1.0, 1.0, 1.0");
    assert_eq!(
        names(&b),
        [
            "id",
            "created",
            "valid",
            "target_id",
            "classification_system",
            "cell_type",
            "id_ref",
            "created_ref",
            "valid_ref",
            "pt_position_x",
            "pt_position_y",
            "pt_position_z",
            "pt_supervoxel_id",
            "pt_root_id",
            "volume",
            "bb_start_position_x",
            "bb_start_position_y",
            "bb_start_position_z",
            "bb_end_position_x",
            "bb_end_position_y",
            "bb_end_position_z"
        ]
    );
    assert_eq!(ints(&b, "target_id"), [1, 2, 3, 4]);
    assert_eq!(ints(&b, "id_ref"), [1, 2, 3, 4]);
    // Nucleus i sits in segment i.
    assert_eq!(ints(&b, "pt_root_id"), [1, 2, 3, 4]);
    assert_eq!(floats(&b, "volume"), [100.0, 200.0, 300.0, 400.0]);
    assert_eq!(floats(&b, "pt_position_y")[2], inside(3)[1] as f64 * 4.0);
    // The table manager's form: filters keyed by the table owning the
    // column, suffixes the other way round.
    let (b, _) = cave_query(
        &app,
        &url,
        &json!({
            "tables": [["types", "target_id"], ["nuclei", "id"]],
            "suffix_map": {"types": "_ref", "nuclei": ""},
            "filter_equal_dict": {"nuclei": {"pt_root_id": 3}, "types": {}},
            "filter_in_dict": {"types": {"cell_type": ["BPC", "6P"]}},
        }),
    )
    .await;
    assert_eq!(
        names(&b)[..4],
        ["id_ref", "created_ref", "valid_ref", "target_id"]
    );
    assert_eq!(ints(&b, "id"), [3]);
    assert_eq!(texts(&b, "cell_type"), ["BPC"]);
    // Another join: synapses onto segments with a nucleus.
    let (b, _) = cave_query(
        &app,
        &url,
        &json!({
            "tables": [["syn", "post_pt_root_id"], ["nuclei", "pt_root_id"]],
            "suffix_map": {"syn": "", "nuclei": "_nuc"},
            "filter_less_dict": {"nuclei": {"volume": 250}},
        }),
    )
    .await;
    let n = names(&b);
    assert!(
        n.contains(&"id_nuc".to_string()) && n.contains(&"volume".to_string()),
        "{n:?}"
    );
    assert!(
        !n.contains(&"superceded_id".to_string()),
        "joins drop superceded_id: {n:?}"
    );
    // Posts in segments 1 and 2 (nuclei of volume 100 and 200).
    let mut pairs: Vec<(i64, i64)> = ints(&b, "id").into_iter().zip(ints(&b, "id_nuc")).collect();
    pairs.sort_unstable();
    assert_eq!(pairs, [(1, 2), (2, 2), (3, 2), (4, 1), (13, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chunkedgraph_of_a_static_segmentation() {
    let app = graph_app(setup().await).await;
    let seg = "/segmentation/api/v1/table/a";
    let ids: Vec<u8> = [5u64, 864_691_135_808_473_885]
        .iter()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let r = app
        .client
        .post(format!(
            "{}{seg}/roots_binary?timestamp=1700000000.0",
            app.url
        ))
        .body(ids.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), ids);
    // caveclient posts JSON with no Content-Type.
    let r = app
        .client
        .post(format!(
            "{}{seg}/is_latest_roots?timestamp=1700000000.0",
            app.url
        ))
        .body(r#"{"node_ids": [5, 6]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"is_latest": [true, true]})
    );
    let r = app
        .client
        .get(format!(
            "{}{seg}/past_id_mapping?timestamp_past=1&timestamp_future=2",
            app.url
        ))
        .body(r#"{"root_ids": [864691135808473885]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"past_id_map": {"864691135808473885": [864_691_135_808_473_885u64]},
               "future_id_map": {"864691135808473885": [864_691_135_808_473_885u64]}})
    );
    let r = app
        .client
        .post(format!("{}{seg}/root_timestamps?latest=False", app.url))
        .body(r#"{"node_ids": [5]}"#)
        .send()
        .await
        .unwrap();
    let t = r.json::<Value>().await.unwrap();
    assert!(t["timestamp"][0].as_f64().unwrap() > 1.7e9, "{t}");
    let r = app
        .client
        .post(format!("{}{seg}/roots_binary", app.url))
        .body(vec![0u8; 7])
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request", "not a multiple of 8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cave_requests_get_messages_caveclient_shows() {
    let app = graph_app(setup().await).await;
    let post = |path: String, body: Value| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}{path}", app.url))
                .body(body.to_string())
                .send()
                .await
                .unwrap()
        }
    };
    let q = |t: &str| format!("{M}/version/1/table/{t}/query");
    assert_error(post(q("nope"), json!({})).await, 404, "not_found", "nope").await;
    assert_error(
        post(
            q("syn"),
            json!({"filter_equal_dict": {"syn": {"colour": 1}}}),
        )
        .await,
        400,
        "invalid_request",
        "no column 'colour'",
    )
    .await;
    assert_error(
        post(
            q("syn"),
            json!({"filter_equal_dict": {"nuclei": {"volume": 1}}}),
        )
        .await,
        400,
        "invalid_request",
        "names table 'nuclei'",
    )
    .await;
    assert_error(
        post(
            q("syn"),
            json!({"filter_spatial_dict": {"syn": {"pre_pt_position": [1, 2]}}}),
        )
        .await,
        400,
        "invalid_request",
        "needs a box",
    )
    .await;
    assert_error(
        post(q("syn"), json!({"colour": 1})).await,
        400,
        "invalid_request",
        "unknown field `colour`",
    )
    .await;
    assert_error(
        post(q("syn"), json!({"desired_resolution": [0, 1, 1]})).await,
        400,
        "invalid_request",
        "desired_resolution",
    )
    .await;
    assert_error(
        post(format!("{M}/version/9/table/syn/query"), json!({})).await,
        404,
        "not_found",
        "version 9",
    )
    .await;
    assert_error(
        app.get(&format!("{M}/version/one")).await,
        400,
        "invalid_request",
        "not a version number",
    )
    .await;
    assert_error(
        post(
            format!("{M}/version/1/query"),
            json!({"tables": [["syn", "id"]]}),
        )
        .await,
        400,
        "invalid_request",
        "two tables",
    )
    .await;
    assert_error(
        post(
            format!("{M}/version/1/query"),
            json!({"tables": [["syn", "post_pt_root_id"], ["gone", "id"]]}),
        )
        .await,
        404,
        "not_found",
        "gone",
    )
    .await;
    // A table made after the version is not in it.
    let r = app
        .put_json(
            "/v1/datasets/a/tables/later",
            &json!({"schema": "point", "voxel_resolution": [4, 4, 40], "segmentation": "seg"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_error(
        app.get(&format!("{M}/version/1/table/later/metadata"))
            .await,
        404,
        "not_found",
        "version 1 of dataset 'a' has no table 'later'",
    )
    .await;
    // An expired version is 410 Gone, listed only with expired=True.
    let r = app
        .post_json(
            "/v1/datasets/a/versions",
            &json!({"expires_in_days": 0.00002}),
        )
        .await;
    assert_eq!(r.status(), 202);
    for _ in 0..200 {
        let v = get_json(&app, "/v1/datasets/a/versions/2").await;
        if v["status"] == "available" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    assert_eq!(
        get_json(&app, &format!("{M}/versions?expired=False")).await,
        json!([1])
    );
    let all = get_json(&app, &format!("{M}/versions?expired=True")).await;
    assert_eq!(
        all,
        json!([1, 2]),
        "the expired version 2 is listed with expired=True"
    );
    assert_error(
        post(format!("{M}/version/2/table/syn/query"), json!({})).await,
        410,
        "gone",
        "expired",
    )
    .await;
    // Datasets are not named like CAVE's services.
    let r = app
        .put_json(
            "/v1/datasets/materialize",
            &json!({"voxel_size": [4, 4, 40], "extent": [64, 64, 8]}),
        )
        .await;
    assert_error(r, 400, "invalid_request", "reserved").await;
}
