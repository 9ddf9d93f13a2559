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

/// The chunk stream: a box's stored chunks as they are, each with its grid
/// index; decoding and cropping them gives exactly the raw cutout, chunks
/// never written are not sent, and the trailer counts the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_streams_hold_the_stored_chunks_of_a_box() {
    use neurocube_core::chunkstream;
    let app = spawn_app().await;
    app.dataset("d", [300, 200, 40], 1).await;
    app.channel("d", "img", "image", "uint16", [64, 64, 8])
        .await;
    let data = pattern(33 * 70 * 100 * 2, 7);
    let r = app
        .put(
            "/d/img/npy/0/10,110/20,90/3,36/",
            npy("<u2", [33, 70, 100], &data),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Unaligned, and larger than what was written (never-written chunks).
    let (b0, b1) = ([5u64, 0, 0], [250u64, 150, 40]);
    let url = format!(
        "/d/img/chunks/0/{},{}/{},{}/{},{}/",
        b0[0], b1[0], b0[1], b1[1], b0[2], b1[2]
    );
    let r = app.get(&url).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], chunkstream::CONTENT_TYPE);
    assert_eq!(r.headers()["x-neurocube-chunk-size"], "64,64,8");
    assert_eq!(r.headers()["x-neurocube-dtype"], "uint16");
    let body = r.bytes().await.unwrap();
    let s = chunkstream::decode(&body).unwrap();
    let head: serde_json::Value = serde_json::from_str(&s.header).unwrap();
    assert_eq!(head["version"], 1);
    assert_eq!(head["chunk_size"], serde_json::json!([64, 64, 8]));
    assert_eq!(
        head["box"],
        serde_json::json!([[5, 250], [0, 150], [0, 40]])
    );
    // Written voxels span x 10..110, y 20..90, z 3..36: chunks x 0-1, y 0-1, z 0-4.
    let mut idx: Vec<[u32; 3]> = s.records.iter().map(|(i, _)| *i).collect();
    idx.sort_unstable();
    let mut want = Vec::new();
    for x in 0..2 {
        for y in 0..2 {
            for z in 0..5 {
                want.push([x, y, z]);
            }
        }
    }
    want.sort_unstable();
    assert_eq!(idx, want, "only stored chunks, each once");
    // Decode, crop into the box, compare with the raw cutout.
    let shape = [b1[0] - b0[0], b1[1] - b0[1], b1[2] - b0[2]];
    let mut out = vec![0u8; (shape[0] * shape[1] * shape[2] * 2) as usize];
    for ([cx, cy, cz], frame) in &s.records {
        let chunk = blosc::decompress(frame, usize::MAX).unwrap();
        assert_eq!(chunk.len(), 64 * 64 * 8 * 2);
        for z in 0..8u64 {
            for y in 0..64u64 {
                for x in 0..64u64 {
                    let g = [
                        u64::from(*cx) * 64 + x,
                        u64::from(*cy) * 64 + y,
                        u64::from(*cz) * 8 + z,
                    ];
                    if (0..3).all(|a| g[a] >= b0[a] && g[a] < b1[a]) {
                        let o = ((((g[2] - b0[2]) * shape[1] + (g[1] - b0[1])) * shape[0]
                            + (g[0] - b0[0]))
                            * 2) as usize;
                        let i = (((z * 64 + y) * 64 + x) * 2) as usize;
                        out[o..o + 2].copy_from_slice(&chunk[i..i + 2]);
                    }
                }
            }
        }
    }
    let raw = app
        .get(&url.replace("chunks", "raw"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(
        out == raw.to_vec(),
        "decoded chunks differ from the raw cutout"
    );
    // A box with nothing stored: header and an empty trailer.
    let empty = app
        .get("/d/img/chunks/0/200,300/150,200/0,8/")
        .await
        .bytes()
        .await
        .unwrap();
    assert!(chunkstream::decode(&empty).unwrap().records.is_empty());
    // Read-only, and boxes are checked as for cutouts.
    assert_error(
        app.put("/d/img/chunks/0/0,64/0,64/0,8/", vec![0u8; 10])
            .await,
        400,
        "invalid_request",
        "chunk streams are read-only",
    )
    .await;
    assert_error(
        app.get("/d/img/chunks/0/0,301/0,64/0,8/").await,
        400,
        "invalid_request",
        "outside",
    )
    .await;
}
