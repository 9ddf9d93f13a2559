//! No acknowledged annotation object is lost, not even to SIGKILL: 16
//! writers keep POSTing 8x8x4-voxel synapse objects (row and voxels, the
//! NeuroBlaze path: logged in a group commit, pending in memory, flushed
//! in the background) while the real binary is killed. After a restart on
//! the same data directory (which replays the label log) every
//! acknowledged object has its row and every one of its voxels.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

mod common;

const WRITERS: u64 = 16;

/// Writer `w`'s object `i`: its own 8x8x4 box, never shared.
fn corner(w: u64, i: u64) -> [u64; 3] {
    [w * 64 + (i % 8) * 8, ((i / 8) % 128) * 8, (i / 1024) * 4]
}

fn voxels(c: [u64; 3]) -> Vec<[u64; 3]> {
    let mut v = Vec::with_capacity(256);
    for z in c[2]..c[2] + 4 {
        for y in c[1]..c[1] + 8 {
            for x in c[0]..c[0] + 8 {
                v.push([x, y, z]);
            }
        }
    }
    v
}

async fn storm_then_kill(durability: &str, flush_ms: &str) {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("NEUROCUBE__STORE__DURABILITY", durability),
        ("NEUROCUBE__OBJECTS__FLUSH_INTERVAL_MS", flush_ms),
    ];
    let server = common::serve(dir.path(), &env);
    let client = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/datasets/k",
            json!({"voxel_size": [4, 4, 40], "extent": [1024, 1024, 64]}),
        ),
        (
            "/v1/datasets/k/channels/anno",
            json!({"type": "segmentation", "dtype": "uint64", "chunk_size": [64, 64, 16]}),
        ),
        (
            "/v1/datasets/k/tables/syn",
            json!({"schema": "ramon_synapse", "voxel_resolution": [4, 4, 40], "segmentation": "anno"}),
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
    let acked: Arc<Mutex<HashMap<u64, (u64, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, base, acked) = (client.clone(), server.url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..1024u64 {
                let body = json!({
                    "author": format!("w{w}"), "weight": i as f64,
                    "voxels": voxels(corner(w, i)),
                });
                let r = client
                    .post(format!("{base}/v1/datasets/k/tables/syn/objects"))
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let Ok(v) = r.json::<Value>().await else {
                            return;
                        };
                        let id = v["ids"][0].as_u64().unwrap();
                        acked.lock().unwrap().insert(id, (w, i));
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 50,
        "too few objects acknowledged before the kill ({})",
        acked.len()
    );

    let server = common::serve(dir.path(), &env);
    // Rows.
    let text = client
        .post(format!("{}/v1/datasets/k/tables/syn/query", server.url))
        .json(&json!({"timestamp": 4_000_000_000u64, "select_columns": ["id", "author", "weight"]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: HashMap<u64, (String, f64)> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_u64().unwrap(),
                (
                    v["author"].as_str().unwrap().to_string(),
                    v["weight"].as_f64().unwrap(),
                ),
            )
        })
        .collect();
    // Voxels: the layers the storm reached, read as one cutout.
    let top = acked
        .values()
        .map(|(_, i)| corner(0, *i)[2] + 4)
        .max()
        .unwrap();
    let raw = client
        .get(format!(
            "{}/k/anno/raw/0/0,1024/0,1024/0,{top}/",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let raw = raw.bytes().await.unwrap();
    let label = |v: [u64; 3]| {
        let o = ((v[2] * 1024 + v[1]) * 1024 + v[0]) as usize * 8;
        u64::from_le_bytes(raw[o..o + 8].try_into().unwrap())
    };
    let mut lost_voxels = 0;
    let mut lost_rows = 0;
    for (id, (w, i)) in &acked {
        if rows.get(id) != Some(&(format!("w{w}"), *i as f64)) {
            lost_rows += 1;
        }
        lost_voxels += voxels(corner(*w, *i))
            .into_iter()
            .filter(|v| label(*v) != *id)
            .count();
    }
    assert_eq!(
        (lost_rows, lost_voxels),
        (0, 0),
        "acknowledged objects lost after SIGKILL ({durability}, flush every {flush_ms} ms): {} acknowledged",
        acked.len()
    );
    // The label log was replayed into the chunks and emptied.
    let m = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines().any(|l| l == "neurocube_label_pending_bytes 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_object_storm_with_fsync() {
    // Flushes run during the storm: the kill lands among logged, pending
    // and flushing writes.
    storm_then_kill("fsync", "300").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_object_storm_with_nothing_flushed() {
    // Every acknowledged voxel is only in the log when the server dies.
    storm_then_kill("flush", "600000").await;
}
