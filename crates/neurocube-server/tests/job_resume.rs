//! A downsample job survives SIGKILL of the server running it: a new server
//! on the same data directory resumes it (finished tasks are not redone)
//! and the pyramid equals a reference computed here from the level-0 data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

mod common;

use std::collections::HashSet;

use common::{Vol, reference_next, serve, wait_for};
use neurocube_core::Box3;
use neurocube_core::meta::Dataset;
use serde_json::{Value, json};

fn settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("NEUROCUBE__JOBS__WORKERS", "1"),
        ("NEUROCUBE__JOBS__AUTO_DOWNSAMPLE", "false"),
        ("NEUROCUBE__JOBS__LEASE_SECONDS", "1"),
        ("NEUROCUBE__JOBS__PAUSE_MS", "150"),
    ]
}

async fn job(c: &reqwest::Client, url: &str, id: &str) -> Value {
    c.get(format!("{url}/v1/jobs/{id}?tasks=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_downsample_job_resumes_and_gives_the_reference_pyramid() {
    let dir = tempfile::tempdir().unwrap();
    let c = reqwest::Client::new();
    let ds_json = json!({"voxel_size": [4, 4, 40], "extent": [512, 512, 32], "levels": 4});
    let ds: Dataset = serde_json::from_value(ds_json.clone()).unwrap();
    let server = serve(dir.path(), &settings());
    let url = server.url.clone();
    let r = c
        .put(format!("{url}/v1/datasets/d"))
        .json(&ds_json)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .put(format!("{url}/v1/datasets/d/channels/image"))
        .json(&json!({"type": "image", "dtype": "uint8", "chunk_size": [16, 16, 8]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let b0 = ds.level(0).bounds();
    let level0: Vec<u8> = (0..b0.voxels())
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 13) ^ (i / 512 % 512)) as u8)
        .collect();
    let r = c
        .put(format!("{url}/d/image/raw/0/0,512/0,512/0,32/"))
        .body(level0.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Before downsampling, coarser levels say they are stale.
    let r = c
        .get(format!("{url}/d/image/raw/2/0,128/0,128/0,32/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["X-Neurocube-Level-Stale"], "true");
    let meta: Value = c
        .get(format!("{url}/v1/datasets/d/channels/image"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["level_status"][0]["state"], "current");
    assert_eq!(meta["level_status"][1]["state"], "stale");
    assert_eq!(meta["level_status"][1]["stale_chunks"], 1024);

    let r = c
        .post(format!("{url}/v1/datasets/d/channels/image/downsample"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["total"], 1024 + 256 + 64);

    // Kill the server (SIGKILL) once some but not all of the work is done.
    let before = wait_for(60, || {
        let (c, url, id) = (c.clone(), url.clone(), id.clone());
        async move {
            let j = job(&c, &url, &id).await;
            let done = j["done"].as_u64().unwrap();
            (done > 0).then_some(j)
        }
    })
    .await;
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(server);
    assert_eq!(before["state"], "running", "{before}");
    assert!(before["done"].as_u64().unwrap() < before["total"].as_u64().unwrap());

    // A new server on the same directory resumes the job.
    let server = serve(dir.path(), &settings());
    let url = server.url.clone();
    let after = wait_for(120, || {
        let (c, url, id) = (c.clone(), url.clone(), id.clone());
        async move {
            let j = job(&c, &url, &id).await;
            (j["state"] != "running" && j["state"] != "queued").then_some(j)
        }
    })
    .await;
    assert_eq!(after["state"], "done", "{after}");
    assert_eq!(after["done"], after["total"]);
    assert_eq!(after["eta_seconds"], 0.0);
    // Tasks were done by both processes: the first one's finished tasks were kept.
    let instances: HashSet<String> = after["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["state"], "done");
            t["holder"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(instances.len(), 2, "{instances:?}");
    // The job is listed.
    let list: Value = c
        .get(format!("{url}/v1/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"][0]["id"], id.as_str());

    // Every level equals the reference pyramid.
    let mut fine = Vol {
        b: b0,
        v: level0.iter().map(|&v| u64::from(v)).collect(),
    };
    for l in 1..ds.levels {
        let lb: Box3 = ds.level(l).bounds();
        let want = reference_next(&fine, lb, ds.step(l));
        let r = c
            .get(format!(
                "{url}/d/image/raw/{l}/{},{}/{},{}/{},{}/",
                lb.start[0], lb.end[0], lb.start[1], lb.end[1], lb.start[2], lb.end[2]
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("X-Neurocube-Level-Stale").is_none(),
            "level {l}"
        );
        let got = r.bytes().await.unwrap();
        let want_bytes: Vec<u8> = want.v.iter().map(|&v| v as u8).collect();
        assert!(
            got[..] == want_bytes[..],
            "level {l} differs from the reference"
        );
        fine = want;
    }
    let meta: Value = c
        .get(format!("{url}/v1/datasets/d/channels/image"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for l in 0..4 {
        assert_eq!(meta["level_status"][l]["state"], "current", "{meta}");
    }
    drop(server);
}
