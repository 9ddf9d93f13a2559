//! SIGTERM drains: the real binary gets SIGTERM while writers keep PUTting
//! boxes and one large upload is still streaming in. It stops accepting new
//! connections, finishes the requests in flight (the large upload is
//! acknowledged), drains its background workers, flushes the store and
//! exits 0 within the grace period; after a restart every acknowledged box
//! reads back exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

mod common;

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

/// The large upload: z 60..124 of the whole 256 x 256 plane, 4 MiB, sent in
/// 64 KiB pieces over about a second.
const BIG: &str = "/k/c/raw/0/0,256/0,256/60,124/";
const BIG_LEN: usize = 256 * 256 * 64;

fn big_value(i: usize) -> u8 {
    (i % 253) as u8 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("NEUROCUBE__SERVER__SHUTDOWN_GRACE_SECS", "20")];
    let mut server = common::serve(dir.path(), &env);
    let client = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/datasets/k",
            json!({"voxel_size": [4, 4, 40], "extent": [256, 256, 124], "levels": 2}),
        ),
        (
            "/v1/datasets/k/channels/c",
            json!({"type": "image", "dtype": "uint8", "chunk_size": [64, 64, 8]}),
        ),
    ] {
        let r = client
            .put(format!("{}{path}", server.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    // The slow upload, started first so it is in flight at SIGTERM.
    let big = {
        let url = format!("{}{BIG}", server.url);
        let client = client.clone();
        tokio::spawn(async move {
            let pieces =
                futures::stream::iter((0..BIG_LEN).step_by(1 << 16)).then(|start| async move {
                    tokio::time::sleep(Duration::from_millis(16)).await;
                    let piece: Vec<u8> = (start..start + (1 << 16)).map(big_value).collect();
                    Ok::<_, std::io::Error>(Bytes::from(piece))
                });
            client
                .put(url)
                .header("content-length", BIG_LEN)
                .body(reqwest::Body::wrap_stream(pieces))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };

    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (client, base) = (client.clone(), server.url.clone());
        let (acked, errors) = (acked.clone(), errors.clone());
        writers.push(tokio::spawn(async move {
            for i in (w..432).step_by(4) {
                let body = vec![value(i); 40 * 40 * 5];
                match client.put(box_url(&base, i)).body(body).send().await {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(i),
                    // Refused or cut once the server stopped accepting: fine.
                    Err(_) => return,
                    Ok(r) => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("box {i}: {}", r.status()));
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    let pid = server.child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        let s = server.child.wait().unwrap();
        (s, server)
    });
    let (status, _server) = tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .expect("the server exits within the grace period")
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM must end in exit code 0, got {status:?}"
    );
    assert!(signalled.elapsed() < Duration::from_secs(20));
    assert_eq!(
        big.await
            .unwrap()
            .expect("the in-flight upload is answered"),
        201,
        "the upload in flight at SIGTERM is finished, not cut"
    );
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 4,
        "too few writes before SIGTERM ({})",
        acked.len()
    );

    let server = common::serve(dir.path(), &env);
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
            "acknowledged box {i} lost after SIGTERM"
        );
    }
    let got = client
        .get(format!("{}{BIG}", server.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), BIG_LEN);
    assert!(
        got.iter().enumerate().all(|(i, &v)| v == big_value(i)),
        "the upload acknowledged during shutdown reads back"
    );
}
