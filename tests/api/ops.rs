//! Health, metrics, the API index and unknown routes.

use serde_json::Value;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_index_and_404() {
    let app = spawn_app().await;
    let h: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"], crate::helpers::backend());
    let idx: Value = app.get("/v1").await.json().await.unwrap();
    assert!(idx["endpoints"].as_array().unwrap().len() > 5);
    assert_error(
        app.get("/no/such/thing").await,
        404,
        "not_found",
        "no route for GET /no/such/thing",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_bytes_and_chunks() {
    let app = spawn_app().await;
    app.dataset("m", [256, 256, 16], 1).await;
    app.channel("m", "c", "image", "uint8", [128, 128, 16])
        .await;
    app.put("/m/c/raw/0/0,256/0,256/0,16/", vec![1u8; 256 * 256 * 16])
        .await;
    app.get("/m/c/raw/0/0,256/0,256/0,16/")
        .await
        .bytes()
        .await
        .unwrap();
    let text = app.get("/metrics").await.text().await.unwrap();
    let line = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(line("neurocube_chunk_writes_total"), 4.0);
    assert_eq!(line("neurocube_chunk_reads_total"), 4.0);
    assert!(line("neurocube_http_bytes_out_total") >= (256 * 256 * 16) as f64);
    assert!(line("neurocube_http_bytes_in_total") >= (256 * 256 * 16) as f64);
    assert!(text.contains(r#"neurocube_http_requests_total{method="PUT",route="/{ds}/{ch}/{fmt}/{level}/{a}/{b}/{c}",status="201"} 1"#), "{text}");
    assert!(text.contains("neurocube_store_seconds_bucket{op=\"get_many\""));
    assert!(text.contains("neurocube_http_request_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_reported_and_requests_carry_ids() {
    let app = spawn_app().await;
    let w: Value = app.get("/v1/workers").await.json().await.unwrap();
    let names: Vec<&str> = w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    for want in [
        "jobs/w0",
        "jobs/w1",
        "auto-downsample",
        "tile-prefetch/0",
        "purge",
        "version-retirer",
        "label-flusher",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let prefetch = w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "tile-prefetch/0")
        .unwrap();
    assert_eq!(prefetch["queue_depth"], 0);
    assert!(prefetch["last_error"].is_null());
    let h: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(h["workers"].as_array().unwrap().len(), names.len());

    // A sane client id is echoed; otherwise the server makes one.
    let r = app
        .client
        .get(format!("{}/health", app.url))
        .header("X-Request-Id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let r = app
        .client
        .get(format!("{}/health", app.url))
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 16, "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_carry_the_kind_and_its_fields() {
    let app = spawn_app().await;
    app.dataset("e", [100, 100, 10], 2).await;
    app.channel("e", "c", "image", "uint8", [64, 64, 8]).await;
    let v: Value = app
        .get("/e/c/raw/0/0,101/0,10/0,1/")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], "invalid_request");
    assert_eq!(v["error"], "box_outside_level");
    assert_eq!(v["dataset"], "e");
    assert_eq!(v["level"], 0);
    assert_eq!(v["box"], serde_json::json!([[0, 0, 0], [101, 10, 1]]));
    assert_eq!(v["bounds"], serde_json::json!([[0, 0, 0], [100, 100, 10]]));
    let v: Value = app
        .get("/e/c/raw/5/0,1/0,1/0,1/")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["error"].as_str(), v["levels"].as_u64()),
        (Some("unknown_level"), Some(2))
    );
    // A name that cannot exist is refused at the edge, before any lookup.
    let r = app.get("/v1/datasets/no.such").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"].as_str(), v["field"].as_str()),
        (Some("invalid_field"), Some("dataset"))
    );
    // Unknown query parameters are named, not ignored.
    let v: Value = app
        .delete("/v1/datasets/e?recursve=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["error"].as_str(), v["part"].as_str()),
        (Some("malformed"), Some("query"))
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `recursve`"),
        "{v}"
    );
    // A made-up method on a known path is a 405, and counts as one metric series.
    for m in ["FOO", "BAR", "BAZ"] {
        let r = app
            .client
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                format!("{}/v1/datasets", app.url),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !text.contains("FOO") && !text.contains("BAZ"),
        "made-up methods make no metric series"
    );
    assert!(text.contains(r#"method="other""#), "{text}");
}
