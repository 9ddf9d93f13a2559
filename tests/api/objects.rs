//! Annotation objects (issue 11): RAMON objects whose voxels are labelled
//! in an annotation channel through the NeuroBlaze path (logged, pending in
//! memory, flushed chunk by chunk). Rows and voxels round-trip with every
//! conflict option; reads see pending writes; a chunk touched by 1,000
//! small writes ends up equal to the same writes applied one by one, in one
//! chunk write; bad input changes nothing.

use neurocube_server::Settings;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, npy, spawn_with};

/// Flushes only when asked (or when a cutout write needs it).
pub(crate) fn slow_flush(s: &mut Settings) {
    s.objects.flush_interval_ms = 600_000;
}

const EXTENT: [u64; 3] = [256, 256, 32];

pub(crate) async fn setup(app: &TestApp) {
    app.dataset("o", EXTENT, 2).await;
    app.channel("o", "anno", "segmentation", "uint64", [64, 64, 16])
        .await;
    let r = app
        .put_json(
            "/v1/datasets/o/tables/syn",
            &json!({"schema": "ramon_synapse", "voxel_resolution": [4, 4, 40], "segmentation": "anno"}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

async fn create(app: &TestApp, body: &Value, conflict: &str) -> reqwest::Response {
    app.post_json(
        &format!("/v1/datasets/o/tables/syn/objects?conflict={conflict}"),
        body,
    )
    .await
}

async fn create_one(app: &TestApp, body: Value) -> u64 {
    let r = create(app, &body, "overwrite").await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let v: Value = r.json().await.unwrap();
    v["ids"][0].as_u64().unwrap()
}

fn box_voxels(start: [u64; 3], end: [u64; 3]) -> Vec<[u64; 3]> {
    let mut v = Vec::new();
    for z in start[2]..end[2] {
        for y in start[1]..end[1] {
            for x in start[0]..end[0] {
                v.push([x, y, z]);
            }
        }
    }
    v
}

/// uint64 labels of a box of the channel, x fastest.
async fn labels(app: &TestApp, ch: &str, start: [u64; 3], end: [u64; 3]) -> Vec<u64> {
    let r = app
        .get(&format!(
            "/o/{ch}/raw/0/{},{}/{},{}/{},{}/",
            start[0], end[0], start[1], end[1], start[2], end[2]
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes()
        .await
        .unwrap()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub(crate) async fn ids_in(app: &TestApp, start: [u64; 3], end: [u64; 3]) -> Vec<u64> {
    let r = app
        .get(&format!(
            "/o/anno/ids/0/{},{}/{},{}/{},{}/",
            start[0], end[0], start[1], end[1], start[2], end[2]
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    serde_json::from_value(v["ids"].clone()).unwrap()
}

pub(crate) async fn voxels_of(app: &TestApp, id: u64) -> Vec<[u64; 3]> {
    let r = app
        .get(&format!("/v1/datasets/o/tables/syn/objects/{id}/voxels"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    serde_json::from_value(v["voxels"].clone()).unwrap()
}

pub(crate) async fn row_count(app: &TestApp) -> usize {
    app.query(
        "/v1/datasets/o/tables/syn/query",
        &json!({"select_columns": ["id"], "timestamp": 4_000_000_000u64}),
    )
    .await
    .len()
}

fn sorted(mut v: Vec<[u64; 3]>) -> Vec<[u64; 3]> {
    v.sort_by_key(|p| [p[2], p[1], p[0]]);
    v
}

#[tokio::test]
async fn objects_round_trip_with_their_metadata_and_every_conflict_option() {
    let app = spawn_with(slow_flush).await;
    setup(&app).await;
    let a_voxels = box_voxels([0, 0, 0], [4, 4, 2]);
    let a = create_one(
        &app,
        json!({
            "author": "ann", "confidence": 0.5, "status": 1, "kvpairs": "{\"k\": \"v\"}",
            "weight": 2.0, "synapse_type": 3, "presegment": 11, "postsegment": 12,
            "centroid_position": [2, 2, 1], "voxels": a_voxels,
        }),
    )
    .await;
    let r = app
        .get(&format!("/v1/datasets/o/tables/syn/objects/{a}"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let o: Value = r.json().await.unwrap();
    for (k, want) in [
        ("author", json!("ann")),
        ("confidence", json!(0.5)),
        ("status", json!(1)),
        ("kvpairs", json!("{\"k\": \"v\"}")),
        ("weight", json!(2.0)),
        ("synapse_type", json!(3)),
        ("presegment", json!(11)),
        ("postsegment", json!(12)),
        ("centroid_position", json!([2, 2, 1])),
        ("valid", json!(true)),
        ("voxel_count", json!(32)),
        (
            "bounding_box",
            json!({"start": [0, 0, 0], "end": [4, 4, 2]}),
        ),
    ] {
        assert_eq!(o[k], want, "{k} of {o}");
    }

    // overwrite (the default) takes A's voxels at x 2..4 of row y=0, z=0.
    let b = create_one(&app, json!({"voxels": box_voxels([2, 0, 0], [6, 1, 1])})).await;
    // preserve takes only the free voxels.
    let r = create(
        &app,
        &json!({"voxels": box_voxels([0, 0, 0], [8, 1, 1])}),
        "preserve",
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let c = r.json::<Value>().await.unwrap()["ids"][0].as_u64().unwrap();
    // exception refuses the whole object if any voxel is another's.
    let before = row_count(&app).await;
    let r = create(
        &app,
        &json!({"voxels": [[100, 100, 10], [0, 1, 0]]}),
        "exception",
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "label_conflict", "{e}");
    assert_eq!(e["other"], a, "{e}");
    assert_eq!(e["voxel"], json!([0, 1, 0]), "{e}");
    assert_eq!(e["count"], 1, "{e}");
    assert_eq!(row_count(&app).await, before, "a refused object left a row");
    assert_eq!(
        labels(&app, "anno", [100, 100, 10], [101, 101, 11]).await,
        [0]
    );
    // exception with free voxels goes through.
    let d = create_one(&app, json!({"voxels": [[100, 100, 10]]})).await;
    let r = app
        .put_json(
            &format!("/v1/datasets/o/tables/syn/objects/{d}/voxels?conflict=exception"),
            &json!({"voxels": [[101, 100, 10], [100, 100, 10]]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["voxels_written"], 2);

    // The channel holds exactly what the options say.
    let mut want = vec![0u64; 8 * 4 * 2];
    for v in &a_voxels {
        want[(v[2] * 4 * 8 + v[1] * 8 + v[0]) as usize] = a;
    }
    want[2..6].fill(b);
    want[6..8].fill(c);
    assert_eq!(labels(&app, "anno", [0, 0, 0], [8, 4, 2]).await, want);
    assert_eq!(
        voxels_of(&app, c).await,
        vec![[6, 0, 0], [7, 0, 0]],
        "preserve took only the free voxels"
    );
    assert_eq!(
        ids_in(&app, [0, 0, 0], [256, 256, 32]).await,
        vec![a, b, c, d]
    );
    assert_eq!(ids_in(&app, [0, 0, 1], [8, 8, 2]).await, vec![a]);

    // A dense npy mask adds voxels to A; a mask holding another label is refused.
    let mut mask = vec![0u8; 2 * 2 * 8];
    for i in 0..4 {
        mask[i * 8..i * 8 + 8].copy_from_slice(&a.to_le_bytes());
    }
    let r = app
        .client
        .put(format!(
            "{}/v1/datasets/o/tables/syn/objects/{a}/voxels?x=10,12&y=10,12&z=5,6",
            app.url
        ))
        .header("content-type", "application/x-npy")
        .body(npy("<u8", [1, 2, 2], &mask))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let mut bad = mask.clone();
    bad[..8].copy_from_slice(&(a + 1000).to_le_bytes());
    let r = app
        .client
        .put(format!(
            "{}/v1/datasets/o/tables/syn/objects/{a}/voxels?x=20,22&y=10,12&z=5,6",
            app.url
        ))
        .header("content-type", "application/x-npy")
        .body(npy("<u8", [1, 2, 2], &bad))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request", "a mask of object").await;
    let mut want_a: Vec<[u64; 3]> = a_voxels
        .iter()
        .copied()
        .filter(|v| !(v[1] == 0 && v[2] == 0 && v[0] >= 2))
        .collect();
    want_a.extend(box_voxels([10, 10, 5], [12, 12, 6]));
    assert_eq!(voxels_of(&app, a).await, sorted(want_a.clone()));
    let r = app
        .get(&format!(
            "/v1/datasets/o/tables/syn/objects/{a}/boundingbox"
        ))
        .await;
    let bb: Value = r.json().await.unwrap();
    assert_eq!(bb["bbcorner"], json!([0, 0, 0]));
    assert_eq!(bb["bbdim"], json!([12, 12, 6]));
    assert_eq!(bb["count"], want_a.len());

    // The object's cutout: its bounding box, other labels masked out.
    let r = app
        .get(&format!(
            "/v1/datasets/o/tables/syn/objects/{b}/cutout?format=raw"
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-neurocube-offset"], "2,0,0");
    assert_eq!(r.headers()["x-neurocube-shape"], "1,1,4");
    let got: Vec<u64> = r
        .bytes()
        .await
        .unwrap()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, vec![b; 4]);
    let r = app
        .get(&format!(
            "/v1/datasets/o/tables/syn/objects/{a}/cutout?format=raw&x=0,8&y=0,1&z=0,1"
        ))
        .await;
    let got: Vec<u64> = r
        .bytes()
        .await
        .unwrap()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![a, a, 0, 0, 0, 0, 0, 0],
        "B's and C's voxels are masked"
    );

    // Everything above was read before any flush; after it, the same.
    assert!(app.services.objects.flush_once(false).await.unwrap());
    assert_eq!(labels(&app, "anno", [0, 0, 0], [8, 4, 2]).await, want);
    assert_eq!(voxels_of(&app, a).await, sorted(want_a.clone()));

    // Deleting A clears its voxels and marks its row.
    let r = app
        .delete(&format!("/v1/datasets/o/tables/syn/objects/{a}"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["voxels_cleared"],
        want_a.len()
    );
    assert_eq!(ids_in(&app, [0, 0, 0], [256, 256, 32]).await, vec![b, c, d]);
    let o: Value = app
        .get(&format!("/v1/datasets/o/tables/syn/objects/{a}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(o["valid"], false);
    assert_eq!(o["voxel_count"], 0);
    let r = app
        .delete(&format!("/v1/datasets/o/tables/syn/objects/{a}"))
        .await;
    assert_error(r, 409, "conflict", "no longer valid").await;
}

/// A tiny deterministic generator (the test must not depend on a seed crate).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[tokio::test]
async fn a_thousand_small_writes_land_in_one_chunk_write_equal_to_applying_them_one_by_one() {
    let app = spawn_with(slow_flush).await;
    setup(&app).await;
    app.channel("o", "ref", "segmentation", "uint64", [64, 64, 16])
        .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(create_one(&app, json!({"author": "pipeline"})).await);
    }
    // 1,000 small writes inside chunk (1, 1, 0), overlapping each other.
    let origin = [64u64, 64, 0];
    let mut want = vec![0u64; 64 * 64 * 16];
    let mut rng = Lcg(11);
    for i in 0..1000 {
        let id = ids[i % ids.len()];
        let at = [rng.next(62), rng.next(62), rng.next(16)];
        let vox: Vec<[u64; 3]> = box_voxels(at, [at[0] + 3, at[1] + 3, at[2] + 1])
            .into_iter()
            .map(|v| [v[0] + origin[0], v[1] + origin[1], v[2]])
            .collect();
        let r = app
            .put_json(
                &format!("/v1/datasets/o/tables/syn/objects/{id}/voxels"),
                &json!({"voxels": vox}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        // The same write, applied on its own as a cutout to another channel.
        let body: Vec<u8> = std::iter::repeat_n(id.to_le_bytes(), 9).flatten().collect();
        let r = app
            .put(
                &format!(
                    "/o/ref/raw/0/{},{}/{},{}/{},{}/",
                    at[0] + origin[0],
                    at[0] + origin[0] + 3,
                    at[1] + origin[1],
                    at[1] + origin[1] + 3,
                    at[2],
                    at[2] + 1
                ),
                body,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        for v in &vox {
            want[((v[2] * 64 + v[1] - 64) * 64 + v[0] - 64) as usize] = id;
        }
    }
    let objects = &app.services.objects;
    // Nothing is in the store yet: reads merge the pending writes.
    assert_eq!(objects.labels().chunks(), 1);
    assert_eq!(
        labels(&app, "anno", [64, 64, 0], [128, 128, 16]).await,
        want
    );
    assert_eq!(labels(&app, "ref", [64, 64, 0], [128, 128, 16]).await, want);

    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    // The coarser level learns of label writes when they are flushed, as
    // it learns of a cutout write when it is stored.
    let stale = |r: &reqwest::Response| r.headers().get("x-neurocube-level-stale").is_some();
    assert!(!stale(&app.get("/o/anno/raw/1/0,128/0,128/0,16/").await));
    let m0 = app.get("/metrics").await.text().await.unwrap();
    assert!(objects.flush_once(false).await.unwrap());
    assert!(stale(&app.get("/o/anno/raw/1/0,128/0,128/0,16/").await));
    assert!(
        !objects.flush_once(false).await.unwrap(),
        "one flush stores all"
    );
    let m1 = app.get("/metrics").await.text().await.unwrap();
    let written = metric(&m1, "neurocube_label_chunk_writes_total")
        - metric(&m0, "neurocube_label_chunk_writes_total");
    assert_eq!(
        written, 1.0,
        "1,000 writes to one chunk are one chunk write"
    );
    assert_eq!(objects.labels().chunks(), 0);
    assert_eq!(
        labels(&app, "anno", [64, 64, 0], [128, 128, 16]).await,
        want
    );

    // A cutout write over pending labels stores them first, then wins.
    let id = ids[0];
    let r = app
        .put_json(
            &format!("/v1/datasets/o/tables/syn/objects/{id}/voxels"),
            &json!({"voxels": [[64, 64, 0], [65, 64, 0]]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(objects.labels().chunks(), 1);
    let r = app
        .put(
            "/o/anno/raw/0/65,66/64,65/0,1/",
            77u64.to_le_bytes().to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        objects.labels().chunks(),
        0,
        "the cutout write flushed first"
    );
    assert_eq!(
        labels(&app, "anno", [64, 64, 0], [66, 65, 1]).await,
        vec![id, 77]
    );
}

#[tokio::test]
async fn bad_object_writes_are_refused_and_change_nothing() {
    let app = spawn_with(slow_flush).await;
    setup(&app).await;
    app.channel("o", "img", "image", "uint8", [64, 64, 16])
        .await;
    // Object tables need an annotation channel of labels.
    for (spec, msg) in [
        (
            json!({"schema": "ramon_seed", "voxel_resolution": [4, 4, 40]}),
            "name its annotation channel",
        ),
        (
            json!({"schema": "ramon_seed", "voxel_resolution": [4, 4, 40], "segmentation": "img"}),
            "image channel",
        ),
    ] {
        let r = app.put_json("/v1/datasets/o/tables/seeds", &spec).await;
        assert_error(r, 400, "invalid_request", msg).await;
    }
    let r = app
        .put_json(
            "/v1/datasets/o/tables/pts",
            &json!({"schema": "point", "voxel_resolution": [4, 4, 40]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .post_json("/v1/datasets/o/tables/pts/objects", &json!({"voxels": []}))
        .await;
    assert_error(r, 400, "invalid_request", "ramon_synapse").await;

    // A bad object anywhere in a request: 422 naming it, nothing written.
    let ok = json!({"author": "a", "voxels": [[1, 1, 1]]});
    for (body, row, column, msg) in [
        (
            json!([ok, {"voxels": [[256, 0, 0]]}]),
            1,
            "voxels",
            "outside",
        ),
        (
            json!([ok, {"voxels": [[1, 2]]}]),
            1,
            "voxels",
            "three non-negative",
        ),
        (
            json!([ok, {"voxels": "all"}]),
            1,
            "voxels",
            "list of [x, y, z]",
        ),
        (
            json!([{"confidence": "high", "voxels": [[1, 1, 1]]}]),
            0,
            "confidence",
            "",
        ),
        (json!([ok, {"weight": 1.0, "nosuch": 1}]), 1, "nosuch", ""),
    ] {
        let r = create(&app, &body, "overwrite").await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["row"], row, "{e}");
        assert_eq!(e["column"], column, "{e}");
        assert!(e["message"].as_str().unwrap().contains(msg), "{e}");
    }
    assert_eq!(row_count(&app).await, 0);
    assert_eq!(
        ids_in(&app, [0, 0, 0], [256, 256, 32]).await,
        Vec::<u64>::new()
    );
    assert_eq!(app.services.objects.labels().chunks(), 0);

    let id = create_one(&app, ok.clone()).await;
    for (path, body, status, code, msg) in [
        (
            "/v1/datasets/o/tables/syn/objects/999999/voxels".to_string(),
            json!({"voxels": [[1, 1, 1]]}),
            404,
            "not_found",
            "no row 999999",
        ),
        (
            format!("/v1/datasets/o/tables/syn/objects/{id}/voxels?conflict=maybe"),
            json!({"voxels": [[1, 1, 1]]}),
            400,
            "invalid_request",
            "overwrite, preserve or exception",
        ),
        (
            format!("/v1/datasets/o/tables/syn/objects/{id}/voxels?x=0,1&y=0,1&z=0,1"),
            json!({"voxels": [[1, 1, 1]]}),
            400,
            "invalid_request",
            "carries its own coordinates",
        ),
        (
            format!("/v1/datasets/o/tables/syn/objects/{id}/voxels"),
            json!({"voxels": [[1, 1, 99]]}),
            422,
            "invalid_rows",
            "outside dataset 'o'",
        ),
        (
            format!("/v1/datasets/o/tables/syn/objects/{id}/voxels"),
            json!({"points": [[1, 1, 1]]}),
            400,
            "invalid_request",
            "{\"voxels\"",
        ),
    ] {
        let r = app.put_json(&path, &body).await;
        assert_error(r, status, code, msg).await;
    }
    // A mask without its box; a mask of the wrong size.
    let r = app
        .client
        .put(format!(
            "{}/v1/datasets/o/tables/syn/objects/{id}/voxels",
            app.url
        ))
        .header("content-type", "application/x-npy")
        .body(npy("<u8", [1, 1, 1], &id.to_le_bytes()))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request", "needs the box").await;
    let r = app
        .client
        .put(format!(
            "{}/v1/datasets/o/tables/syn/objects/{id}/voxels?x=0,2&y=0,1&z=0,1",
            app.url
        ))
        .header("content-type", "application/x-npy")
        .body(npy("<u8", [1, 1, 1], &id.to_le_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app
        .client
        .post(format!("{}/v1/datasets/o/tables/syn/objects", app.url))
        .header("content-type", "text/csv")
        .body("id\n1\n")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request", "application/x-ndjson").await;
    // The row routes would orphan its voxels (a delete) or give it a new
    // id its voxels do not carry (an update): refused, pointing at the
    // object routes.
    let r = app
        .client
        .put(format!("{}/v1/datasets/o/tables/syn/rows", app.url))
        .json(&json!([{"id": id, "confidence": 0.5}]))
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        400,
        "invalid_request",
        "DELETE .../tables/syn/objects/{id}",
    )
    .await;
    let r = app
        .client
        .delete(format!("{}/v1/datasets/o/tables/syn/rows", app.url))
        .json(&json!({"ids": [id]}))
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        400,
        "invalid_request",
        "not deleted through the row routes",
    )
    .await;
    // The one object is all there is.
    assert_eq!(row_count(&app).await, 1);
    assert_eq!(ids_in(&app, [0, 0, 0], [256, 256, 32]).await, vec![id]);
    assert_eq!(voxels_of(&app, id).await, vec![[1, 1, 1]]);
}

#[tokio::test]
async fn a_full_pending_buffer_answers_503_and_keeps_nothing_of_the_refused_write() {
    let app = spawn_with(|s| {
        slow_flush(s);
        s.objects.max_pending_bytes = 1 << 20;
        s.objects.flush_at_bytes = 1 << 20;
    })
    .await;
    setup(&app).await;
    // Pending patches are runs of consecutive voxels (8 bytes a run), so
    // every other voxel along x: 98,304 runs (about 790 kB), then 65,536
    // more, past the 1 MiB buffer.
    let every_other = |start, end| {
        let mut v = box_voxels(start, end);
        v.retain(|v| v[0] % 2 == 0);
        v
    };
    let first = create_one(
        &app,
        json!({"voxels": every_other([0, 0, 0], [256, 256, 3])}),
    )
    .await;
    let r = create(
        &app,
        &json!({"voxels": every_other([0, 0, 10], [256, 256, 12])}),
        "overwrite",
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_error(r, 503, "unavailable", "objects.max_pending_bytes").await;
    assert_eq!(row_count(&app).await, 1, "the refused object left no row");
    // Once flushed, writes are taken again.
    assert!(app.services.objects.flush_once(false).await.unwrap());
    let second = create_one(&app, json!({"voxels": [[0, 0, 10]]})).await;
    assert_eq!(
        ids_in(&app, [0, 0, 0], [256, 256, 32]).await,
        vec![first, second]
    );
}
