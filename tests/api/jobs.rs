//! Downsampling over HTTP: stale coarser levels say so, jobs are listed,
//! deduplicated, cancelled, and run (on request or automatically).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{TestApp, assert_error, pattern, spawn_with};

/// Dataset `d` 256 x 256 x 16 with 3 levels, channel `image` uint8 in
/// 64 x 64 x 8 chunks, level 0 written with a pattern that is returned.
async fn setup(app: &TestApp) -> Vec<u8> {
    app.dataset("d", [256, 256, 16], 3).await;
    app.channel("d", "image", "image", "uint8", [64, 64, 8])
        .await;
    let data = pattern(256 * 256 * 16, 9);
    let r = app
        .put("/d/image/raw/0/0,256/0,256/0,16/", data.clone())
        .await;
    assert_eq!(r.status(), 201);
    data
}

fn mean2x2(l0: &[u8], x: usize, y: usize, z: usize) -> u8 {
    let at = |x: usize, y: usize| u32::from(l0[(z * 256 + y) * 256 + x]);
    let s =
        at(2 * x, 2 * y) + at(2 * x + 1, 2 * y) + at(2 * x, 2 * y + 1) + at(2 * x + 1, 2 * y + 1);
    ((s + 2) / 4) as u8
}

async fn json(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

#[tokio::test]
async fn stale_levels_say_so_and_a_requested_job_fixes_them() {
    // No workers: the test runs the job itself, so every state is observable.
    let app = spawn_with(|s| s.jobs.workers = 0).await;
    let l0 = setup(&app).await;
    let r = app.get("/d/image/raw/1/0,128/0,128/0,16/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["X-Neurocube-Level-Stale"], "true");
    let r = app.get("/d/image/xy/2/0,64/0,64/3/").await;
    assert_eq!(r.headers()["X-Neurocube-Level-Stale"], "true");
    let r = app.get("/d/image/raw/0/0,16/0,16/0,1/").await;
    assert!(
        r.headers().get("X-Neurocube-Level-Stale").is_none(),
        "level 0 is never stale"
    );
    let meta = json(app.get("/v1/datasets/d/channels/image").await).await;
    let states: Vec<(&str, u64)> = meta["level_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["state"].as_str().unwrap(),
                l["stale_chunks"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, vec![("current", 0), ("stale", 8), ("stale", 2)]);

    let url = "/v1/datasets/d/channels/image/downsample";
    let r = app
        .client
        .post(format!("{}{url}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let first = json(r).await;
    assert_eq!(
        (first["created"].as_bool(), first["state"].as_str()),
        (Some(true), Some("queued"))
    );
    assert_eq!(
        (first["total"].as_u64(), first["unit"].as_str()),
        (Some(10), Some("chunks"))
    );
    assert_eq!(first["params"]["channel"], "image");
    let id = first["id"].as_str().unwrap().to_string();
    // Asking again returns the same job.
    let again = json(
        app.client
            .post(format!("{}{url}", app.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (again["id"].as_str(), again["created"].as_bool()),
        (Some(id.as_str()), Some(false))
    );
    let list = json(app.get("/v1/jobs").await).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(list["jobs"][0]["kind"], "downsample");

    // Cancel it; a new request starts a new job.
    let c = json(app.delete(&format!("/v1/jobs/{id}")).await).await;
    assert_eq!(c["state"], "cancelled");
    assert_eq!(
        json(app.get(&format!("/v1/jobs/{id}")).await).await["state"],
        "cancelled"
    );
    let second = json(
        app.client
            .post(format!("{}{url}", app.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(second["created"], true);
    let id2 = second["id"].as_str().unwrap().to_string();
    assert_ne!(id2, id);
    let done = app.services.jobs.run_to_end(&id2, |_| {}).await.unwrap();
    assert_eq!((done.done, done.total), (10, 10));
    let v = json(app.get(&format!("/v1/jobs/{id2}")).await).await;
    assert_eq!(
        (v["state"].as_str(), v["eta_seconds"].as_f64()),
        (Some("done"), Some(0.0))
    );

    let r = app.get("/d/image/raw/1/0,128/0,128/0,16/").await;
    assert!(r.headers().get("X-Neurocube-Level-Stale").is_none());
    let l1 = r.bytes().await.unwrap();
    for (x, y, z) in [(0, 0, 0), (17, 100, 3), (127, 127, 15), (64, 63, 8)] {
        assert_eq!(
            l1[(z * 128 + y) * 128 + x],
            mean2x2(&l0, x, y, z),
            "({x},{y},{z})"
        );
    }
    let meta = json(app.get("/v1/datasets/d/channels/image").await).await;
    assert!(
        meta["level_status"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"] == "current"),
        "{meta}"
    );
}

#[tokio::test]
async fn unknown_jobs_and_channels_are_404() {
    let app = spawn_with(|s| s.jobs.workers = 0).await;
    assert_error(
        app.get("/v1/jobs/nope").await,
        404,
        "not_found",
        "job 'nope' does not exist",
    )
    .await;
    assert_error(
        app.delete("/v1/jobs/nope").await,
        404,
        "not_found",
        "job 'nope' does not exist",
    )
    .await;
    app.dataset("d", [64, 64, 8], 2).await;
    let r = app
        .client
        .post(format!(
            "{}/v1/datasets/d/channels/nope/downsample",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        404,
        "not_found",
        "channel 'nope' does not exist in dataset 'd'",
    )
    .await;
    let list = json(app.get("/v1/jobs").await).await;
    assert_eq!(list["jobs"], serde_json::json!([]));
    let idx = json(app.get("/v1").await).await;
    let paths: Vec<&str> = idx["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"/v1/jobs")
            && paths.contains(&"/v1/datasets/{ds}/channels/{ch}/downsample"),
        "{paths:?}"
    );
}

#[tokio::test]
async fn writes_are_downsampled_automatically() {
    let app = spawn_with(|s| {
        s.jobs.workers = 2;
        s.jobs.auto_downsample = true;
        s.jobs.auto_delay_ms = 100;
    })
    .await;
    let l0 = setup(&app).await;
    let started = Instant::now();
    let l1 = loop {
        let r = app.get("/d/image/raw/1/0,128/0,128/0,16/").await;
        if r.headers().get("X-Neurocube-Level-Stale").is_none() {
            break r.bytes().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "level 1 still stale after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(l1[(5 * 128 + 77) * 128 + 31], mean2x2(&l0, 31, 77, 5));
    let list = json(app.get("/v1/jobs").await).await;
    assert_eq!(
        list["jobs"][list["jobs"].as_array().unwrap().len() - 1]["kind"],
        "downsample"
    );
}
