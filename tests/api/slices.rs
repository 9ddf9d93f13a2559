//! Slices: PNG/JPEG images of planes, the OCP paper URL as written.

use neurocube_core::render::label_color;
use reqwest::StatusCode;

use crate::helpers::{assert_error, decode_png, pattern, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_papers_url_works_as_written() {
    let app = spawn_app().await;
    app.dataset("kasthuri11", [10752, 13312, 100], 1).await;
    app.channel("kasthuri11", "image", "image", "uint8", [128, 128, 16])
        .await;
    // Paint the region of the paper's figure: z 48..52, one value per z.
    let mut data = Vec::new();
    for z in 48..52u8 {
        data.extend(std::iter::repeat_n(z * 4, 500 * 500));
    }
    let r = app
        .put("/kasthuri11/image/raw/0/9000,9500/12000,12500/48,52/", data)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .get("/ocp/ca/kasthuri11/image/xy/0/9000,9500/12000,12500/50/")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    let (info, px) = decode_png(&r.bytes().await.unwrap());
    assert_eq!(
        (info.width, info.height, info.color_type, info.bit_depth),
        (500, 500, png::ColorType::Grayscale, png::BitDepth::Eight)
    );
    assert!(px.iter().all(|&v| v == 200));
    // Without the prefix too.
    let (_, px) = decode_png(
        &app.get("/kasthuri11/image/xy/0/9000,9500/12000,12500/51/")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert!(px.iter().all(|&v| v == 204));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xy_xz_yz_planes_match_the_cutout() {
    let app = spawn_app().await;
    app.dataset("d", [64, 48, 20], 1).await;
    app.channel("d", "c", "image", "uint8", [16, 16, 4]).await;
    let data = pattern(64 * 48 * 20, 1);
    app.put("/d/c/raw/0/0,64/0,48/0,20/", data.clone()).await;
    let at = |x: usize, y: usize, z: usize| data[(z * 48 + y) * 64 + x];

    let (i, px) = decode_png(
        &app.get("/d/c/xy/0/10,30/5,25/7/")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!((i.width, i.height), (20, 20));
    assert_eq!(px[3 * 20 + 4], at(14, 8, 7));

    let (i, px) = decode_png(
        &app.get("/d/c/xz/0/10,30/33/2,18/")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!((i.width, i.height), (20, 16));
    assert_eq!(px[5 * 20 + 9], at(19, 33, 7));

    let (i, px) = decode_png(
        &app.get("/d/c/yz/0/40/0,48/0,20/")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!((i.width, i.height), (48, 20));
    assert_eq!(px[11 * 48 + 17], at(40, 17, 11));

    // Window: lo..hi onto 0..255.
    let (_, px) = decode_png(
        &app.get("/d/c/xy/0/0,64/0,48/3/?window=100,200")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    for (k, &p) in px.iter().enumerate() {
        let v = f64::from(at(k % 64, k / 64, 3));
        assert_eq!(
            p,
            ((v - 100.0) * 255.0 / 100.0).clamp(0.0, 255.0).round() as u8
        );
    }

    let r = app
        .get("/d/c/xy/0/0,64/0,48/3/?format=jpeg&quality=90")
        .await;
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(&r.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_bit_and_segmentation_slices() {
    let app = spawn_app().await;
    app.dataset("d", [32, 32, 4], 1).await;
    app.channel("d", "u16", "image", "uint16", [16, 16, 4])
        .await;
    app.channel("d", "seg", "segmentation", "uint64", [16, 16, 4])
        .await;
    let vals: Vec<u8> = (0..32 * 32u16)
        .flat_map(|v| (v * 60).to_le_bytes())
        .collect();
    app.put("/d/u16/raw/0/0,32/0,32/1,2/", vals).await;
    let (i, px) = decode_png(
        &app.get("/d/u16/xy/0/0,32/0,32/1/")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!(i.bit_depth, png::BitDepth::Sixteen);
    assert_eq!(u16::from_be_bytes([px[2 * 100], px[2 * 100 + 1]]), 6000);

    let mut labels = vec![0u64; 32 * 32];
    labels[5] = 77;
    labels[6] = 1 << 40;
    let bytes: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    app.put("/d/seg/raw/0/0,32/0,32/2,3/", bytes).await;
    let (i, px) = decode_png(
        &app.get("/d/seg/xy/0/0,32/0,32/2/")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!(i.color_type, png::ColorType::Rgba);
    assert_eq!(&px[0..4], &[0, 0, 0, 0]);
    assert_eq!(&px[20..24], &label_color(77));
    assert_eq!(&px[24..28], &label_color(1 << 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_slice_options() {
    let app = spawn_app().await;
    app.dataset("d", [32, 32, 4], 1).await;
    app.channel("d", "c", "image", "uint8", [16, 16, 4]).await;
    assert_error(
        app.get("/d/c/xy/0/0,32/0,32/1/?format=gif").await,
        400,
        "invalid_request",
        "unknown image format 'gif'",
    )
    .await;
    assert_error(
        app.get("/d/c/xy/0/0,32/0,32/1/?window=9,3").await,
        400,
        "invalid_request",
        "malformed window '9,3'",
    )
    .await;
    assert_error(
        app.get("/d/c/xy/0/0,32/0,32/1/?format=jpeg&quality=0")
            .await,
        400,
        "invalid_request",
        "quality '0'",
    )
    .await;
    assert_error(
        app.get("/d/c/xy/0/0,32/0,32/4/").await,
        400,
        "invalid_request",
        "outside level 0",
    )
    .await;
    assert_error(
        app.put("/d/c/xy/0/0,32/0,32/1/", vec![0u8; 1024]).await,
        400,
        "invalid_request",
        "slices are read-only",
    )
    .await;
}

/// The grey values of an xy slice of `d/c` (64×64) at `z`.
async fn xy(app: &crate::helpers::TestApp, z: u64) -> Vec<u8> {
    let r = app.get(&format!("/d/c/xy/0/0,64/0,64/{z}/")).await;
    assert_eq!(r.status(), StatusCode::OK);
    decode_png(&r.bytes().await.unwrap()).1
}

/// Slices read through the tiles' decoded-chunk cache when they fit a
/// quarter of it, else straight from the store: both show every write,
/// full-chunk and partial, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_show_every_write_whether_cached_or_read_from_the_store() {
    for chunk_cache_bytes in [512 << 20, 4096] {
        let app =
            crate::helpers::spawn_with(|s| s.tiles.chunk_cache_bytes = chunk_cache_bytes).await;
        app.dataset("d", [64, 64, 8], 1).await;
        app.channel("d", "c", "image", "uint8", [16, 16, 4]).await;
        let mut data = pattern(64 * 64 * 8, 3);
        app.put("/d/c/raw/0/0,64/0,64/0,8/", data.clone()).await;
        let plane = |data: &[u8], z: usize| data[z * 4096..(z + 1) * 4096].to_vec();
        assert_eq!(
            xy(&app, 2).await,
            plane(&data, 2),
            "cache {chunk_cache_bytes}"
        );
        assert_eq!(xy(&app, 5).await, plane(&data, 5));
        // A partial write (read-patch-CAS of the chunks it crosses), then a
        // write replacing whole chunks.
        let r = app
            .put("/d/c/raw/0/8,40/8,40/1,3/", vec![7u8; 32 * 32 * 2])
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        for z in 1..3 {
            for y in 8..40 {
                data[z * 4096 + y * 64 + 8..z * 4096 + y * 64 + 40].fill(7);
            }
        }
        assert_eq!(
            xy(&app, 2).await,
            plane(&data, 2),
            "cache {chunk_cache_bytes}"
        );
        let r = app
            .put("/d/c/raw/0/0,64/0,64/4,8/", vec![9u8; 64 * 64 * 4])
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(xy(&app, 5).await.iter().all(|&v| v == 9));
        // A tile of the same slab agrees with the slice.
        let r = app.get("/v1/tiles/d/c/xy/256/0/2/0/0.png").await;
        assert_eq!(r.status(), StatusCode::OK);
        let (i, px) = decode_png(&r.bytes().await.unwrap());
        assert_eq!((i.width, i.height), (64, 64));
        assert_eq!(px, plane(&data, 2));
    }
}

/// Label writes wait in memory for the flusher; a slice shows them at
/// once (the decoded-chunk cache does not), and the same after the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segmentation_slice_shows_label_writes_before_and_after_their_flush() {
    let app = crate::helpers::spawn_with(|s| s.objects.flush_interval_ms = 600_000).await;
    app.dataset("o", [64, 64, 8], 1).await;
    app.channel("o", "anno", "segmentation", "uint64", [32, 32, 8])
        .await;
    let r = app
        .put_json(
            "/v1/datasets/o/tables/syn",
            &serde_json::json!({"schema": "ramon_synapse", "voxel_resolution": [4, 4, 40], "segmentation": "anno"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let slice = || async {
        let r = app.get("/o/anno/xy/0/0,64/0,64/3/").await;
        assert_eq!(r.status(), StatusCode::OK);
        decode_png(&r.bytes().await.unwrap()).1
    };
    assert!(slice().await.iter().all(|&v| v == 0), "nothing painted yet");
    let voxels: Vec<[u64; 3]> = (30..34)
        .flat_map(|y| (30..34).map(move |x| [x, y, 3]))
        .collect();
    let r = app
        .post_json(
            "/v1/datasets/o/tables/syn/objects",
            &serde_json::json!({"voxels": voxels}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<serde_json::Value>().await.unwrap()["ids"][0]
        .as_u64()
        .unwrap();
    let check = |px: Vec<u8>| {
        for y in 0..64usize {
            for x in 0..64usize {
                let want = if (30..34).contains(&x) && (30..34).contains(&y) {
                    label_color(id)
                } else {
                    [0, 0, 0, 0]
                };
                assert_eq!(px[(y * 64 + x) * 4..][..4], want, "pixel ({x}, {y})");
            }
        }
    };
    check(slice().await);
    assert!(app.services.objects.flush_once(false).await.unwrap());
    check(slice().await);
}
