//! Bad input gets a clear 4xx and leaves stored data as it was.

use neurocube_core::blosc::Blosc;

use crate::helpers::{TestApp, assert_error, npy, pattern, spawn_app, spawn_with};

async fn setup() -> (TestApp, Vec<u8>) {
    let app = spawn_app().await;
    app.dataset("d", [100, 100, 20], 2).await;
    app.channel("d", "c", "image", "uint16", [32, 32, 8]).await;
    let before = pattern(100 * 100 * 20 * 2, 3);
    app.put("/d/c/raw/0/0,100/0,100/0,20/", before.clone())
        .await;
    (app, before)
}

async fn unchanged(app: &TestApp, before: &[u8]) {
    let now = app
        .get("/d/c/raw/0/0,100/0,100/0,20/")
        .await
        .bytes()
        .await
        .unwrap();
    assert!(
        now.as_ref() == before,
        "stored voxels changed after a refused request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_urls() {
    let (app, before) = setup().await;
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            "/d/c/npy/0/10,5/0,10/0,10/",
            400,
            "invalid_request",
            "empty or inverted x range 10,5",
        ),
        (
            "/d/c/npy/0/0,10/7,7/0,10/",
            400,
            "invalid_request",
            "empty or inverted y range 7,7",
        ),
        (
            "/d/c/npy/0/0:10/0,10/0,10/",
            400,
            "invalid_request",
            "malformed x range '0:10'",
        ),
        (
            "/d/c/npy/0/0,10/0,10/a,b/",
            400,
            "invalid_request",
            "malformed z range 'a,b'",
        ),
        (
            "/d/c/npy/zero/0,10/0,10/0,10/",
            400,
            "invalid_request",
            "level 'zero' is not a level number",
        ),
        (
            "/d/c/npy/2/0,10/0,10/0,10/",
            404,
            "not_found",
            "level 2 does not exist: dataset 'd' has levels 0 to 1",
        ),
        (
            "/d/c/hdf5/0/0,10/0,10/0,10/",
            400,
            "invalid_request",
            "unknown format 'hdf5'",
        ),
        (
            "/d/c/npy/0/0,101/0,10/0,10/",
            400,
            "invalid_request",
            "outside level 0 of dataset 'd', which spans x 0..100, y 0..100, z 0..20",
        ),
        (
            "/x/c/npy/0/0,10/0,10/0,10/",
            404,
            "not_found",
            "dataset 'x' does not exist",
        ),
        (
            "/d/x/npy/0/0,10/0,10/0,10/",
            404,
            "not_found",
            "channel 'x' does not exist in dataset 'd'",
        ),
    ];
    for (url, status, code, msg) in cases {
        assert_error(app.get(url).await, *status, code, msg).await;
        assert_error(app.put(url, vec![0u8; 2000]).await, *status, code, msg).await;
    }
    unchanged(&app, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_do_not_match_the_box() {
    let (app, before) = setup().await;
    let url = |f: &str| format!("/d/c/{f}/0/10,30/10,30/2,6/");
    let n = 20 * 20 * 4 * 2;
    let good = pattern(n, 200);
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (
            url("raw"),
            good[..n - 2].to_vec(),
            "raw body is 3198 bytes but box x 10..30, y 10..30, z 2..6 of uint16 (z,y,x shape [4, 20, 20]) needs exactly 3200",
        ),
        (
            url("raw"),
            [good.clone(), vec![0, 0]].concat(),
            "raw body is 3202 bytes",
        ),
        (
            url("npy"),
            npy("|u1", [4, 20, 20], &good[..n / 2]),
            "npy array is uint8 but channel 'c' is uint16",
        ),
        (
            url("npy"),
            npy("<u2", [4, 20, 21], &good),
            "npy array has shape [4, 20, 21] but box x 10..30, y 10..30, z 2..6 needs (z, y, x) = [4, 20, 20]",
        ),
        (
            url("npy"),
            npy("<u2", [4, 20, 20], &good[..n - 10]),
            "the file is truncated or padded",
        ),
        (
            url("npy"),
            b"PK\x03\x04not an npy".to_vec(),
            "not an npy file",
        ),
        (
            url("npy"),
            npy("<i2", [4, 20, 20], &good),
            "npy dtype '<i2' is not supported",
        ),
        (
            url("blosc"),
            b"definitely not blosc".to_vec(),
            "not a valid Blosc",
        ),
        (
            url("blosc"),
            Blosc::lz4(2).unwrap().compress(&good[..n - 2]).unwrap(),
            "Blosc body decompresses to 3198 bytes",
        ),
    ];
    for (u, body, msg) in cases {
        assert_error(app.put(&u, body).await, 400, "invalid_request", msg).await;
    }
    // A valid frame with a damaged payload.
    let mut z = Blosc::lz4(2).unwrap().compress(&pattern(n, 1)).unwrap();
    let len = z.len();
    for b in &mut z[len / 2..] {
        *b = 0xAA;
    }
    let r = app.put(&url("blosc"), z).await;
    assert_eq!(r.status().as_u16(), 400);
    unchanged(&app, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutouts_over_the_size_limit_are_413() {
    let app = spawn_with(|s| s.limits.max_cutout_bytes = 100_000).await;
    app.dataset("d", [1000, 1000, 10], 1).await;
    app.channel("d", "c", "image", "uint8", [64, 64, 8]).await;
    assert_error(
        app.get("/d/c/npy/0/0,1000/0,1000/0,1/").await,
        413,
        "too_large",
        "the cutout is 1000000 bytes, over the limit of 100000 bytes (server setting limits.max_cutout_bytes)",
    )
    .await;
    assert_error(
        app.put("/d/c/raw/0/0,1000/0,1000/0,1/", vec![1u8; 1_000_000])
            .await,
        413,
        "too_large",
        "limit of 100000 bytes",
    )
    .await;
    // Under the limit but with an oversized body: refused from Content-Length.
    assert_error(
        app.put("/d/c/raw/0/0,100/0,100/0,1/", vec![1u8; 300_000])
            .await,
        413,
        "too_large",
        "request body is 300000 bytes",
    )
    .await;
    assert_eq!(app.stored_chunks().await, 0);
}
