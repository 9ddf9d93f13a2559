//! End-to-end bench: the real `neurocube` binary (release build, embedded
//! store, a separate process) driven over HTTP on loopback, and TensorStore
//! on the same volume in the same run as the peer users would pick instead.
//!
//! ```sh
//! cargo build --release --bin neurocube
//! cargo run --release -p neurocube-benches --bin e2e -- [--rounds 5] [--no-peer] [--server PATH] [--noise]
//! ```
//!
//! `--noise` writes white noise instead of the EM-like volume (the
//! incompressible extra row).
//!
//! `--server PATH` runs another build of the binary (to compare two builds
//! in one session); by default the `neurocube` next to this bench.
//!
//! Workloads (all uint8, synthetic EM from `neurocube_service::demo`, Blosc
//! lz4 about 1.3x):
//! - write 16 cutouts of 1024×1024×64 as Blosc PUTs (4096×4096×64 = 1 GiB)
//! - read the same cutouts as npy, warm (1 and 2 concurrent clients)
//! - 512×512 xy PNG slices, warm (2 concurrent clients)
//! - one 1 GiB npy cutout, sampling the server's resident memory
//! - TensorStore (zarr v2, Blosc lz4 + shuffle, 128×128×16 chunks, local disk, in process)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use neurocube_core::Box3;
use neurocube_core::blosc::Blosc;
use neurocube_service::demo::generate;
use serde_json::{Value, json};

const EXTENT: [u64; 3] = [4096, 4096, 64];
const CUT: [u64; 3] = [1024, 1024, 64];

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data: &Path) -> Server {
    let exe = std::env::current_exe().expect("own path");
    let bin = arg("--server").map_or_else(
        || exe.parent().expect("target dir").join("neurocube"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "build the server first: cargo build --release --bin neurocube ({} missing)",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(data)
        .env("NEUROCUBE__LOG__LEVEL", "warn")
        .env("NEUROCUBE__STORE__DURABILITY", "fsync")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start neurocube");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read banner");
    let url = line.trim().rsplit(' ').next().expect("url").to_string();
    Server { child, url }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn cutouts() -> Vec<Box3> {
    let mut v = Vec::new();
    for y in (0..EXTENT[1]).step_by(CUT[1] as usize) {
        for x in (0..EXTENT[0]).step_by(CUT[0] as usize) {
            v.push(Box3::with_shape([x, y, 0], CUT).unwrap());
        }
    }
    v
}

fn url_of(base: &str, fmt: &str, b: &Box3) -> String {
    format!(
        "{base}/bench/image/{fmt}/0/{},{}/{},{}/{},{}/",
        b.start[0], b.end[0], b.start[1], b.end[1], b.start[2], b.end[2]
    )
}

async fn read_round(
    client: &reqwest::Client,
    base: &str,
    boxes: &[Box3],
    concurrency: usize,
) -> f64 {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, boxes, next) = (
            client.clone(),
            base.to_string(),
            boxes.to_vec(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(b) = boxes.get(i) else { return bytes };
                // Consume the stream as it arrives (as wrk does), checking its length.
                let mut r = client.get(url_of(&base, "npy", b)).send().await.unwrap();
                let want = r.content_length().unwrap();
                let mut got = 0;
                while let Some(c) = r.chunk().await.unwrap() {
                    got += c.len() as u64;
                }
                assert_eq!(got, want);
                bytes += got;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64() / 1e9
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = arg("--rounds").map_or(5, |r| r.parse().expect("--rounds N"));
    let peer = !std::env::args().any(|a| a == "--no-peer");
    let noise = std::env::args().any(|a| a == "--noise");
    let base_dir = PathBuf::from(
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    );
    let dir = tempfile::tempdir_in(&base_dir).expect("bench dir");
    let server = start_server(&dir.path().join("neurocube"));
    let base = server.url.clone();
    let pid = server.child.id();
    let client = reqwest::Client::new();
    println!(
        "e2e bench: server {base} (pid {pid}), data in {}",
        dir.path().display()
    );

    let put = |path: &str, v: Value| client.put(format!("{base}{path}")).json(&v).send();
    assert!(
        put(
            "/v1/datasets/bench",
            json!({"voxel_size": [4, 4, 40], "extent": EXTENT})
        )
        .await
        .unwrap()
        .status()
        .is_success()
    );
    assert!(
        put(
            "/v1/datasets/bench/channels/image",
            json!({"type": "image", "dtype": "uint8"})
        )
        .await
        .unwrap()
        .status()
        .is_success()
    );

    // Volume data (generated once, also written raw for the peer).
    let raw_path = dir.path().join("volume.u8");
    let boxes = cutouts();
    let mut blocks = Vec::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&raw_path).unwrap());
        for b in &boxes {
            let img = if noise {
                neurocube_benches::white_noise(b.voxels() as usize, b.start[0] ^ b.start[1] << 20)
            } else {
                generate(b).0
            };
            f.write_all(&img).unwrap();
            blocks.push(img);
        }
    }
    let codec = Blosc::lz4(1).unwrap();
    let bodies: Vec<Vec<u8>> = blocks.iter().map(|b| codec.compress(b).unwrap()).collect();
    let ratio = blocks.iter().map(Vec::len).sum::<usize>() as f64
        / bodies.iter().map(Vec::len).sum::<usize>() as f64;
    drop(blocks);
    println!(
        "data: {} cutouts of 1024x1024x64 uint8, {}, Blosc lz4 ratio {ratio:.2}",
        boxes.len(),
        if noise { "white noise" } else { "EM-like" }
    );

    // Write: blosc PUTs (rewrites after the first round are overwrites of full chunks).
    let mut write_rates = Vec::new();
    for _ in 0..rounds.min(3) {
        let started = Instant::now();
        for (b, body) in boxes.iter().zip(&bodies) {
            let r = client
                .put(url_of(&base, "blosc", b))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
        }
        write_rates
            .push((EXTENT.iter().product::<u64>()) as f64 / started.elapsed().as_secs_f64() / 1e9);
    }
    let write = median(write_rates.clone());
    println!(
        "write  blosc PUT 1024x1024x64, 1 client: median {:.3} GB/s  (runs {write_rates:.3?})",
        write
    );

    // Read: npy, warm.
    read_round(&client, &base, &boxes, 2).await;
    let mut read1 = Vec::new();
    let mut read2 = Vec::new();
    for _ in 0..rounds {
        read1.push(read_round(&client, &base, &boxes, 1).await);
        read2.push(read_round(&client, &base, &boxes, 2).await);
    }
    let (r1, r2) = (median(read1.clone()), median(read2));
    println!(
        "read   npy GET 1024x1024x64, warm, 1 client: median {r1:.3} GB/s  (runs {read1:.3?})"
    );
    println!("read   npy GET 1024x1024x64, warm, 2 clients: median {r2:.3} GB/s");

    // Slices: 512x512 xy PNG, warm, 2 clients.
    let n_slices = 600u64;
    let mut slice_rates = Vec::new();
    for round in 0..=rounds.min(3) {
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (client, base, next) = (client.clone(), base.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n_slices {
                        return;
                    }
                    let (x, y, z) = ((i % 7) * 512, ((i / 7) % 7) * 512, i % 64);
                    let u = format!(
                        "{base}/bench/image/xy/0/{x},{}/{y},{}/{z}/",
                        x + 512,
                        y + 512
                    );
                    let r = client.get(u).send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    r.bytes().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        if round > 0 {
            slice_rates.push(n_slices as f64 / started.elapsed().as_secs_f64());
        }
    }
    let slices = median(slice_rates.clone());
    println!(
        "slices 512x512 xy PNG, warm, 2 clients: median {slices:.0} slices/s  (runs {slice_rates:.0?})"
    );

    // Memory during one 1 GiB cutout.
    let idle = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(idle));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let all = Box3::new([0, 0, 0], EXTENT).unwrap();
    let started = Instant::now();
    let mut resp = client.get(url_of(&base, "npy", &all)).send().await.unwrap();
    let mut got = 0u64;
    while let Some(c) = resp.chunk().await.unwrap() {
        got += c.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "memory 1 GiB npy cutout ({got} bytes in {secs:.2} s, {:.2} GB/s): server RSS idle {} MiB, peak {} MiB, peak/response {:.2}x",
        got as f64 / secs / 1e9,
        idle / 1024,
        peak / 1024,
        (peak * 1024) as f64 / got as f64
    );

    let mut summary = json!({
        "write_blosc_gbs": write, "read_npy_gbs_1client": r1, "read_npy_gbs_2clients": r2,
        "slices_per_s": slices, "rss_peak_over_response": (peak * 1024) as f64 / got as f64,
    });
    if peer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/tensorstore_peer.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&raw_path)
            .args(["--rounds", &rounds.to_string(), "--dir"])
            .arg(dir.path().join("zarr"))
            .output()
            .expect("run python3");
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
            let (tr, tw) = (
                v["read_gbs"].as_f64().unwrap(),
                v["write_gbs"].as_f64().unwrap(),
            );
            println!(
                "peer   TensorStore zarr (blosc lz4+shuffle, 128x128x16 chunks, local disk, in process): read {tr:.3} GB/s, write {tw:.3} GB/s"
            );
            println!(
                "ratio  neurocube over HTTP / TensorStore in process: read {:.2} (1 client), {:.2} (2 clients); write {:.2}",
                r1 / tr,
                r2 / tr,
                write / tw
            );
            summary["tensorstore"] = v;
        } else {
            println!(
                "peer   TensorStore failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    println!("{summary}");
}
