//! CAVE's filters over HTTP, each checked against the answer computed here
//! independently from the rows the test wrote.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::annotation_versions::materialize;
use crate::annotations::{Syn, ids_of, insert, label, random_synapses, setup, setup_with};
use crate::helpers::assert_error;

/// The rows a CAVE filter keeps, computed without the server.
pub(crate) fn reference(rows: &[Syn], keep: impl Fn(&Syn) -> bool) -> Vec<u64> {
    rows.iter().filter(|s| keep(s)).map(|s| s.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_agrees_with_an_independent_reference() {
    every_filter_agrees(setup().await).await;
}

/// The same with the upload's index entries ingested ahead of its rows
/// (the bulk path, here for an upload of 600 rows): live queries through
/// every index see exactly the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_agrees_when_the_upload_ingests_its_index() {
    every_filter_agrees(setup_with(|s| s.annotations.ingest_min_rows = 100).await).await;
}

async fn every_filter_agrees(app: crate::helpers::TestApp) {
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
