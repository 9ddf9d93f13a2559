//! Neurons with thousands of synapses in a version: read in pieces by the
//! root-id and pair plans without losing rows, whole or in pages; and
//! packed root-id blocks (a busy root id's rows stored together in columns)
//! answering a query for that one root id with exactly the rows, order,
//! values and pages of the row-at-a-time path (which an extra filter
//! condition still takes).

use arrow_array::RecordBatch;
use serde_json::{Value, json};

use crate::annotation_versions::materialize;
use crate::annotations::{Syn, ids_of, insert, label, random_synapses, setup, setup_with};
use crate::helpers::TestApp;

/// The body and plan header of a query.
async fn answer(app: &TestApp, path: &str, body: &Value, format: &str) -> (Vec<u8>, String) {
    let r = app
        .post_json(&format!("{path}?format={format}"), body)
        .await;
    assert_eq!(r.status(), 200, "{path} {body}");
    let plan = r
        .headers()
        .get("x-neurocube-plan")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.bytes().await.unwrap().to_vec(), plan)
}

/// An Arrow stream's batches as one.
fn one_batch(body: &[u8]) -> RecordBatch {
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
            .unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
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
        assert!(
            page.len() as u64 <= limit,
            "{} rows on a page of {limit}",
            page.len()
        );
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
    heavy_neurons(setup().await).await;
}

/// The same with a query step smaller than the heavy pair: the pair plan
/// stops mid-range and reads on from there in its next step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_pairs_span_query_steps_without_losing_rows() {
    heavy_neurons(setup_with(|s| s.annotations.query_batch_rows = 2_500).await).await;
}

/// Points in the cells of three neurons: a (at (0, 0, 0)), b (32, 0, 0)
/// and c (64, 0, 0).
const HEAVY: [[i64; 3]; 3] = [[3, 3, 3], [40, 3, 3], [70, 3, 3]];

/// 2,600 synapses from a to b, 300 from a to c, and 400 anywhere (`seed`),
/// inserted, then a version of them: the rows (with their ids) and the
/// version.
async fn heavy_version(app: &TestApp, seed: u64) -> (Vec<Syn>, u64) {
    let [a, b, c] = HEAVY;
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
    rows.extend(random_synapses(400, seed));
    for chunk in rows.chunks_mut(1000) {
        insert(app, chunk).await;
    }
    let version = materialize(app).await;
    (rows, version)
}

async fn heavy_neurons(app: TestApp) {
    let (rows, version) = heavy_version(&app, 11).await;
    let [a, b, c] = HEAVY;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_neurons_answer_from_packed_blocks_as_from_their_rows() {
    // Roots with at least 300 synapses on a point are packed: the pre cell
    // at (0, 0, 0) (2,900: two blocks of 2,048 and one more), the post
    // cell at (32, 0, 0) (2,600) and the one at (64, 0, 0) (300, exactly);
    // the rest (scattered) are not.
    let app = setup_with(|s| s.annotations.pack_min_rows = 300).await;
    let (rows, version) = heavy_version(&app, 21).await;
    let [a, b, c] = HEAVY;
    let small = label(rows[2950].post);
    let small_rows = rows.iter().filter(|s| label(s.post) == small).count();
    assert!(small_rows < 300, "{small_rows}");
    let path = "/v1/datasets/a/tables/syn/query";
    for (column, root, packed) in [
        ("pre_pt_root_id", label(a), true),
        ("post_pt_root_id", label(b), true),
        ("post_pt_root_id", label(c), true),
        ("post_pt_root_id", small, false),
    ] {
        // The scattered synapses may land on these cells too.
        let n = rows
            .iter()
            .filter(|s| {
                label(if column == "pre_pt_root_id" {
                    s.pre
                } else {
                    s.post
                }) == root
            })
            .count();
        for options in [
            json!({}),
            json!({"split_positions": true, "desired_resolution": [2, 2, 20]}),
            json!({"select_columns": ["size", "pre_pt_position", "id"]}),
            json!({"limit": 5000}),
        ] {
            let mut q = json!({"version": version, "filter_equal_dict": {column: root}});
            let mut by_rows = json!({"version": version, "filter_equal_dict": {column: root},
                "filter_greater_dict": {"id": 0}});
            for (k, v) in options.as_object().unwrap() {
                q[k] = v.clone();
                by_rows[k] = v.clone();
            }
            let what = format!("{column} {root} {options}");
            for format in ["jsonl", "csv"] {
                let (x, plan) = answer(&app, path, &q, format).await;
                let (y, row_plan) = answer(&app, path, &by_rows, format).await;
                assert_eq!(plan.contains("packed"), packed, "{what}: {plan}");
                assert!(!row_plan.contains("packed"), "{row_plan}");
                assert_eq!(
                    String::from_utf8(x).unwrap(),
                    String::from_utf8(y).unwrap(),
                    "{what} {format}"
                );
            }
            let (x, _) = answer(&app, path, &q, "arrow").await;
            let (y, _) = answer(&app, path, &by_rows, "arrow").await;
            let (x, y) = (one_batch(&x), one_batch(&y));
            assert_eq!(x.num_rows(), n, "{what}");
            assert_eq!(x, y, "{what} arrow");
        }
        // Pages: the first from the blocks, the rest from the root-id
        // index after the token, every row once and in the same order.
        let q = json!({"version": version, "filter_in_dict": {column: [root]}});
        let whole = ids_of(&app.query(path, &q).await);
        assert_eq!(whole.len(), n);
        for limit in [1, 700, 2048, n as u64] {
            assert_eq!(
                all_pages(&app, &q, limit).await,
                whole,
                "{column} {root} limit {limit}"
            );
        }
    }
    // synapse_query by one post root id, and the same with a box (which the
    // blocks do not answer), agree with the rows inserted.
    let mut want: Vec<u64> = rows
        .iter()
        .filter(|s| label(s.post) == label(b))
        .map(|s| s.id)
        .collect();
    want.sort_unstable();
    let r = app
        .post_json(
            "/v1/datasets/a/synapse_query",
            &json!({"post_ids": [label(b)], "version": version}),
        )
        .await;
    assert!(
        r.headers()["x-neurocube-plan"]
            .to_str()
            .unwrap()
            .contains("packed")
    );
    let mut got = ids_of(
        &r.text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect::<Vec<Value>>(),
    );
    got.sort_unstable();
    assert_eq!(got, want);
    let boxed = app
        .query(
            "/v1/datasets/a/synapse_query",
            &json!({"post_ids": [label(b)], "version": version,
                "bounding_box": [[0, 0, 0], [256, 256, 32]]}),
        )
        .await;
    let mut boxed = ids_of(&boxed);
    boxed.sort_unstable();
    assert_eq!(boxed, want);
}
