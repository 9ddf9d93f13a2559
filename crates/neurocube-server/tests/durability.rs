//! An acknowledged write is never lost, not even to SIGKILL: writers keep
//! PUTting distinct boxes while the real binary is killed with SIGKILL;
//! after a restart on the same data directory every acknowledged box reads
//! back exactly. Run in both durability modes (fsync, and flush-to-OS).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

mod common;

fn start(dir: &std::path::Path, durability: &str) -> common::Server {
    common::serve(dir, &[("NEUROCUBE__STORE__DURABILITY", durability)])
}

/// Box `i`: a 40×40×5 block at a position that overlaps chunk borders, so
/// writes are partial (read-patch-CAS) as well as full.
fn box_url(base: &str, i: u64) -> String {
    let (x, y, z) = ((i % 6) * 40 + 7, ((i / 6) % 6) * 40 + 3, (i / 36) * 5);
    format!(
        "{base}/k/c/raw/0/{x},{}/{y},{}/{z},{}/",
        x + 40,
        y + 40,
        z + 5
    )
}

fn value(i: u64) -> u8 {
    (i % 250) as u8 + 1
}

async fn killed_mid_write_keeps_every_acknowledged_box(durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), durability);
    let client = reqwest::Client::new();
    let put = |u: String, v: serde_json::Value| client.put(u).json(&v).send();
    assert_eq!(
        put(
            format!("{}/v1/datasets/k", server.url),
            json!({"voxel_size": [4, 4, 40], "extent": [256, 256, 60]})
        )
        .await
        .unwrap()
        .status(),
        201
    );
    assert_eq!(
        put(
            format!("{}/v1/datasets/k/channels/c", server.url),
            json!({"type": "image", "dtype": "uint8", "chunk_size": [64, 64, 8]})
        )
        .await
        .unwrap()
        .status(),
        201
    );

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (client, base, acked) = (client.clone(), server.url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            // Writer w owns boxes i ≡ w (mod 4); boxes never overlap.
            for i in (w..432).step_by(4) {
                let body = vec![value(i); 40 * 40 * 5];
                match client.put(box_url(&base, i)).body(body).send().await {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(i),
                    _ => return,
                }
            }
        }));
    }
    // Let some writes land, then SIGKILL the server in the middle of others.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 4,
        "too few writes were acknowledged before the kill ({})",
        acked.len()
    );

    let server = start(dir.path(), durability);
    for i in acked {
        let got = client
            .get(box_url(&server.url, i))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            got.iter().all(|&v| v == value(i)),
            "acknowledged box {i} lost after SIGKILL ({durability})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_fsync() {
    killed_mid_write_keeps_every_acknowledged_box("fsync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_flush() {
    killed_mid_write_keeps_every_acknowledged_box("flush").await;
}
