//! Neuroglancer precomputed over HTTP (issue 14): `info` from the catalog,
//! chunks equal to the cutout API's voxels in each encoding, bad chunk
//! names refused, CORS on every answer. The real clients (CloudVolume,
//! TensorStore) read the same URLs in tests/python/test_precomputed.py.

use neurocube_core::compressed_segmentation as cseg;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, npy, pattern, spawn_app, spawn_with};

/// Dataset `p` (extent 100×70×12 at offset 5,6,7, two levels) with a
/// uint8 image `em` and a uint32 segmentation `seg`, chunks 32×32×4; the
/// box x 5..69 is written, the rest never is.
async fn app() -> (TestApp, Vec<u8>, Vec<u32>) {
    app_with(|_| {}).await
}

async fn app_with(
    tweak: impl FnOnce(&mut neurocube_server::config::Settings),
) -> (TestApp, Vec<u8>, Vec<u32>) {
    let app = spawn_with(tweak).await;
    let r = app
        .put_json(
            "/v1/datasets/p",
            &json!({"voxel_size": [4, 4, 40], "extent": [100, 70, 12], "offset": [5, 6, 7], "levels": 2}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    app.channel("p", "em", "image", "uint8", [32, 32, 4]).await;
    app.channel("p", "seg", "segmentation", "uint32", [32, 32, 4])
        .await;
    let n = 64 * 70 * 12;
    let em = pattern(n, 3);
    let seg: Vec<u32> = (0..n as u32)
        .map(|i| (i % 64) / 9 * 1000 + (i / (64 * 70)) + 1)
        .collect();
    let r = app
        .put("/p/em/npy/0/5,69/6,76/7,19/", npy("|u1", [12, 70, 64], &em))
        .await;
    assert_eq!(r.status(), 201);
    let bytes: Vec<u8> = seg.iter().flat_map(|v| v.to_le_bytes()).collect();
    let r = app
        .put(
            "/p/seg/npy/0/5,69/6,76/7,19/",
            npy("<u4", [12, 70, 64], &bytes),
        )
        .await;
    assert_eq!(r.status(), 201);
    (app, em, seg)
}

/// The JSON answer of a GET.
async fn json_at(app: &TestApp, path: &str) -> Value {
    app.get(path).await.json().await.unwrap()
}

async fn raw(app: &TestApp, ch: &str, level: u8, b: [[u64; 2]; 3]) -> Vec<u8> {
    let url = format!(
        "/p/{ch}/raw/{level}/{},{}/{},{}/{},{}/",
        b[0][0], b[0][1], b[1][0], b[1][1], b[2][0], b[2][1]
    );
    let r = app.get(&url).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn info_describes_every_level_as_a_scale() {
    let (app, _, _) = app().await;
    let info: Value = json_at(&app, "/precomputed/p/seg/info").await;
    assert_eq!(info["type"], "segmentation");
    assert_eq!(info["data_type"], "uint32");
    assert_eq!(info["num_channels"], 1);
    let s = &info["scales"];
    assert_eq!(s.as_array().unwrap().len(), 2);
    assert_eq!(s[0]["key"], "4_4_40");
    assert_eq!(s[0]["size"], json!([100, 70, 12]));
    assert_eq!(s[0]["voxel_offset"], json!([5, 6, 7]));
    assert_eq!(s[0]["chunk_sizes"], json!([[32, 32, 4]]));
    assert_eq!(s[0]["encoding"], "compressed_segmentation");
    assert_eq!(s[0]["compressed_segmentation_block_size"], json!([8, 8, 4]));
    assert_eq!(s[1]["key"], "8_8_40");
    assert_eq!(s[1]["resolution"], json!([8.0, 8.0, 40.0]));
    let em: Value = json_at(&app, "/precomputed/p/em/info").await;
    assert_eq!(em["type"], "image");
    assert_eq!(em["scales"][0]["encoding"], "raw");
    let jpeg: Value = json_at(&app, "/precomputed/p/em/jpeg/info").await;
    assert_eq!(jpeg["scales"][1]["encoding"], "jpeg");
}

#[tokio::test]
async fn chunks_hold_the_cutout_voxels_in_each_encoding() {
    let (app, _, _) = app().await;
    // A full chunk, an edge chunk cut at the level's bound, and one never written.
    for b in [
        [[5, 37], [6, 38], [7, 11]],
        [[101, 105], [70, 76], [15, 19]],
        [[69, 101], [38, 70], [7, 11]],
    ] {
        let name = format!(
            "{}-{}_{}-{}_{}-{}",
            b[0][0], b[0][1], b[1][0], b[1][1], b[2][0], b[2][1]
        );
        let want = raw(&app, "em", 0, b).await;
        let r = app.get(&format!("/precomputed/p/em/4_4_40/{name}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert_eq!(r.bytes().await.unwrap().to_vec(), want, "{name}");
        let want32 = raw(&app, "seg", 0, b).await;
        let r = app.get(&format!("/precomputed/p/seg/4_4_40/{name}")).await;
        assert_eq!(r.status(), 200);
        let size = [0, 1, 2].map(|i| (b[i][1] - b[i][0]) as usize);
        let got = cseg::decode::<u32>(&r.bytes().await.unwrap(), size, [8, 8, 4]).unwrap();
        let want: Vec<u32> = want32
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, want, "{name}");
    }
    // The never-written chunk is zeros, not a 404.
    let zeros = raw(&app, "em", 0, [[69, 101], [38, 70], [7, 11]]).await;
    assert!(zeros.iter().all(|&v| v == 0));
    // Level 1, and a JPEG chunk that decodes to the chunk's x by y·z pixels.
    let want = raw(&app, "em", 1, [[2, 34], [3, 35], [7, 11]]).await;
    let got = app.get("/precomputed/p/em/8_8_40/2-34_3-35_7-11").await;
    assert_eq!(got.bytes().await.unwrap().to_vec(), want);
    let j = app
        .get("/precomputed/p/em/jpeg/4_4_40/5-37_6-38_7-11")
        .await;
    assert_eq!(j.headers()["content-type"], "image/jpeg");
    let img = image::load_from_memory(&j.bytes().await.unwrap())
        .unwrap()
        .to_luma8();
    assert_eq!((img.width(), img.height()), (32, 128));
}

#[tokio::test]
async fn bad_chunk_names_and_scales_are_refused_by_name() {
    let (app, _, _) = app().await;
    for (path, status, code, words) in [
        (
            "seg/4_4_40/5-37_6-38",
            400,
            "invalid_request",
            "x0-x1_y0-y1_z0-z1",
        ),
        (
            "seg/4_4_40/6-38_6-38_7-11",
            400,
            "invalid_request",
            "not a cell of scale 4_4_40's grid: along x",
        ),
        (
            "seg/4_4_40/5-37_6-38_7-12",
            400,
            "invalid_request",
            "along z",
        ),
        (
            "seg/4_4_40/5-37_6-38_107-111",
            400,
            "invalid_request",
            "along z",
        ),
        (
            "seg/9_9_40/5-37_6-38_7-11",
            404,
            "not_found",
            "4_4_40, 8_8_40",
        ),
        (
            "seg/jpeg/info",
            400,
            "invalid_request",
            "jpeg is for uint8 image channels",
        ),
        ("nope/info", 404, "not_found", "channel 'nope'"),
    ] {
        let r = app.get(&format!("/precomputed/p/{path}")).await;
        assert_eq!(r.headers()["access-control-allow-origin"], "*", "{path}");
        assert_error(r, status, code, words).await;
    }
}

/// A little-endian value at `at`.
fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().unwrap()
}

#[tokio::test]
async fn a_synapse_table_reads_as_precomputed_annotations() {
    let (app, _, _) = app().await;
    let r = app
        .put_json(
            "/v1/datasets/p/tables/syn",
            &json!({"schema": "synapse", "voxel_resolution": [4, 4, 40]}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let rows = json!([
        {"pre_pt_position": [10, 12, 8], "post_pt_position": [14, 15, 8], "size": 10,
         "pre_pt_root_id": 7, "post_pt_root_id": 8},
        {"pre_pt_position": [60, 50, 12], "post_pt_position": [61, 52, 12], "size": 2.5,
         "pre_pt_root_id": 7, "post_pt_root_id": 9},
    ]);
    let r = app.post_json("/v1/datasets/p/tables/syn/rows", &rows).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let info: Value = json_at(&app, "/precomputed/p/annotations/syn/info").await;
    assert_eq!(info["annotation_type"], "line");
    assert_eq!(
        info["properties"],
        json!([{"id": "size", "type": "float32"}])
    );
    assert_eq!(info["relationships"][0]["key"], "rel_pre_pt_root_id");
    assert_eq!(info["spatial"][0]["grid_shape"], json!([1, 1, 1]));
    assert_eq!(info["lower_bound"], json!([5.0, 6.0, 7.0]));
    // The one cell: a count, two 28-byte bodies (6 floats and the size), the ids.
    let cell = app
        .get("/precomputed/p/annotations/syn/spatial0/0_0_0")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(cell.len(), 8 + 2 * 28 + 2 * 8);
    assert_eq!(u64::from_le_bytes(le(&cell, 0)), 2);
    let mut got: Vec<(u64, [f32; 7])> = (0..2)
        .map(|i| {
            let id = u64::from_le_bytes(le(&cell, 8 + 56 + 8 * i));
            let v =
                [0, 1, 2, 3, 4, 5, 6].map(|k| f32::from_le_bytes(le(&cell, 8 + 28 * i + 4 * k)));
            (id, v)
        })
        .collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(got[0].1, [10.0, 12.0, 8.0, 14.0, 15.0, 8.0, 10.0]);
    assert_eq!(got[1].1, [60.0, 50.0, 12.0, 61.0, 52.0, 12.0, 2.5]);
    // By id: the body, then each relationship's count and ids.
    let one = app
        .get(&format!(
            "/precomputed/p/annotations/syn/by_id/{}",
            got[1].0
        ))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(one.len(), 28 + 12 + 12);
    assert_eq!(u64::from_le_bytes(le(&one, 32)), 7);
    assert_eq!(u64::from_le_bytes(le(&one, 44)), 9);
    // By segment.
    for (path, n) in [
        ("rel_pre_pt_root_id/7", 2),
        ("rel_post_pt_root_id/9", 1),
        ("rel_post_pt_root_id/5", 0),
    ] {
        let b = app
            .get(&format!("/precomputed/p/annotations/syn/{path}"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(u64::from_le_bytes(le(&b, 0)), n, "{path}");
    }
    let r = app.get("/precomputed/p/annotations/syn/by_id/999").await;
    assert_error(r, 404, "not_found", "999").await;
    let r = app
        .get("/precomputed/p/annotations/syn/spatial0/1_0_0")
        .await;
    assert_error(r, 400, "invalid_request", "outside level 0's 1x1x1 grid").await;
}

#[tokio::test]
async fn chunks_on_the_stored_grid_come_from_the_chunk_cache_and_follow_writes() {
    let app = spawn_app().await;
    let r = app
        .put_json(
            "/v1/datasets/g",
            &json!({"voxel_size": [4, 4, 40], "extent": [80, 64, 8], "levels": 1}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.channel("g", "em", "image", "uint8", [32, 32, 4]).await;
    let first = pattern(80 * 64 * 8, 1);
    let r = app.put("/g/em/raw/0/0,80/0,64/0,8/", first.clone()).await;
    assert_eq!(r.status(), 201);
    let chunk = |name: &'static str| {
        let app = &app;
        async move {
            let r = app.get(&format!("/precomputed/g/em/4_4_40/{name}")).await;
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap().to_vec()
        }
    };
    let raw = |b: &'static str| {
        let app = &app;
        async move {
            app.get(&format!("/g/em/raw/0/{b}/"))
                .await
                .bytes()
                .await
                .unwrap()
                .to_vec()
        }
    };
    // A whole stored chunk, and the edge cell (x 64..80) inside one.
    assert_eq!(chunk("32-64_0-32_4-8").await, raw("32,64/0,32/4,8").await);
    assert_eq!(chunk("64-80_32-64_0-4").await, raw("64,80/32,64/0,4").await);
    // Overwritten: the cached chunk is dropped, the new voxels served.
    let second = pattern(32 * 32 * 4, 9);
    let r = app.put("/g/em/raw/0/32,64/0,32/4,8/", second.clone()).await;
    assert_eq!(r.status(), 201);
    assert_eq!(chunk("32-64_0-32_4-8").await, second);
}

/// A synapse object table bound to `seg`, with one object (id 90,000) by
/// `alice` at the dataset's first voxel; its id.
async fn one_object(app: &TestApp) -> u64 {
    let r = app
        .put_json(
            "/v1/datasets/p/tables/syn",
            &json!({"schema": "ramon_synapse", "voxel_resolution": [4, 4, 40], "segmentation": "seg"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = app
        .post_json(
            "/v1/datasets/p/tables/syn/objects",
            &json!({"id": 90_000, "author": "alice", "voxels": [[5, 6, 7]]}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    v["ids"][0].as_u64().unwrap()
}

#[tokio::test]
async fn segment_properties_list_the_labels_and_name_the_objects() {
    let (app, _, seg) = app().await;
    let info: Value = json_at(&app, "/precomputed/p/seg/info").await;
    assert_eq!(info["segment_properties"], "segment_properties");
    let em: Value = json_at(&app, "/precomputed/p/em/info").await;
    assert!(em.get("segment_properties").is_none(), "{em}");

    // Every label written, ascending, nothing else.
    let mut want: Vec<u64> = seg.iter().map(|&v| u64::from(v)).collect();
    want.sort_unstable();
    want.dedup();
    let ids = |v: &Value| -> Vec<u64> {
        v["inline"]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().parse().unwrap())
            .collect()
    };
    let r = app.get("/precomputed/p/seg/segment_properties/info").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["@type"], "neuroglancer_segment_properties");
    assert_eq!(ids(&v), want);
    let props = v["inline"]["properties"].as_array().unwrap();
    assert_eq!(props[0]["id"], "label");
    assert_eq!(props[0]["values"].as_array().unwrap().len(), want.len());
    assert!(
        props[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l == "")
    );

    // An object: its label, author and tags; the label it replaced at
    // (5, 6, 7) is still elsewhere.
    let id = one_object(&app).await;
    assert_eq!(id, 90_000);
    let v: Value = json_at(&app, "/precomputed/p/seg/segment_properties/info").await;
    let got = ids(&v);
    let mut want2 = want.clone();
    want2.push(id);
    assert_eq!(got, want2);
    let at = got.iter().position(|&i| i == id).unwrap();
    let props = &v["inline"]["properties"];
    assert_eq!(props[0]["values"][at], format!("synapse {id}"));
    assert_eq!(props[1]["id"], "description");
    assert_eq!(props[1]["values"][at], "alice");
    assert_eq!(props[2]["type"], "tags");
    assert_eq!(props[2]["tags"], json!(["synapse", "syn"]));
    assert_eq!(props[2]["values"][at], json!([0, 1]));
    assert_eq!(props[2]["values"][0], json!([]));

    let r = app.get("/precomputed/p/em/segment_properties/info").await;
    assert_error(r, 400, "invalid_request", "'em' is a uint8 image channel").await;
}

#[tokio::test]
async fn a_channel_too_large_to_scan_lists_only_its_objects() {
    // Level 0 of seg is 100 x 70 x 12 x 4 bytes = 336,000: over the limit
    // (the box written is 215,040).
    let (app, _, _) = app_with(|s| s.limits.max_cutout_bytes = 250_000).await;
    let info: Value = json_at(&app, "/precomputed/p/seg/info").await;
    assert!(info.get("segment_properties").is_none(), "{info}");
    let r = app.get("/precomputed/p/seg/segment_properties/info").await;
    assert_error(r, 413, "too_large", "bind an object table to the channel").await;

    let id = one_object(&app).await;
    let info: Value = json_at(&app, "/precomputed/p/seg/info").await;
    assert_eq!(info["segment_properties"], "segment_properties");
    let v: Value = json_at(&app, "/precomputed/p/seg/segment_properties/info").await;
    assert_eq!(v["inline"]["ids"], json!([id.to_string()]));
    assert_eq!(
        v["inline"]["properties"][0]["values"],
        json!([format!("synapse {id}")])
    );
}

/// Ids of every annotation in a cell of a `line` table with one float
/// property (28-byte bodies).
fn cell_ids(cell: &[u8]) -> Vec<u64> {
    let n = u64::from_le_bytes(le(cell, 0)) as usize;
    assert_eq!(cell.len(), 8 + n * 28 + n * 8);
    (0..n)
        .map(|i| u64::from_le_bytes(le(cell, 8 + 28 * n + 8 * i)))
        .collect()
}

/// 20,000 synapses (two spatial levels), with server ids or given sparse
/// ids; every row is in exactly one cell of one level, and level 0 holds
/// a sample of at most the limit.
#[tokio::test]
async fn every_annotation_is_in_exactly_one_cell_with_dense_or_sparse_ids() {
    let (app, _, _) = app().await;
    for (table, sparse) in [("dense", false), ("sparse", true)] {
        let r = app
            .put_json(
                &format!("/v1/datasets/p/tables/{table}"),
                &json!({"schema": "synapse", "voxel_resolution": [4, 4, 40]}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let rows: Vec<Value> = (0..20_000u64)
            .map(|i| {
                let p = [5 + i % 100, 6 + (i / 100) % 70, 7 + (i / 7000) % 12];
                let mut r = json!({"pre_pt_position": p, "post_pt_position": p, "size": i});
                if sparse {
                    // Three ids per row: too thin for stride sampling.
                    r["id"] = json!(1 + i * 3);
                }
                r
            })
            .collect();
        let r = app
            .post_json(&format!("/v1/datasets/p/tables/{table}/rows"), &json!(rows))
            .await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let ids: Vec<u64> = r.json::<Value>().await.unwrap()["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let info: Value = json_at(&app, &format!("/precomputed/p/annotations/{table}/info")).await;
        assert_eq!(info["spatial"].as_array().unwrap().len(), 2, "{info}");
        let get = |path: String| {
            let app = &app;
            async move {
                let r = app.get(&path).await;
                assert_eq!(r.status(), 200, "{path}");
                cell_ids(&r.bytes().await.unwrap())
            }
        };
        let level0 = get(format!("/precomputed/p/annotations/{table}/spatial0/0_0_0")).await;
        // Hash sampling holds about the limit; the spread of dense ids at most it.
        let limit = if sparse { 10_500 } else { 10_000 };
        assert!(
            !level0.is_empty() && level0.len() <= limit,
            "{}",
            level0.len()
        );
        if !sparse {
            // An even spread of the ids: about every other one of the 20,000.
            let mut got = level0.clone();
            got.sort_unstable();
            assert!((9_990..=10_000).contains(&got.len()), "{}", got.len());
            assert!(
                got.windows(2).all(|w| (1..=3).contains(&(w[1] - w[0]))),
                "{:?}",
                &got[..10]
            );
        }
        let mut all = level0;
        for c in 0..8 {
            let key = format!("{}_{}_{}", c & 1, (c >> 1) & 1, c >> 2);
            all.extend(get(format!("/precomputed/p/annotations/{table}/spatial1/{key}")).await);
        }
        all.sort_unstable();
        let mut want = ids.clone();
        want.sort_unstable();
        assert_eq!(all, want, "{table}: every row once");
    }
}
