//! Datasets and channels under /v1.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::annotations::setup;
use crate::cave::get_json;
use crate::graph::{create_table, graph_app};
use crate::helpers::{TestApp, assert_error, spawn_app};

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

/// The datastack's synapse and soma tables, as caveclient reads them.
async fn datastack(app: &TestApp) -> (Value, Value) {
    let info = get_json(app, "/info/api/v2/datastack/full/a").await;
    (info["synapse_table"].clone(), info["soma_table"].clone())
}

/// `PATCH` a dataset; the status and the JSON answer.
async fn patch(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app
        .client
        .patch(format!("{}/v1/datasets/a", app.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastack_tables_are_named_with_patch() {
    let app = graph_app(setup().await).await;
    create_table(
        &app,
        "syn2",
        json!({"schema": "synapse", "voxel_resolution": [4, 4, 40]}),
    )
    .await;
    create_table(
        &app,
        "somas",
        json!({"schema": "point", "voxel_resolution": [4, 4, 40]}),
    )
    .await;
    // Found by schema while unset: two synapse tables, the first by name.
    assert_eq!(datastack(&app).await, (json!("syn"), json!("nuclei")));

    let (status, d) = patch(
        &app,
        json!({"synapse_table": "syn2", "soma_table": "somas", "description": "MICrONS-like"}),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["synapse_table"], "syn2");
    assert_eq!(d["soma_table"], "somas");
    assert_eq!(d["description"], "MICrONS-like");
    assert_eq!(d["extent"], json!([256, 256, 32]), "the geometry stays");
    assert_eq!(datastack(&app).await, (json!("syn2"), json!("somas")));
    let got = get_json(&app, "/v1/datasets/a").await;
    assert_eq!(
        (&got["synapse_table"], &got["soma_table"]),
        (&json!("syn2"), &json!("somas"))
    );

    // Refused, and nothing changes.
    for (body, status, error, says) in [
        (
            json!({"synapse_table": "nosuch"}),
            404,
            "unknown_table",
            "nosuch",
        ),
        (
            json!({"synapse_table": "nuclei"}),
            400,
            "invalid_field",
            "has the nucleus schema",
        ),
        (
            json!({"soma_table": "syn"}),
            400,
            "invalid_field",
            "nucleus or point",
        ),
        (
            json!({"soma_table": "Not A Name!"}),
            400,
            "invalid_field",
            "is invalid",
        ),
        (
            json!({"extent": [1, 1, 1]}),
            400,
            "malformed",
            "unknown field `extent`",
        ),
        (
            json!({"synapse_table": 7}),
            400,
            "malformed",
            "expected a string",
        ),
    ] {
        let (got, v) = patch(&app, body.clone()).await;
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!(v["error"], error, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    assert_eq!(datastack(&app).await, (json!("syn2"), json!("somas")));

    // null clears a setting: found by schema again.
    let (status, d) = patch(&app, json!({"synapse_table": null})).await;
    assert_eq!(status, 200, "{d}");
    assert!(d.get("synapse_table").is_none(), "{d}");
    assert_eq!(datastack(&app).await, (json!("syn"), json!("somas")));
    // A named table deleted later: found by schema again.
    let r = app.delete("/v1/datasets/a/tables/somas").await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(datastack(&app).await, (json!("syn"), json!("nuclei")));

    // Re-creating the dataset (as `neurocube demo` and ingest do on every
    // run) changes nothing, whatever description and tables it carries;
    // a new dataset has no tables to name yet.
    let (_, d) = patch(&app, json!({"soma_table": "nuclei"})).await;
    let mut again = d.clone();
    again.as_object_mut().unwrap().remove("level_info");
    for (k, v) in [
        ("description", json!("first words")),
        ("soma_table", Value::Null),
    ] {
        again[k] = v;
    }
    let r = app.put_json("/v1/datasets/a", &again).await;
    assert_eq!(r.status(), 200);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(stored["description"], "MICrONS-like", "{stored}");
    assert_eq!(stored["soma_table"], "nuclei", "{stored}");
    assert_eq!(datastack(&app).await, (json!("syn"), json!("nuclei")));
    let mut fresh = again.clone();
    fresh["name"] = json!("b");
    fresh["soma_table"] = json!("nuclei");
    let r = app.put_json("/v1/datasets/b", &fresh).await;
    assert_error(r, 400, "invalid_request", "PATCH /v1/datasets/b").await;
}
