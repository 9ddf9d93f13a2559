//! The annotation store over HTTP, continued: versions that later writes do
//! not change, append-only updates, group commit under 64 writers,
//! synapse_query with reference tables and joins, and the purge of expired
//! versions (neurons too large for one index read: busy_neurons.rs).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::annotation_filters::reference;
use crate::annotations::{ids_of, insert, label, random_synapses, setup, syn_json};
use crate::helpers::{TestApp, assert_error};

pub(crate) async fn materialize(app: &TestApp) -> u64 {
    let r = app.post_json("/v1/datasets/a/versions", &json!({})).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let version = v["version"].as_u64().unwrap();
    wait_available(app, version).await;
    version
}

/// Wait until version `version` of dataset `a` is available.
async fn wait_available(app: &TestApp, version: u64) {
    for _ in 0..200 {
        let v: Value = app
            .get(&format!("/v1/datasets/a/versions/{version}"))
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "available" {
            return;
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
                // A full write queue answers 503 with Retry-After (by design,
                // on a slow node): a well-behaved client waits and retries.
                let mut tries = 0;
                let r = loop {
                    let r = client.post(format!("{url}/v1/datasets/a/tables/syn/rows")).json(&body).send().await.unwrap();
                    if r.status() != 503 || tries == 100 {
                        break r;
                    }
                    assert!(r.headers().contains_key("retry-after"), "a 503 says when to retry");
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                };
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

/// Partitions of `table` whose keys are `len` bytes long and start with
/// `prefix`.
async fn partitions(
    app: &TestApp,
    table: neurocube_store::Table,
    prefix: &[u8],
    len: usize,
) -> usize {
    let mut n = 0;
    let mut page = None;
    loop {
        let p = app
            .services
            .store
            .partitions(table, prefix, len, page, 1000)
            .await
            .unwrap();
        n += p.keys.len();
        page = p.next;
        if page.is_none() {
            return n;
        }
    }
}

/// A table version's stored partitions: (rows, index).
async fn version_partitions(app: &TestApp, uid: u64, v: u32) -> (usize, usize) {
    use neurocube_service::keys;
    let prefix = keys::version_prefix(uid, v);
    (
        partitions(
            app,
            neurocube_store::Table::Rows,
            &prefix,
            keys::ROWS_PARTITION_LEN,
        )
        .await,
        partitions(
            app,
            neurocube_store::Table::RowIndex,
            &prefix,
            keys::INDEX_PARTITION_LEN,
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_versions_and_deleted_tables_give_their_rows_back() {
    use neurocube_core::{DatasetName, TableName};
    use neurocube_service::keys;
    use neurocube_store::Table;
    let app = setup().await;
    let mut rows = random_synapses(40, 8);
    insert(&app, &mut rows).await;
    let v1 = materialize(&app).await as u32;
    let before = app
        .query("/v1/datasets/a/tables/syn/query", &json!({"version": v1}))
        .await;
    assert_eq!(before.len(), 40);
    // Version 2 expires 1.7 s after it is made.
    let r = app
        .post_json(
            "/v1/datasets/a/versions",
            &json!({"expires_in_days": 0.00002}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let v2 = r.json::<Value>().await.unwrap()["version"]
        .as_u64()
        .unwrap();
    wait_available(&app, v2).await;
    let v2 = v2 as u32;
    let (ds, name) = (
        DatasetName::parse("a").unwrap(),
        TableName::parse("syn").unwrap(),
    );
    let uid = app
        .services
        .annotations
        .table(&ds, &name)
        .await
        .unwrap()
        .uid();
    let (rows1, index1) = version_partitions(&app, uid, v1).await;
    assert!(rows1 > 0 && index1 > 0);
    assert_eq!(version_partitions(&app, uid, v2).await, (rows1, index1));
    // Not expired yet: nothing to retire.
    assert_eq!(app.services.annotations.retire_versions().await.unwrap(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(1900)).await;
    assert_eq!(app.services.annotations.retire_versions().await.unwrap(), 1);
    app.services.purger.purge_all().await.unwrap();
    assert_eq!(
        version_partitions(&app, uid, v2).await,
        (0, 0),
        "version 2's rows and indexes are gone"
    );
    assert_eq!(
        version_partitions(&app, uid, v1).await,
        (rows1, index1),
        "version 1 is untouched"
    );
    assert_eq!(
        app.services.annotations.retire_versions().await.unwrap(),
        0,
        "once"
    );
    // Version 2 is still listed, expired and purged, and refused by name;
    // version 1 answers exactly as before.
    let v: Value = app
        .get(&format!("/v1/datasets/a/versions/{v2}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["valid"].clone(), v["purged"].clone()),
        (json!(false), json!(true))
    );
    assert_error(
        app.post_json("/v1/datasets/a/tables/syn/query", &json!({"version": v2}))
            .await,
        410,
        "gone",
        "expired",
    )
    .await;
    let after = app
        .query("/v1/datasets/a/tables/syn/query", &json!({"version": v1}))
        .await;
    assert_eq!(after, before);

    // A deleted table: every row of it goes (live, versions, indexes, its
    // id counter); a table made again under the name starts empty.
    let live = keys::version_prefix(uid, keys::LIVE);
    assert!(partitions(&app, Table::Rows, &live, keys::ROWS_PARTITION_LEN).await > 0);
    assert_eq!(app.delete("/v1/datasets/a/tables/syn").await.status(), 204);
    app.services.purger.purge_all().await.unwrap();
    let whole = uid.to_be_bytes();
    assert_eq!(
        partitions(&app, Table::Rows, &whole, keys::ROWS_PARTITION_LEN).await,
        0
    );
    assert_eq!(
        partitions(&app, Table::RowIndex, &whole, keys::INDEX_PARTITION_LEN).await,
        0
    );
    let ids = app
        .services
        .store
        .get_many(Table::Meta, &[keys::table_ids(uid)])
        .await
        .unwrap();
    assert_eq!(ids, vec![None]);
    assert_eq!(app.services.purger.pending().await.unwrap(), 0);
    let r = app
        .put_json(
            "/v1/datasets/a/tables/syn",
            &json!({"schema": "synapse", "voxel_resolution": [4, 4, 40], "segmentation": "seg"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let c: Value = app
        .get("/v1/datasets/a/tables/syn/count")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["count"], 0);
}
