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
