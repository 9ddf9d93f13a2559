//! Admission control under overload: with `limits.max_inflight_bytes` at
//! 64 MiB, 24 concurrent heavy requests (whole-slab Blosc reads, streamed
//! raw reads, 16 MiB uploads) get either their answer or a 503 with
//! Retry-After, never a failure of another kind; the server's peak memory
//! (VmHWM of the real binary) grows by a bounded multiple of the budget,
//! not by the sum of the requests; and nothing refused was stored.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::time::Duration;

use serde_json::{Value, json};

mod common;

const MIB: u64 = 1 << 20;
const BUDGET: u64 = 64 * MIB;

/// Resident-set peak of a process, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    kib * 1024
}

/// Reset the peak (Linux: writing 5 to clear_refs).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

fn slab(z: u64, v: u8) -> Vec<u8> {
    // 1024 x 1024 x 16 of a pattern that compresses poorly (EM-like noise).
    (0..(1024 * 1024 * 16) as usize)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ v ^ z as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_503_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let budget = BUDGET.to_string();
    let server = common::serve(
        dir.path(),
        &[
            ("NEUROCUBE__LIMITS__MAX_INFLIGHT_BYTES", budget.as_str()),
            ("NEUROCUBE__JOBS__WORKERS", "0"),
            ("NEUROCUBE__TILES__PREFETCH", "false"),
        ],
    );
    let pid = server.child.id();
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.url);
    for (path, body) in [
        (
            "/v1/datasets/big",
            json!({"voxel_size": [4, 4, 40], "extent": [1024, 1024, 64]}),
        ),
        (
            "/v1/datasets/big/channels/img",
            json!({"type": "image", "dtype": "uint8", "chunk_size": [128, 128, 16]}),
        ),
    ] {
        let r = client.put(url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    // Slabs z 0..48 hold data; z 48..64 is left empty for the uploads.
    for z in [0u64, 16, 32] {
        let r = client
            .put(url(&format!(
                "/big/img/raw/0/0,1024/0,1024/{z},{}/",
                z + 16
            )))
            .body(slab(z, 7))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    reset_peak(pid);
    let base = peak_rss(pid);

    // 24 heavy requests at once: 8 Blosc reads of a 16 MiB slab (32 MiB
    // reserved each), 8 streamed raw reads of the whole 64 MiB volume
    // (48 MiB each: three slabs), 8 raw uploads of 16 MiB.
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let client = client.clone();
        let base_url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            let r = match i % 3 {
                0 => {
                    client
                        .get(format!("{base_url}/big/img/blosc/0/0,1024/0,1024/16,32/"))
                        .send()
                        .await
                }
                1 => {
                    client
                        .get(format!("{base_url}/big/img/raw/0/0,1024/0,1024/0,64/"))
                        .send()
                        .await
                }
                _ => {
                    client
                        .put(format!("{base_url}/big/img/raw/0/0,1024/0,1024/48,64/"))
                        .body(vec![9u8; (16 * MIB) as usize])
                        .send()
                        .await
                }
            };
            // An upload refused before its body was read may see its
            // connection closed while still sending: a refusal too.
            let r = match r {
                Ok(r) => r,
                Err(e) if i % 3 == 2 => return (2, 0, None, bytes::Bytes::from(e.to_string())),
                Err(e) => panic!("request {i}: {e}"),
            };
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body = r.bytes().await.unwrap();
            (i % 3, status, retry, body)
        }));
    }
    let mut refused = 0;
    let mut served = 0;
    for t in tasks {
        let (kind, status, retry, body) = t.await.unwrap();
        match status {
            0 => refused += 1,
            200 | 201 => {
                served += 1;
                if kind == 1 {
                    assert_eq!(body.len() as u64, 64 * MIB);
                }
            }
            503 => {
                refused += 1;
                assert_eq!(retry.as_deref(), Some("1"), "503 carries Retry-After");
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["code"], "unavailable");
                assert_eq!(v["error"], "overloaded");
                assert_eq!(v["limit"], BUDGET);
                assert!(
                    v["message"]
                        .as_str()
                        .unwrap()
                        .contains("limits.max_inflight_bytes"),
                    "{v}"
                );
            }
            s => panic!(
                "request kind {kind} got {s}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    let grown = peak_rss(pid).saturating_sub(base);
    eprintln!(
        "served {served}, refused {refused}; peak RSS grew {} MiB over {} MiB (budget {} MiB; the 24 requests together would hold {} MiB)",
        grown / MIB,
        base / MIB,
        BUDGET / MIB,
        8 * 32 + 8 * 48 + 8 * 16
    );
    assert!(
        refused > 0,
        "24 heavy requests over a 64 MiB budget: some must be refused"
    );
    assert!(served > 0, "requests within the budget are served");
    assert!(
        grown < 4 * BUDGET,
        "peak RSS grew {} MiB, over 4x the {} MiB budget",
        grown / MIB,
        BUDGET / MIB
    );
    // Data written before is intact; the uploads wrote all 9s or nothing.
    let r = client
        .get(url("/big/img/raw/0/0,1024/0,1024/0,16/"))
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap().as_ref() == slab(0, 7).as_slice());
    let top = client
        .get(url("/big/img/raw/0/0,1024/0,1024/48,64/"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(top.iter().all(|&v| v == 9) || top.iter().all(|&v| v == 0));
}
