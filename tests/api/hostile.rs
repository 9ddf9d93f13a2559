//! Requests a hostile user sent (issue 9, "found already"): each once
//! crashed, hung or bloated the server. Each must now get a clear 4xx,
//! leave stored data as it was, and leave the server serving.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_with};

async fn huge_dataset(app: &TestApp, ds: &str, extent: [u64; 3]) {
    let r = app
        .put_json(
            &format!("/v1/datasets/{ds}"),
            &json!({"voxel_size": [1, 1, 1], "extent": extent}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
}

/// The server still answers a small read with what was stored.
async fn still_serving(app: &TestApp, url: &str, want: &[u8]) {
    let r = app.get(url).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), want);
}

/// Found 1: a box whose byte count overflows 64 bits once wrapped past the
/// 1 GiB limit and aborted the process on allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutouts_whose_size_overflows_are_413() {
    let app = spawn_app().await;
    huge_dataset(&app, "ovfds", [134_217_728, 134_217_728, 1024]).await;
    app.channel("ovfds", "img", "image", "uint8", [128, 128, 16])
        .await;
    app.put("/ovfds/img/raw/0/0,2/0,1/0,1/", vec![7u8, 9]).await;
    let url = "/ovfds/img/raw/0/0,134217728/0,134217728/0,1024/";
    let msg = "the cutout is more than 2^64 bytes, over the limit of 1073741824 bytes";
    assert_error(app.get(url).await, 413, "too_large", msg).await;
    assert_error(app.put(url, vec![0u8; 16]).await, 413, "too_large", msg).await;
    still_serving(&app, "/ovfds/img/raw/0/0,2/0,1/0,1/", &[7, 9]).await;
}

/// Found 2: chunk edges whose product overflows once passed the 64 MiB
/// chunk limit; a later write to the channel panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_sizes_that_overflow_are_refused() {
    let app = spawn_app().await;
    huge_dataset(&app, "d", [1 << 22, 1 << 22, 1 << 22]).await;
    for chunk in [
        json!([4_294_967_296u64, 4_294_967_296u64, 1]),
        json!([1u64 << 21, 1u64 << 21, 1u64 << 22]),
        json!([1u64 << 63, 2, 1]),
    ] {
        let r = app
            .put_json(
                "/v1/datasets/d/channels/c",
                &json!({"type": "image", "dtype": "uint8", "chunk_size": chunk}),
            )
            .await;
        assert_error(r, 400, "invalid_request", "at most 67108864 are allowed").await;
    }
    assert_error(
        app.get("/v1/datasets/d/channels/c").await,
        404,
        "not_found",
        "channel 'c' does not exist in dataset 'd'",
    )
    .await;
}

/// Found 3: deleting a channel of a huge dataset walked every super-block
/// of its grid (2^57 steps). The purge now visits what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_channel_of_a_huge_dataset_purges_what_exists() {
    let app = spawn_app().await;
    huge_dataset(&app, "big", [268_435_328, 268_435_328, 33_554_416]).await;
    app.channel("big", "c", "image", "uint8", [128, 128, 16])
        .await;
    app.channel("big", "keep", "image", "uint8", [128, 128, 16])
        .await;
    let far = "/big/{ch}/raw/0/200000000,200000001/100,101/30000000,30000001/";
    for ch in ["c", "keep"] {
        let r = app.put(&far.replace("{ch}", ch), vec![5u8]).await;
        assert_eq!(r.status().as_u16(), 201);
    }
    assert_eq!(app.stored_chunks().await, 2);
    let r = app.delete("/v1/datasets/big/channels/c").await;
    assert!(r.status().is_success(), "{}", r.status());
    // Bounded wait: the purge must end, not make progress for ever.
    let started = Instant::now();
    while app.services.purger.pending().await.unwrap() > 0 || app.stored_chunks().await != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the purge of one written chunk did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_serving(&app, &far.replace("{ch}", "keep"), &[5]).await;
}

/// Send a request head by hand and read the whole answer (the server
/// closes or answers without waiting for the promised body).
async fn raw_request(app: &TestApp, head: &str, body: &[u8], pause: Duration) -> String {
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    tokio::time::sleep(pause).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // One answer is enough.
                    let text = String::from_utf8_lossy(&out);
                    if let Some(end) = text.find("\r\n\r\n")
                        && text.contains("}")
                        && text.len() > end + 4
                    {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 30 s");
    String::from_utf8_lossy(&out).into_owned()
}

/// Found 4: a declared Content-Length far past the box reserved memory for
/// it before the 400; it is now refused from the header, before the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_past_the_box_is_refused_before_the_body() {
    let app = spawn_app().await;
    app.dataset("d", [64, 64, 8], 1).await;
    app.channel("d", "c", "image", "uint8", [32, 32, 8]).await;
    let head =
        "PUT /d/c/raw/0/0,1/0,1/0,1/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n";
    let answer = raw_request(&app, head, b"", Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("the request body is 1073741824 bytes"),
        "{answer}"
    );
    assert_eq!(app.stored_chunks().await, 0);
}

/// Found 6: a body that stops arriving part way held its worker for ever;
/// now it gets 408 after `limits.body_idle_timeout_secs` and nothing is
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_writes_nothing() {
    let app = spawn_with(|s| s.limits.body_idle_timeout_secs = 1).await;
    app.dataset("d", [64, 64, 8], 1).await;
    app.channel("d", "c", "image", "uint8", [32, 32, 8]).await;
    let head = "PUT /d/c/raw/0/0,10/0,10/0,1/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    let answer = raw_request(&app, head, &[1u8; 40], Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(
            "the request body stalled: no bytes arrived for 1 s after 40 bytes (server setting limits.body_idle_timeout_secs)"
        ),
        "{answer}"
    );
    assert!(answer.contains("\"code\":\"body_stalled\""), "{answer}");
    assert_eq!(app.stored_chunks().await, 0);
    // The same upload in one go is stored.
    let r = app.put("/d/c/raw/0/0,10/0,10/0,1/", vec![3u8; 100]).await;
    assert_eq!(r.status().as_u16(), 201);
    still_serving(&app, "/d/c/raw/0/0,10/0,10/0,1/", &[3u8; 100]).await;
}

/// Slow clients (issue 9, limits): connections that send half a request
/// head and then nothing are closed after `limits.head_timeout_secs`, and
/// meanwhile other clients are served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_finish_their_headers_are_cut_off() {
    let app = spawn_with(|s| s.limits.head_timeout_secs = 1).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(c);
    }
    let started = Instant::now();
    assert_eq!(app.get("/health").await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Every slow connection is answered 408 (or just closed) and ends.
    for mut c in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow connection was left open");
        let text = String::from_utf8_lossy(&buf);
        assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert_eq!(app.get("/health").await.status(), 200);
}
