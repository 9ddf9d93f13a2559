//! The BOSS API (issue 14) over HTTP, on every backend: a dataset read as
//! a collection with one experiment, its coordinate frame and channels,
//! and Blosc cutouts written with POST and read back with `Accept:
//! application/blosc` exactly. intern itself runs against the same routes
//! in tests/python/test_boss.py.

use neurocube_core::blosc::{self, Blosc};
use serde_json::{Value, json};

use crate::helpers::{assert_error, pattern, spawn_app};

#[tokio::test]
async fn a_dataset_reads_as_a_collection_and_cutouts_round_trip() {
    let app = spawn_app().await;
    let r = app
        .put_json(
            "/v1/datasets/kas",
            &json!({"voxel_size": [6, 6, 30], "extent": [200, 100, 20], "offset": [10, 0, 5]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.channel("kas", "img", "image", "uint16", [64, 64, 8])
        .await;
    let get = |p: &str| {
        let url = format!("{}{p}", app.url);
        let c = app.client.clone();
        async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(get("/v1/collection").await["collections"], json!(["kas"]));
    assert_eq!(
        get("/v1/collection/kas/experiment").await["experiments"],
        json!(["default"])
    );
    let e = get("/v1/collection/kas/experiment/default").await;
    assert_eq!(
        (e["coord_frame"].clone(), e["num_hierarchy_levels"].clone()),
        (json!("kas"), json!(1))
    );
    let f = get("/v1/coord/kas").await;
    assert_eq!(
        (
            f["x_start"].clone(),
            f["x_stop"].clone(),
            f["z_stop"].clone()
        ),
        (json!(10), json!(210), json!(25))
    );
    let c = get("/v1/collection/kas/experiment/default/channel/img").await;
    assert_eq!(
        (c["datatype"].clone(), c["type"].clone()),
        (json!("uint16"), json!("image"))
    );
    assert_eq!(
        get("/v1/collection/kas/experiment/default/channel").await["channels"],
        json!(["img"])
    );

    // POST a Blosc body as intern's create_cutout does, read it back as its get_cutout does.
    let data = pattern(2 * 20 * 7 * 9, 4);
    let body = Blosc::lz4(2).unwrap().compress(&data).unwrap();
    let url = format!("{}/v1/cutout/kas/default/img/0/20:29/3:10/5:25/", app.url);
    let r = app
        .client
        .post(&url)
        .header("Content-Type", "application/blosc")
        .header("Authorization", "Token public")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = app
        .client
        .get(&url)
        .header("Accept", "application/blosc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/blosc");
    let got = blosc::decompress(&r.bytes().await.unwrap(), usize::MAX).unwrap();
    assert_eq!(got, data);
    // The same voxels through neurocube's own URL.
    let raw = app
        .get("/kas/img/raw/0/20,29/3,10/5,25/")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(raw.to_vec(), data);

    // Bad input: another experiment, ranges with commas, a box outside.
    let r = app.get("/v1/collection/kas/experiment/e1").await;
    assert_error(r, 404, "not_found", "one experiment, 'default'").await;
    let r = app
        .get("/v1/cutout/kas/default/img/0/20,29/3:10/5:25/")
        .await;
    assert_error(r, 400, "invalid_request", "x0:x1").await;
    let r = app.get("/v1/cutout/kas/default/img/0/0:9/3:10/5:25/").await;
    assert_eq!(r.status(), 400);
}
