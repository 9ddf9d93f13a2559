//! HTTP tests that only make sense on Cassandra: two server instances on one
//! keyspace, and a node going down and coming back. They need
//! `NEUROCUBE_CASSANDRA=host:port` (scripts/test.sh starts a node and sets
//! it); without it they fail when `CI` is set and are skipped otherwise.
//! The outage test runs a second node of its own (scripts/cassandra.sh with
//! CQL port 9142, storage port 7100), so the main node is never disturbed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use helpers::pattern;
use neurocube_server::{Application, Settings};
use neurocube_store::cassandra::CassandraStore;
use reqwest::StatusCode;

fn node() -> Option<String> {
    match std::env::var("NEUROCUBE_CASSANDRA") {
        Ok(n) if !n.is_empty() => Some(n),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "NEUROCUBE_CASSANDRA is not set but CI is: the Cassandra tests must run in CI (scripts/test.sh starts a node)"
            );
            eprintln!("skipped: NEUROCUBE_CASSANDRA is not set (e.g. 127.0.0.1:9042)");
            None
        }
    }
}

fn settings(uri: &str) -> Settings {
    let mut s = Settings::defaults();
    s.server.host = "127.0.0.1".into();
    s.server.port = 0;
    s.server.workers = 2;
    s.store.uri = uri.to_string();
    s
}

/// A server on `uri`, through the same path as `neurocube serve --store`.
async fn serve(s: Settings) -> (String, actix_web::dev::ServerHandle) {
    let app = Application::build(s).await.expect("app starts");
    let (url, handle) = (app.url(), app.handle());
    tokio::spawn(app.run_until_stopped());
    (url, handle)
}

async fn drop_keyspace(node: &str, ks: &str) {
    let opts = neurocube_store::cassandra::CassandraOptions::new(vec![node.into()], ks);
    if let Ok(s) = CassandraStore::open(opts).await {
        let _ = s.drop_keyspace().await;
    }
}

/// Two servers on one host and keyspace on port 0, without
/// `objects.log_name`: each names its label log after the host and the port
/// it was given, so they never write into one log (which the other's
/// flushes would drop, and its replay apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_port_zero_get_label_logs_of_their_own() {
    let Some(node) = node() else { return };
    let ks = format!("nc_logs_{}", uuid::Uuid::new_v4().simple());
    let uri = format!("cassandra://{node}/{ks}");
    let a = Application::build(settings(&uri))
        .await
        .expect("app starts");
    let b = Application::build(settings(&uri))
        .await
        .expect("app starts");
    let name = |app: &Application| app.services().objects.log_name().to_string();
    let port = |app: &Application| {
        let url = app.url();
        url.trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    assert_ne!(name(&a), name(&b));
    for app in [&a, &b] {
        assert!(
            name(app).ends_with(&format!(":{}", port(app))) && !name(app).ends_with(":0"),
            "log {} of the server at {}",
            name(app),
            app.url()
        );
    }
    drop((a, b));
    drop_keyspace(&node, &ks).await;
}

/// Two servers on one keyspace paint interleaved voxel columns (x even on
/// one, x odd on the other) of the same chunks at the same time. Every write
/// is a partial chunk write, so each is a read-patch-CAS: with a real
/// lightweight transaction no column is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_painting_the_same_chunks_lose_nothing() {
    let Some(node) = node() else { return };
    let ks = format!("nc_two_{}", uuid::Uuid::new_v4().simple());
    let uri = format!("cassandra://{node}/{ks}");
    let (a, ha) = serve(settings(&uri)).await;
    let (b, hb) = serve(settings(&uri)).await;
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{a}/v1/datasets/two"))
        .json(&serde_json::json!({"voxel_size": [4, 4, 40], "extent": [64, 64, 8], "levels": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .put(format!("{a}/v1/datasets/two/channels/img"))
        .json(&serde_json::json!({"type": "image", "dtype": "uint8", "chunk_size": [32, 32, 8]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Column x: 64 (y) x 8 (z) voxels, crossing two chunks in y.
    let want = pattern(64 * 64 * 8, 7);
    let column = |x: usize| -> Vec<u8> {
        let mut c = Vec::with_capacity(64 * 8);
        for z in 0..8 {
            for y in 0..64 {
                c.push(want[(z * 64 + y) * 64 + x].max(1));
            }
        }
        c
    };
    let paint = |base: String, parity: usize| {
        let client = client.clone();
        async move {
            for x in (parity..64).step_by(2) {
                let r = client
                    .put(format!("{base}/two/img/raw/0/{x},{}/0,64/0,8/", x + 1))
                    .body(column(x))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status(),
                    StatusCode::CREATED,
                    "{}",
                    r.text().await.unwrap()
                );
            }
        }
    };
    futures::future::join(paint(a.clone(), 0), paint(b.clone(), 1)).await;

    let expect: Vec<u8> = want.iter().map(|v| (*v).max(1)).collect();
    for base in [&a, &b] {
        let got = client
            .get(format!("{base}/two/img/raw/0/0,64/0,64/0,8/"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        let got = got.bytes().await.unwrap();
        let lost: Vec<usize> = (0..64)
            .filter(|&x| (0..64 * 8).any(|i| got[i * 64 + x] != expect[i * 64 + x]))
            .collect();
        assert!(lost.is_empty(), "columns lost via {base}: {lost:?}");
    }
    drop(ha.stop(false));
    drop(hb.stop(false));
    drop_keyspace(&node, &ks).await;
}

/// Slices and tiles share a cache of decoded chunks, which a server's own
/// writes clear at once. Another server's writes reach it when the cached
/// chunks expire: `tiles.max_age_secs` (30 s on Cassandra by default, 1 s
/// here). Before that the second server still shows the old voxels, and
/// after it the new ones, in slices and tiles alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_writes_show_in_slices_and_tiles_after_max_age() {
    let Some(node) = node() else { return };
    let ks = format!("nc_age_{}", uuid::Uuid::new_v4().simple());
    let uri = format!("cassandra://{node}/{ks}");
    let instance = |name: &str| {
        let mut s = settings(&uri);
        s.objects.log_name = name.into();
        s.tiles.max_age_secs = Some(1);
        s
    };
    let (a, ha) = serve(instance("a")).await;
    let (b, hb) = serve(instance("b")).await;
    let client = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/datasets/age",
            serde_json::json!({"voxel_size": [4, 4, 40], "extent": [64, 64, 8], "levels": 1}),
        ),
        (
            "/v1/datasets/age/channels/img",
            serde_json::json!({"type": "image", "dtype": "uint8", "chunk_size": [32, 32, 8]}),
        ),
    ] {
        let r = client
            .put(format!("{a}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let write = |v: u8| {
        let (client, a) = (client.clone(), a.clone());
        async move {
            let r = client
                .put(format!("{a}/age/img/raw/0/0,64/0,64/0,8/"))
                .body(vec![v; 64 * 64 * 8])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    };
    // Every pixel of b's slice and tile at z 3: one value, or None if mixed.
    let seen = || {
        let (client, b) = (client.clone(), b.clone());
        async move {
            let mut values = Vec::new();
            for path in [
                "/age/img/xy/0/0,64/0,64/3/",
                "/v1/tiles/age/img/xy/256/0/3/0/0.png",
            ] {
                let r = client.get(format!("{b}{path}")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let (_, px) = helpers::decode_png(&r.bytes().await.unwrap());
                values.push(px[0]);
                if px.iter().any(|&p| p != px[0]) {
                    return None;
                }
            }
            (values[0] == values[1]).then_some(values[0])
        }
    };
    write(10).await;
    // b caches the chunks and the tile now; they expire a second later.
    let cached = Instant::now();
    assert_eq!(seen().await, Some(10));
    write(20).await;
    let mut last = seen().await;
    if cached.elapsed() < Duration::from_millis(900) {
        assert_eq!(last, Some(10), "b serves its cached chunks within max_age");
    }
    while last != Some(20) && cached.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = seen().await;
    }
    assert_eq!(last, Some(20), "b never saw a's write");
    assert!(
        cached.elapsed() >= Duration::from_millis(950),
        "b's cache expired before max_age"
    );
    drop(ha.stop(false));
    drop(hb.stop(false));
    drop_keyspace(&node, &ks).await;
}

/// Two servers on one keyspace, each with its own label log, create
/// annotation objects whose voxels interleave in the same chunks (even x
/// columns through one, odd through the other), flushing every 100 ms.
/// Each flush stores a chunk by compare-and-set over what the other
/// instance stored, so no object loses a voxel; both read everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_flushing_label_writes_into_the_same_chunks_lose_nothing() {
    let Some(node) = node() else { return };
    let ks = format!("nc_two_{}", uuid::Uuid::new_v4().simple());
    let uri = format!("cassandra://{node}/{ks}");
    let instance = |name: &str| {
        let mut s = settings(&uri);
        s.objects.log_name = name.into();
        s.objects.flush_interval_ms = 100;
        s
    };
    let (a, ha) = serve(instance("a")).await;
    let (b, hb) = serve(instance("b")).await;
    let client = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/datasets/two",
            serde_json::json!({"voxel_size": [4, 4, 40], "extent": [64, 64, 8], "levels": 1}),
        ),
        (
            "/v1/datasets/two/channels/anno",
            serde_json::json!({"type": "segmentation", "dtype": "uint64", "chunk_size": [32, 32, 8]}),
        ),
        (
            "/v1/datasets/two/tables/syn",
            serde_json::json!({"schema": "ramon_synapse", "voxel_resolution": [4, 4, 40], "segmentation": "anno"}),
        ),
    ] {
        let r = client
            .put(format!("{a}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }
    // Object (x, z): the column of voxels (x, 0..64, z), crossing two chunks.
    let paint = |base: String, parity: u64| {
        let client = client.clone();
        async move {
            let mut made = Vec::new();
            for z in 0..8u64 {
                for x in (parity..64).step_by(2) {
                    let voxels: Vec<[u64; 3]> = (0..64).map(|y| [x, y, z]).collect();
                    let r = client
                        .post(format!("{base}/v1/datasets/two/tables/syn/objects"))
                        .json(&serde_json::json!({"voxels": voxels}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status(),
                        StatusCode::CREATED,
                        "{}",
                        r.text().await.unwrap()
                    );
                    let v: serde_json::Value = r.json().await.unwrap();
                    made.push((v["ids"][0].as_u64().unwrap(), x, z));
                }
            }
            made
        }
    };
    let (ma, mb) = futures::future::join(paint(a.clone(), 0), paint(b.clone(), 1)).await;
    // Wait until both have flushed everything.
    let pending = |base: String| {
        let client = client.clone();
        async move {
            let m = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            m.lines().any(|l| l == "neurocube_label_pending_bytes 0")
        }
    };
    let start = Instant::now();
    while !(pending(a.clone()).await && pending(b.clone()).await) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "flushes never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut want = vec![0u64; 64 * 64 * 8];
    for (id, x, z) in ma.iter().chain(&mb) {
        for y in 0..64u64 {
            want[((z * 64 + y) * 64 + x) as usize] = *id;
        }
    }
    for base in [&a, &b] {
        let got = client
            .get(format!("{base}/two/anno/raw/0/0,64/0,64/0,8/"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        let got: Vec<u64> = got
            .bytes()
            .await
            .unwrap()
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let lost = got.iter().zip(&want).filter(|(g, w)| g != w).count();
        assert_eq!(lost, 0, "voxels lost via {base}");
    }
    drop(ha.stop(false));
    drop(hb.stop(false));
    drop_keyspace(&node, &ks).await;
}

/// The second node, on its own ports and data directory.
struct SecondNode {
    script: PathBuf,
    data: PathBuf,
}

impl SecondNode {
    const PORT: u16 = 9142;

    fn new() -> Self {
        // cargo sets CARGO_MANIFEST_DIR when it runs the test; the
        // compile-time value is only the fallback for a binary run by hand.
        let manifest = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let root = PathBuf::from(manifest).join("..");
        Self {
            script: root.join("scripts/cassandra.sh"),
            data: std::env::temp_dir().join("neurocube-cassandra-outage-node"),
        }
    }

    async fn run(&self, cmd: &'static str) {
        let (script, data) = (self.script.clone(), self.data.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(script)
                .arg(cmd)
                .env("CASSANDRA_PORT", Self::PORT.to_string())
                .env("CASSANDRA_STORAGE_PORT", "7100")
                .env("CASSANDRA_DATA_DIR", data)
                .env_remove("CASSANDRA_JMX_PORT")
                .output()
                .expect("scripts/cassandra.sh runs")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "scripts/cassandra.sh {cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .arg("stop")
            .env("CASSANDRA_PORT", Self::PORT.to_string())
            .env("CASSANDRA_STORAGE_PORT", "7100")
            .env("CASSANDRA_DATA_DIR", &self.data)
            .output();
    }
}

/// Down at start: the server retries until the node comes up. Down during
/// requests: 503 with Retry-After and a short message, quickly. Back up:
/// requests succeed again without a restart, and the data is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_outage_gives_503_and_recovers_without_restart() {
    if node().is_none() {
        return;
    }
    let second = SecondNode::new();
    second.run("stop").await;
    let addr = format!("127.0.0.1:{}", SecondNode::PORT);
    let ks = format!("nc_outage_{}", uuid::Uuid::new_v4().simple());
    let mut s = settings(&format!("cassandra://{addr}/{ks}"));
    s.store.cassandra.request_timeout_ms = 3000;
    s.store.cassandra.connect_timeout_ms = 2000;
    s.store.cassandra.startup_deadline_secs = 240;

    // Down at start: build retries in the background while the node starts.
    let started = Instant::now();
    let building = tokio::spawn(serve(s));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !building.is_finished(),
        "the server must wait for the store"
    );
    second.run("start").await;
    let (url, handle) = building.await.unwrap();
    eprintln!("server up {:?} after it started waiting", started.elapsed());
    let app = TestAppLite::new(url);

    assert_eq!(
        app.put_json(
            "/v1/datasets/out",
            &serde_json::json!({"voxel_size": [4, 4, 40], "extent": [256, 256, 16], "levels": 1})
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.put_json(
            "/v1/datasets/out/channels/img",
            &serde_json::json!({"type": "image", "dtype": "uint8"})
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    let cube = pattern(128 * 128 * 16, 3);
    let r = app
        .put("/out/img/raw/0/0,128/0,128/0,16/", cube.clone())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    second.run("stop").await;
    // A write must reach the store: 503, Retry-After, a short message, and fast.
    let t = Instant::now();
    let r = app
        .put(
            "/out/img/raw/0/128,256/0,128/0,16/",
            pattern(128 * 128 * 16, 5),
        )
        .await;
    let took = t.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unavailable", "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.starts_with(&format!(
            "cassandra store unavailable: cannot reach {addr} ("
        )) && m.ends_with("); retry later"),
        "{m}"
    );
    assert!(m.len() < 120, "message too long: {m}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // A read of chunks nobody has read yet: 503 as well.
    let r = app.get("/out/img/raw/0/0,128/128,256/0,16/").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    second.run("start").await;
    // Back up: the driver reconnects by itself.
    let t = Instant::now();
    loop {
        let r = app.get("/out/img/raw/0/0,128/0,128/0,16/").await;
        if r.status() == StatusCode::OK {
            assert_eq!(r.bytes().await.unwrap().to_vec(), cube);
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no recovery after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("recovered {:?} after the node was up", t.elapsed());
    let again = pattern(128 * 128 * 16, 5);
    let r = app
        .put("/out/img/raw/0/128,256/0,128/0,16/", again.clone())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app.get("/out/img/raw/0/128,256/0,128/0,16/").await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), again);
    drop(handle.stop(false));
    drop_keyspace(&addr, &ks).await;
    drop(second);
}

/// The few requests the outage test makes.
struct TestAppLite {
    url: String,
    client: reqwest::Client,
}

impl TestAppLite {
    fn new(url: String) -> Self {
        // Bounded: a hang is a failure, not a stuck test.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { url, client }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    async fn put(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .put(format!("{}{path}", self.url))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn put_json(&self, path: &str, v: &serde_json::Value) -> reqwest::Response {
        self.client
            .put(format!("{}{path}", self.url))
            .json(v)
            .send()
            .await
            .unwrap()
    }
}
