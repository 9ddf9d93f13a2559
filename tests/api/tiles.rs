//! Tiles: `/v1/tiles/...` and `/catmaid/...`, caching headers, write
//! invalidation, coalesced misses, prefetching, bad input.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{TestApp, assert_error, decode_png, pattern, spawn_app, spawn_with};

const EXTENT: [usize; 3] = [600, 300, 40];

/// Dataset `t`, channel `c` (uint8, chunks 64 x 64 x 8) full of a pattern.
async fn volume(app: &TestApp) -> Vec<u8> {
    app.dataset("t", [600, 300, 40], 1).await;
    app.channel("t", "c", "image", "uint8", [64, 64, 8]).await;
    let data = pattern(EXTENT.iter().product(), 7);
    let r = app.put("/t/c/raw/0/0,600/0,300/0,40/", data.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    data
}

fn at(data: &[u8], x: usize, y: usize, z: usize) -> u8 {
    data[(z * EXTENT[1] + y) * EXTENT[0] + x]
}

async fn png(app: &TestApp, path: &str) -> (u32, u32, Vec<u8>) {
    let r = app.get(path).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    assert_eq!(r.headers()["content-type"], "image/png");
    let (info, px) = decode_png(&r.bytes().await.unwrap());
    (info.width, info.height, px)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_of_every_plane_hold_the_voxels() {
    let app = spawn_app().await;
    let data = volume(&app).await;

    // xy, the bottom-right edge tile of 256: x 512..600, y 256..300.
    let (w, h, px) = png(&app, "/v1/tiles/t/c/xy/256/0/13/1/2.png").await;
    assert_eq!((w, h), (88, 44));
    for y in 0..44 {
        for x in 0..88 {
            assert_eq!(
                px[y * 88 + x],
                at(&data, 512 + x, 256 + y, 13),
                "xy {x},{y}"
            );
        }
    }
    // xz at y = 100: columns x 256..512, rows z 0..40.
    let (w, h, px) = png(&app, "/v1/tiles/t/c/xz/256/0/100/0/1.png").await;
    assert_eq!((w, h), (256, 40));
    for z in 0..40 {
        for x in 0..256 {
            assert_eq!(px[z * 256 + x], at(&data, 256 + x, 100, z), "xz {x},{z}");
        }
    }
    // yz at x = 300: columns y 256..300, rows z 0..40.
    let (w, h, px) = png(&app, "/v1/tiles/t/c/yz/256/0/300/0/1.png").await;
    assert_eq!((w, h), (44, 40));
    for z in 0..40 {
        for y in 0..44 {
            assert_eq!(px[z * 44 + y], at(&data, 300, 256 + y, z), "yz {y},{z}");
        }
    }
    // A 1024 tile covers the whole xy plane; JPEG is a JPEG.
    let (w, h, px) = png(&app, "/v1/tiles/t/c/xy/1024/0/39/0/0.png").await;
    assert_eq!((w, h), (600, 300));
    assert_eq!(px[299 * 600 + 599], at(&data, 599, 299, 39));
    let r = app.get("/v1/tiles/t/c/xy/512/0/0/0/0.jpg").await;
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(&r.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catmaid_urls_serve_the_same_512_pixel_tiles() {
    let app = spawn_app().await;
    let data = volume(&app).await;
    let a = app.get("/catmaid/t/c/xy/21/0_1_0.png").await;
    assert_eq!(a.status(), StatusCode::OK);
    let a = a.bytes().await.unwrap();
    let b = app.get("/v1/tiles/t/c/xy/512/0/21/0/1.png").await;
    assert_eq!(a, b.bytes().await.unwrap());
    let (info, px) = decode_png(&a);
    assert_eq!((info.width, info.height), (88, 300));
    assert_eq!(px[5 * 88 + 3], at(&data, 515, 5, 21));
    assert_error(
        app.get("/catmaid/t/c/xy/21/0_1.png").await,
        400,
        "invalid_request",
        "must look like {row}_{col}_{level}.png",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_cache_control_and_304() {
    let app = spawn_app().await;
    volume(&app).await;
    let url = format!("{}/v1/tiles/t/c/xy/256/0/3/0/0.png", app.url);
    let r = app.client.get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(r.headers()["cache-control"], "public, max-age=30");
    let body = r.bytes().await.unwrap();
    let r = app
        .client
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = app
        .client
        .get(&url)
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_replaces_the_cached_tiles_it_touches() {
    let app = spawn_app().await;
    let data = volume(&app).await;
    let xy = "/v1/tiles/t/c/xy/256/0/13/0/0.png";
    let xz = "/v1/tiles/t/c/xz/256/0/20/0/0.png";
    let old_etag = app.get(xy).await.headers()["etag"].clone();
    png(&app, xz).await;
    // Cached now: a second read is a hit with the same bytes.
    let hits = app.services.tiles.metrics().hits.get();
    assert_eq!(app.get(xy).await.headers()["etag"], old_etag);
    assert_eq!(app.services.tiles.metrics().hits.get(), hits + 1);

    // Paint x 10..20, y 20..30 at z 13 white.
    let r = app
        .put("/t/c/raw/0/10,20/20,30/13,14/", vec![255u8; 100])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = app
        .client
        .get(format!("{}{xy}", app.url))
        .header("If-None-Match", old_etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the old ETag no longer matches");
    let (_, px) = decode_png(&r.bytes().await.unwrap());
    assert_eq!(px[25 * 256 + 15], 255);
    assert_eq!(px[25 * 256 + 25], at(&data, 25, 25, 13));
    // The xz tile through y = 20 crosses the painted box at z = 13.
    let (_, _, px) = png(&app, xz).await;
    assert_eq!(px[13 * 256 + 12], 255);
    assert_eq!(px[12 * 256 + 12], at(&data, 12, 20, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_tile_render_it_once() {
    let app = spawn_with(|s| s.tiles.prefetch = false).await;
    volume(&app).await;
    let url = format!("{}/v1/tiles/t/c/xy/1024/0/17/0/0.png", app.url);
    let gets = (0..8).map(|_| {
        let (c, u) = (app.client.clone(), url.clone());
        async move { c.get(u).send().await.unwrap().bytes().await.unwrap() }
    });
    let bodies = futures::future::join_all(gets).await;
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    let m = app.services.tiles.metrics();
    assert_eq!(m.hits.get() + m.misses.get(), 8);
    // The tile crosses 10 x 5 chunks of one slab: each read and decoded once.
    assert_eq!(m.chunk_misses.get(), 50);
    assert_eq!(m.prefetch_issued.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetcher_renders_the_rest_of_the_slab_ahead() {
    let app = spawn_app().await;
    volume(&app).await;
    // z 8 starts the slab 8..16 (chunks are 8 deep); then the client moves on.
    png(&app, "/v1/tiles/t/c/xy/512/0/8/0/0.png").await;
    app.services.tiles.settle(Duration::from_secs(20)).await;
    let m = app.services.tiles.metrics();
    let misses = m.misses.get();
    for z in 9..16 {
        png(&app, &format!("/v1/tiles/t/c/xy/512/0/{z}/0/0.png")).await;
    }
    assert_eq!(m.misses.get(), misses, "z 9..16 were rendered ahead");
    assert!(m.prefetch_used.get() >= 7, "{}", m.prefetch_used.get());
    assert!(m.prefetch_issued.get() >= 7);
    let text = app.get("/metrics").await.text().await.unwrap();
    for name in [
        "neurocube_tile_hits_total",
        "neurocube_tile_misses_total",
        "neurocube_tile_prefetch_issued_total",
        "neurocube_tile_prefetch_used_total",
        "neurocube_tile_prefetch_wasted_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tile_requests_get_4xx_with_a_message() {
    let app = spawn_app().await;
    volume(&app).await;
    let cases = [
        (
            "/v1/tiles/t/c/xw/256/0/1/0/0.png",
            400,
            "invalid_request",
            "unknown plane 'xw'",
        ),
        (
            "/v1/tiles/t/c/xy/300/0/1/0/0.png",
            400,
            "invalid_request",
            "tile size 300 is not offered",
        ),
        (
            "/v1/tiles/t/c/xy/256/0/1/0/0.gif",
            400,
            "invalid_request",
            "unknown tile format 'gif'",
        ),
        (
            "/v1/tiles/t/c/xy/256/0/1/0/0",
            400,
            "invalid_request",
            "needs an extension",
        ),
        (
            "/v1/tiles/t/c/xy/256/0/1/0/x.png",
            400,
            "invalid_request",
            "tile column 'x'",
        ),
        (
            "/v1/tiles/t/c/xy/256/0/40/0/0.png",
            404,
            "not_found",
            "slice z=40 is outside level 0",
        ),
        (
            "/v1/tiles/t/c/xy/256/0/1/2/0.png",
            404,
            "not_found",
            "it has 2 rows and 3 columns",
        ),
        (
            "/v1/tiles/t/c/xy/256/0/1/0/3.png",
            404,
            "not_found",
            "tile row 0, column 3 is outside",
        ),
        (
            "/v1/tiles/t/c/xz/256/0/300/0/0.png",
            404,
            "not_found",
            "slice y=300",
        ),
        (
            "/v1/tiles/t/c/xy/256/1/1/0/0.png",
            404,
            "not_found",
            "level 1 does not exist",
        ),
        (
            "/v1/tiles/t/nope/xy/256/0/1/0/0.png",
            404,
            "not_found",
            "nope",
        ),
        (
            "/catmaid/t/c/xy/1/0_9_0.png",
            404,
            "not_found",
            "column 9 is outside",
        ),
    ];
    for (url, status, code, msg) in cases {
        assert_error(app.get(url).await, status, code, msg).await;
    }
}
