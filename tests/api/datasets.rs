//! Datasets and channels under /v1.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_list_and_delete() {
    let app = spawn_app().await;
    let body = json!({"voxel_size": [3, 3, 30], "extent": [1000, 800, 100], "offset": [0, 0, 5], "levels": 3, "description": "test"});
    let r = app.put_json("/v1/datasets/kasthuri11", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // The same PUT again is a no-op; a different one is a conflict.
    assert_eq!(
        app.put_json("/v1/datasets/kasthuri11", &body)
            .await
            .status(),
        StatusCode::OK
    );
    let other = json!({"voxel_size": [3, 3, 30], "extent": [5, 5, 5]});
    assert_error(
        app.put_json("/v1/datasets/kasthuri11", &other).await,
        409,
        "conflict",
        "already exists with different metadata",
    )
    .await;

    let d: Value = app
        .get("/v1/datasets/kasthuri11")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["name"], "kasthuri11");
    assert_eq!(d["extent"], json!([1000, 800, 100]));
    assert_eq!(d["scaling"], "anisotropic");
    assert_eq!(d["level_info"][2]["extent"], json!([250, 200, 100]));
    assert_eq!(d["level_info"][2]["voxel_size"], json!([12.0, 12.0, 30.0]));

    let r = app
        .put_json(
            "/v1/datasets/kasthuri11/channels/image",
            &json!({"type": "image", "dtype": "uint8"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["chunk_size"], json!([128, 128, 16]));
    assert_eq!(c["compression"], "blosc-lz4");
    app.channel("kasthuri11", "seg", "segmentation", "uint64", [64, 64, 8])
        .await;

    let list: Value = app
        .get("/v1/datasets/kasthuri11/channels")
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["image", "seg"]);
    let all: Value = app.get("/v1/datasets").await.json().await.unwrap();
    assert_eq!(all["datasets"].as_array().unwrap().len(), 1);

    assert_error(
        app.delete("/v1/datasets/kasthuri11").await,
        409,
        "conflict",
        "still has channels (image, seg)",
    )
    .await;
    assert_eq!(
        app.delete("/v1/datasets/kasthuri11/channels/seg")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        app.get("/v1/datasets/kasthuri11/channels/seg").await,
        404,
        "not_found",
        "channel 'seg' does not exist",
    )
    .await;
    assert_eq!(
        app.delete("/v1/datasets/kasthuri11?recursive=true")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        app.get("/v1/datasets/kasthuri11").await,
        404,
        "not_found",
        "dataset 'kasthuri11' does not exist",
    )
    .await;
    assert_error(
        app.get("/v1/datasets/kasthuri11/channels/image").await,
        404,
        "not_found",
        "dataset 'kasthuri11' does not exist",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_channel_starts_empty() {
    let app = spawn_app().await;
    app.dataset("d", [128, 128, 16], 1).await;
    app.channel("d", "c", "image", "uint8", [64, 64, 8]).await;
    let r = app
        .put("/d/c/raw/0/0,128/0,128/0,16/", vec![9u8; 128 * 128 * 16])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        app.delete("/v1/datasets/d/channels/c").await.status(),
        StatusCode::NO_CONTENT
    );
    app.channel("d", "c", "image", "uint8", [64, 64, 8]).await;
    let got = app
        .get("/d/c/raw/0/0,128/0,128/0,16/")
        .await
        .bytes()
        .await
        .unwrap();
    assert!(got.iter().all(|&v| v == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_metadata_are_validated() {
    let app = spawn_app().await;
    let ok = json!({"voxel_size": [4, 4, 40], "extent": [10, 10, 10]});
    for reserved in ["v1", "ocp", "metrics", "health", "viewer", "catmaid"] {
        let r = app.put_json(&format!("/v1/datasets/{reserved}"), &ok).await;
        assert_error(r, 400, "invalid_request", "is reserved").await;
    }
    for bad in ["a.b", "_x", "x%20y", "a%2Fb", "a%2F..%2Fb"] {
        let r = app.put_json(&format!("/v1/datasets/{bad}"), &ok).await;
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }
    assert_error(
        app.put_json(
            "/v1/datasets/d",
            &json!({"voxel_size": [4, 4, 0], "extent": [10, 10, 10]}),
        )
        .await,
        400,
        "invalid_request",
        "voxel_size",
    )
    .await;
    assert_error(
        app.put_json("/v1/datasets/d", &json!({"voxel_size": [4, 4, 4]}))
            .await,
        400,
        "invalid_request",
        "missing field `extent`",
    )
    .await;
    assert_error(
        app.put("/v1/datasets/d", "{not json").await,
        400,
        "invalid_request",
        "invalid dataset JSON",
    )
    .await;
    assert_error(
        app.put_json(
            "/v1/datasets/d",
            &json!({"name": "e", "voxel_size": [4, 4, 4], "extent": [1, 1, 1]}),
        )
        .await,
        400,
        "invalid_request",
        "differs from 'd'",
    )
    .await;
    assert_eq!(
        app.put_json("/v1/datasets/d", &ok).await.status(),
        StatusCode::CREATED
    );
    assert_error(
        app.put_json(
            "/v1/datasets/d/channels/c",
            &json!({"type": "segmentation", "dtype": "float32"}),
        )
        .await,
        400,
        "invalid_request",
        "integer dtype",
    )
    .await;
    assert_error(
        app.put_json(
            "/v1/datasets/d/channels/c",
            &json!({"type": "image", "dtype": "int7"}),
        )
        .await,
        400,
        "invalid_request",
        "unknown variant `int7`",
    )
    .await;
    assert_error(
        app.put_json(
            "/v1/datasets/nope/channels/c",
            &json!({"type": "image", "dtype": "uint8"}),
        )
        .await,
        404,
        "not_found",
        "dataset 'nope' does not exist",
    )
    .await;
}
