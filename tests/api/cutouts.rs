//! Cutouts: write in one format, read back exact voxels in every format.

use neurocube_core::blosc::{self, Blosc};
use reqwest::StatusCode;

use crate::helpers::{assert_error, npy, pattern, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_round_trips_exact_voxels() {
    let app = spawn_app().await;
    app.dataset("d", [300, 200, 40], 1).await;
    app.channel("d", "img", "image", "uint16", [64, 64, 8])
        .await;
    // An unaligned box crossing chunk borders on every axis.
    let (shape, n) = ([33u64, 70, 100], 33 * 70 * 100 * 2);
    let data = pattern(n, 5);
    let url = "/d/img/{}/0/10,110/20,90/3,36/";
    let r = app
        .put(&url.replace("{}", "npy"), npy("<u2", shape, &data))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    let r = app.get(&url.replace("{}", "raw")).await;
    assert_eq!(r.headers()["x-neurocube-dtype"], "uint16");
    assert_eq!(r.headers()["x-neurocube-shape"], "33,70,100");
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);

    let r = app.get(&url.replace("{}", "npy")).await;
    assert_eq!(r.headers()["content-type"], "application/x-npy");
    let body = r.bytes().await.unwrap();
    let (h, off) = neurocube_core::npy::parse(&body).unwrap();
    assert_eq!(h.shape, vec![33, 70, 100]);
    assert_eq!(h.dtype, neurocube_core::DType::Uint16);
    assert_eq!(&body[off..], &data[..]);

    let r = app.get(&url.replace("{}", "blosc")).await;
    assert_eq!(r.headers()["x-neurocube-shape"], "33,70,100");
    let z = r.bytes().await.unwrap();
    assert_eq!(blosc::decompress(&z, usize::MAX).unwrap(), data);

    // A larger box around it: the written voxels in place, zeros elsewhere.
    let all = app
        .get("/d/img/raw/0/0,300/0,200/0,40/")
        .await
        .bytes()
        .await
        .unwrap();
    for (z, y, x) in [(3u64, 20u64, 10u64), (35, 89, 109), (20, 50, 60)] {
        let o = (((z * 200 + y) * 300 + x) * 2) as usize;
        let i = ((((z - 3) * 70 + (y - 20)) * 100 + (x - 10)) * 2) as usize;
        assert_eq!(&all[o..o + 2], &data[i..i + 2]);
    }
    for (z, y, x) in [
        (2u64, 20u64, 10u64),
        (3, 19, 10),
        (3, 20, 9),
        (36, 89, 109),
        (3, 90, 10),
        (3, 20, 110),
    ] {
        let o = (((z * 200 + y) * 300 + x) * 2) as usize;
        assert_eq!(
            &all[o..o + 2],
            &[0, 0],
            "({z},{y},{x}) outside the box must be zero"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blosc_and_raw_writes_and_wide_types() {
    let app = spawn_app().await;
    app.dataset("d", [128, 128, 32], 1).await;
    for (dtype, size) in [
        ("uint8", 1usize),
        ("uint32", 4),
        ("uint64", 8),
        ("float32", 4),
    ] {
        app.channel(
            "d",
            dtype,
            if dtype == "float32" {
                "image"
            } else {
                "segmentation"
            },
            dtype,
            [32, 32, 8],
        )
        .await;
        let n = 50 * 40 * 9 * size;
        let data = pattern(n, size as u8);
        let blosc_body = Blosc::lz4(size).unwrap().compress(&data).unwrap();
        let r = app
            .put(&format!("/d/{dtype}/blosc/0/5,55/7,47/1,10/"), blosc_body)
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{dtype}: {}",
            r.text().await.unwrap()
        );
        let got = app
            .get(&format!("/d/{dtype}/raw/0/5,55/7,47/1,10/"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.to_vec(), data, "{dtype}");
        let raw2 = pattern(n, 99);
        assert_eq!(
            app.put(&format!("/d/{dtype}/raw/0/5,55/7,47/1,10/"), raw2.clone())
                .await
                .status(),
            StatusCode::CREATED
        );
        let got = app
            .get(&format!("/ocp/ca/d/{dtype}/raw/0/5,55/7,47/1,10/"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.to_vec(), raw2, "{dtype} via /ocp/ca");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_chunks_are_not_stored_and_zeros_delete() {
    let app = spawn_app().await;
    app.dataset("z", [128, 128, 16], 1).await;
    app.channel("z", "c", "image", "uint8", [64, 64, 8]).await;
    // All zeros: nothing stored.
    let r = app
        .put("/z/c/raw/0/0,128/0,128/0,16/", vec![0u8; 128 * 128 * 16])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.stored_chunks().await, 0);
    // One voxel in one chunk: one chunk stored.
    app.put("/z/c/raw/0/70,71/5,6/9,10/", vec![200u8]).await;
    assert_eq!(app.stored_chunks().await, 1);
    let v = app
        .get("/z/c/raw/0/70,71/5,6/9,10/")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(v.to_vec(), vec![200]);
    // Zero it again with a partial write: the chunk is deleted.
    app.put("/z/c/raw/0/70,71/5,6/9,10/", vec![0u8]).await;
    assert_eq!(app.stored_chunks().await, 0);
    // Fill everything, then overwrite every chunk fully with zeros.
    app.put("/z/c/raw/0/0,128/0,128/0,16/", vec![3u8; 128 * 128 * 16])
        .await;
    assert_eq!(app.stored_chunks().await, 8);
    app.put("/z/c/raw/0/0,128/0,128/0,16/", vec![0u8; 128 * 128 * 16])
        .await;
    assert_eq!(app.stored_chunks().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_and_offsets() {
    let app = spawn_app().await;
    let r = app
        .put_json(
            "/v1/datasets/o",
            &serde_json::json!({"voxel_size": [4, 4, 4], "extent": [100, 100, 20], "offset": [1000, 2000, 10], "levels": 3, "scaling": "isotropic"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.channel("o", "c", "image", "uint8", [16, 16, 4]).await;
    // Level 0 spans x 1000..1100; level 2 spans x 250..275, z 2..8.
    assert_eq!(
        app.put("/o/c/raw/0/1000,1010/2000,2001/10,11/", vec![7u8; 10])
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_error(
        app.get("/o/c/raw/0/0,10/0,1/0,1/").await,
        400,
        "invalid_request",
        "spans x 1000..1100, y 2000..2100, z 10..30",
    )
    .await;
    assert_eq!(
        app.put("/o/c/raw/2/250,275/500,525/2,8/", vec![1u8; 25 * 25 * 6])
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_error(
        app.get("/o/c/raw/2/250,276/500,525/2,8/").await,
        400,
        "invalid_request",
        "outside level 2",
    )
    .await;
    assert_error(
        app.get("/o/c/raw/3/0,1/0,1/0,1/").await,
        404,
        "not_found",
        "level 3 does not exist: dataset 'o' has levels 0 to 2",
    )
    .await;
    let l0 = app
        .get("/o/c/raw/0/1000,1010/2000,2001/10,11/")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(l0.to_vec(), vec![7u8; 10]);
}
