//! The embedded and the Cassandra backends side by side, in one run: the
//! real server started in process on each store, driven over HTTP on
//! loopback.
//!
//! ```sh
//! scripts/cassandra.sh start
//! NEUROCUBE_CASSANDRA=127.0.0.1:9042 cargo run --release -p neurocube-benches --bin store-compare -- [--reps 5]
//! ```
//!
//! Workloads (uint8, synthetic EM from `neurocube_service::demo`, one
//! 1024×1024×64 volume, 128×128×16 chunks):
//! - write: the whole volume as one Blosc PUT (64 MiB decoded)
//! - read: the whole volume as one npy GET
//! - slices, warm: 512×512 xy PNG at random positions, 2 concurrent
//!   clients, on the server that wrote and read the volume
//! - slices, cold: the same on a server just started on the store (empty
//!   tile and decoded-chunk caches, empty engine block cache)
//! - tiles, cold: a fresh server again; two clients walk z 0..64 in turn,
//!   each frame the four 512×512 PNG tiles of the 1024×1024 plane
//!
//! Each figure is the median of `--reps` repetitions; the ratio is
//! Cassandra / embedded (time ratio: above 1 means Cassandra is slower).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use neurocube_core::Box3;
use neurocube_core::blosc::Blosc;
use neurocube_server::{Application, Settings};
use neurocube_service::demo::generate;
use neurocube_store::cassandra::{CassandraOptions, CassandraStore};
use serde_json::json;

const EXTENT: [u64; 3] = [1024, 1024, 64];
const SLICES_PER_REP: u64 = 40;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Figures {
    write_s: f64,
    read_s: f64,
    slices_per_s: f64,
    cold_slices_per_s: f64,
    cold_frames_per_s: f64,
}

/// A server on the store, and its task.
struct Running {
    url: String,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(uri: &str, data_dir: &std::path::Path) -> Running {
    let mut s = Settings::defaults();
    s.server.host = "127.0.0.1".into();
    s.server.port = 0;
    s.server.workers = 2;
    s.store.uri = uri.into();
    s.store.data_dir = data_dir.to_path_buf();
    s.jobs.workers = 0;
    let app = Application::build(s).await.expect("server starts");
    let (url, handle) = (app.url(), app.handle());
    let task = tokio::spawn(app.run_until_stopped());
    Running { url, handle, task }
}

async fn stop(r: Running) {
    r.handle.stop(true).await;
    let _ = r.task.await;
}

/// 2 clients × `SLICES_PER_REP / 2` random 512×512 xy PNG slices; slices/s.
async fn random_slices(client: &reqwest::Client, url: &str, seed: &Arc<AtomicU64>) -> f64 {
    let t = Instant::now();
    let workers = (0..2).map(|_| {
        let (client, url, seed) = (client.clone(), url.to_string(), seed.clone());
        async move {
            for _ in 0..SLICES_PER_REP / 2 {
                let n = seed
                    .fetch_add(0x9E37_79B9, Ordering::Relaxed)
                    .wrapping_mul(2_654_435_761);
                let (x, y, z) = (n % 512, (n >> 12) % 512, (n >> 24) % 64);
                let r = client
                    .get(format!(
                        "{url}/bench/em/xy/0/{x},{}/{y},{}/{z}/",
                        x + 512,
                        y + 512
                    ))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            }
        }
    });
    futures::future::join_all(workers).await;
    SLICES_PER_REP as f64 / t.elapsed().as_secs_f64()
}

/// Two clients walk z 0..64 in turn (client k takes z ≡ k mod 2), each
/// frame the four 512×512 tiles of the plane; frames/s.
async fn tile_walk(client: &reqwest::Client, url: &str) -> f64 {
    let t = Instant::now();
    let workers = (0..2u64).map(|k| {
        let (client, url) = (client.clone(), url.to_string());
        async move {
            for z in (k..EXTENT[2]).step_by(2) {
                for (row, col) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let r = client
                        .get(format!(
                            "{url}/v1/tiles/bench/em/xy/512/0/{z}/{row}/{col}.png"
                        ))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    r.bytes().await.unwrap();
                }
            }
        }
    });
    futures::future::join_all(workers).await;
    EXTENT[2] as f64 / t.elapsed().as_secs_f64()
}

async fn run(
    name: &str,
    uri: &str,
    data_dir: &std::path::Path,
    body: &[u8],
    raw: &[u8],
    reps: usize,
) -> Figures {
    let server = start(uri, data_dir).await;
    let url = server.url.clone();
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{url}/v1/datasets/bench"))
        .json(&json!({"voxel_size": [4, 4, 40], "extent": EXTENT, "levels": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = client
        .put(format!("{url}/v1/datasets/bench/channels/em"))
        .json(&json!({"type": "image", "dtype": "uint8", "chunk_size": [128, 128, 16]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let cut = format!("{url}/bench/em/{{}}/0/0,1024/0,1024/0,64/");

    let mut writes = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let r = client
            .put(cut.replace("{}", "blosc"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        writes.push(t.elapsed().as_secs_f64());
    }
    let mut reads = Vec::new();
    for i in 0..reps {
        let t = Instant::now();
        let r = client.get(cut.replace("{}", "npy")).send().await.unwrap();
        assert!(r.status().is_success());
        let b = r.bytes().await.unwrap();
        reads.push(t.elapsed().as_secs_f64());
        if i == 0 {
            assert_eq!(
                &b[b.len() - raw.len()..],
                raw,
                "{name}: npy body differs from what was written"
            );
        }
    }
    let seed = Arc::new(AtomicU64::new(12345));
    let mut rates = Vec::new();
    for _ in 0..reps {
        rates.push(random_slices(&client, &url, &seed).await);
    }
    stop(server).await;
    let (mut cold, mut frames) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let server = start(uri, data_dir).await;
        cold.push(random_slices(&client, &server.url, &seed).await);
        stop(server).await;
        let server = start(uri, data_dir).await;
        frames.push(tile_walk(&client, &server.url).await);
        stop(server).await;
    }
    Figures {
        write_s: median(writes),
        read_s: median(reads),
        slices_per_s: median(rates),
        cold_slices_per_s: median(cold),
        cold_frames_per_s: median(frames),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let reps: usize = arg("--reps").map_or(5, |v| v.parse().expect("--reps N"));
    let node = std::env::var("NEUROCUBE_CASSANDRA").unwrap_or_else(|_| "127.0.0.1:9042".into());
    let (raw, _) = generate(&Box3::new([0, 0, 0], EXTENT).unwrap());
    let body = Blosc::lz4(1).unwrap().compress(&raw).unwrap();
    let mib = raw.len() as f64 / (1 << 20) as f64;
    println!(
        "volume 1024x1024x64 uint8 ({mib:.0} MiB), Blosc body {:.1} MiB; median of {reps} repetitions",
        body.len() as f64 / (1 << 20) as f64
    );
    let dir = tempfile::tempdir().unwrap();
    let emb = run("embedded", "embedded", dir.path(), &body, &raw, reps).await;
    let ks = format!("nc_bench_{}", uuid_like());
    let cas = run(
        "cassandra",
        &format!("cassandra://{node}/{ks}"),
        dir.path(),
        &body,
        &raw,
        reps,
    )
    .await;
    let store = CassandraStore::open(CassandraOptions::new(vec![node.clone()], &ks))
        .await
        .unwrap();
    let _ = store.drop_keyspace().await;

    println!(
        "{:<34} {:>12} {:>12} {:>18}",
        "workload", "embedded", "cassandra", "cassandra/embedded"
    );
    let row = |w: &str, e: f64, c: f64, unit: &str, ratio: f64| {
        println!(
            "{w:<34} {:>12} {:>12} {ratio:>18.2}",
            format!("{e:.1} {unit}"),
            format!("{c:.1} {unit}")
        );
    };
    row(
        "write 1024x1024x64 blosc PUT",
        mib / emb.write_s,
        mib / cas.write_s,
        "MiB/s",
        cas.write_s / emb.write_s,
    );
    row(
        "read 1024x1024x64 npy GET",
        mib / emb.read_s,
        mib / cas.read_s,
        "MiB/s",
        cas.read_s / emb.read_s,
    );
    row(
        "512x512 xy PNG slices, warm",
        emb.slices_per_s,
        cas.slices_per_s,
        "/s",
        emb.slices_per_s / cas.slices_per_s,
    );
    row(
        "512x512 xy PNG slices, cold",
        emb.cold_slices_per_s,
        cas.cold_slices_per_s,
        "/s",
        emb.cold_slices_per_s / cas.cold_slices_per_s,
    );
    row(
        "1024x1024 frames of tiles, z walk, cold",
        emb.cold_frames_per_s,
        cas.cold_frames_per_s,
        "/s",
        emb.cold_frames_per_s / cas.cold_frames_per_s,
    );
    println!("(ratios are time ratios: Cassandra's time / embedded's time)");
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{:x}{:x}", t.as_secs(), t.subsec_nanos())
}
