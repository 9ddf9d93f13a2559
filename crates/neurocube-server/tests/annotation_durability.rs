//! No acknowledged annotation row is lost, not even to SIGKILL: 32 writers
//! keep POSTing single synapses (the group-commit path), or 4 writers
//! bodies of 5,000 (the bulk path: index entries ingested, then the rows
//! group-committed), while the real binary is killed; after a restart on
//! the same data directory every acknowledged row is there with the values
//! its writer sent, and the root-id index lists the rows that are there.
//! Both durability modes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

mod common;

/// Each writer's sizes start at `writer * WRITER_SIZES`.
const WRITER_SIZES: u64 = 10_000_000;

async fn storm_then_kill(durability: &str, writers_n: u64, per_request: u64) {
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
    for w in 0..writers_n {
        let (client, base, acked) = (client.clone(), server.url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for j in 0..WRITER_SIZES / per_request {
                let sizes: Vec<f64> = (0..per_request)
                    .map(|r| (w * WRITER_SIZES + j * per_request + r) as f64)
                    .collect();
                let body: Vec<Value> = sizes
                    .iter()
                    .map(|&size| {
                        let i = size as u64 % 1000;
                        json!({"pre_pt_position": [w, i, 1], "post_pt_position": [i, w, 2], "size": size, "pre_pt_root_id": w + 1})
                    })
                    .collect();
                let r = client
                    .post(format!("{base}/v1/datasets/k/tables/syn/rows"))
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let Ok(v) = r.json::<Value>().await else { return };
                        let ids = v["ids"].as_array().unwrap();
                        assert_eq!(ids.len(), sizes.len());
                        let mut acked = acked.lock().unwrap();
                        for (id, size) in ids.iter().zip(&sizes) {
                            acked.insert(id.as_u64().unwrap(), *size);
                        }
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
        .filter(|s| (**s as u64) / WRITER_SIZES == 0)
        .count();
    assert!(
        by_root >= want,
        "index lists {by_root} rows of writer 0, {want} were acknowledged"
    );
    // And no more than are there: index entries written ahead of rows that
    // were never committed stay invisible.
    let there = stored
        .values()
        .filter(|s| (**s as u64) / WRITER_SIZES == 0)
        .count();
    assert_eq!(
        by_root, there,
        "index lists {by_root} rows of writer 0, {there} are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_storm_with_fsync() {
    storm_then_kill("fsync", 32, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_storm_with_flush() {
    storm_then_kill("flush", 32, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bulk_uploads_with_fsync() {
    storm_then_kill("fsync", 4, 5000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bulk_uploads_with_flush() {
    storm_then_kill("flush", 4, 5000).await;
}
