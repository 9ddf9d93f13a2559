//! No acknowledged annotation row is lost, not even to SIGKILL: 32 writers
//! keep POSTing single synapses (the group-commit path) while the real
//! binary is killed; after a restart on the same data directory every
//! acknowledged row is there with the values its writer sent. Both
//! durability modes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

mod common;

async fn storm_then_kill(durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let env = [("NEUROCUBE__STORE__DURABILITY", durability)];
    let server = common::serve(dir.path(), &env);
    let client = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/datasets/k",
            json!({"voxel_size": [4, 4, 40], "extent": [1000, 1000, 100]}),
        ),
        (
            "/v1/datasets/k/tables/syn",
            json!({"schema": "synapse", "voxel_resolution": [4, 4, 40]}),
        ),
    ] {
        let r = client
            .put(format!("{}{path}", server.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let acked: Arc<Mutex<HashMap<u64, f64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..32u64 {
        let (client, base, acked) = (client.clone(), server.url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..100_000u64 {
                let size = (w * 100_000 + i) as f64;
                let body = json!([{"pre_pt_position": [w, i % 1000, 1], "post_pt_position": [i % 1000, w, 2], "size": size, "pre_pt_root_id": w + 1}]);
                let r = client
                    .post(format!("{base}/v1/datasets/k/tables/syn/rows"))
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let Ok(v) = r.json::<Value>().await else { return };
                        let id = v["ids"][0].as_u64().unwrap();
                        acked.lock().unwrap().insert(id, size);
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "too few rows acknowledged before the kill ({})",
        acked.len()
    );

    let server = common::serve(dir.path(), &env);
    let text = client
        .post(format!("{}/v1/datasets/k/tables/syn/query", server.url))
        .json(&json!({"timestamp": 4_000_000_000u64, "select_columns": ["id", "size"]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stored: HashMap<u64, f64> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["id"].as_u64().unwrap(), v["size"].as_f64().unwrap())
        })
        .collect();
    for (id, size) in &acked {
        assert_eq!(
            stored.get(id),
            Some(size),
            "acknowledged row {id} lost or changed after SIGKILL ({durability}); {} of {} acknowledged rows are back",
            acked.keys().filter(|k| stored.contains_key(k)).count(),
            acked.len()
        );
    }
    // The root-id index came back with the rows.
    let text = client
        .post(format!("{}/v1/datasets/k/synapse_query", server.url))
        .json(&json!({"pre_ids": [1], "timestamp": 4_000_000_000u64, "select_columns": ["id"]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let by_root = text.lines().count();
    let want = acked
        .values()
        .filter(|s| (**s as u64) / 100_000 == 0)
        .count();
    assert!(
        by_root >= want,
        "index lists {by_root} rows of writer 0, {want} were acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_storm_with_fsync() {
    storm_then_kill("fsync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_storm_with_flush() {
    storm_then_kill("flush").await;
}
