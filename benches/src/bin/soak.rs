//! Soak (issue 9; not in CI): the demo server under a bounded mixed load for
//! a while: cutout reads and writes, tiles, annotation uploads, CAVE
//! queries and graphs. Prints the server's RSS over time, answers by status,
//! and latency percentiles per kind; memory must stay flat and there must
//! be no 5xx but deliberate 503s (with Retry-After).
//!
//! ```sh
//! cargo build --release -p neurocube-server -p neurocube-benches
//! target/release/soak [--secs 600] [--clients 8] [--synapses 100000]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neurocube_benches::synbench::{arg, pct};
use serde_json::json;

/// The resident memory of a process now, MiB.
fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap() / 1024.0)
}

#[derive(Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<f64>>,
    statuses: BTreeMap<(&'static str, u16), u64>,
    bad: Vec<String>,
}

/// A cheap deterministic random stream per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One request of a kind: (kind, method, path, body, content type).
fn request(
    r: &mut Rng,
    roots: &[u64],
) -> (&'static str, reqwest::Method, String, Vec<u8>, &'static str) {
    use reqwest::Method as M;
    match r.next(10) {
        0..=2 => {
            let (x, y, z) = (r.next(768), r.next(768), r.next(48));
            let p = format!(
                "/demo/image/npy/0/{x},{}/{y},{}/{z},{}/",
                x + 256,
                y + 256,
                z + 16
            );
            ("cutout read", M::GET, p, Vec::new(), "")
        }
        3..=4 => {
            let (row, col, z) = (r.next(4), r.next(4), r.next(64));
            let p = format!("/v1/tiles/demo/image/xy/256/0/{z}/{row}/{col}.png");
            ("tile", M::GET, p, Vec::new(), "")
        }
        5 => {
            let (x, y, z) = (r.next(15) * 64, r.next(15) * 64, r.next(7) * 8);
            let body = vec![(x / 64) as u8; 64 * 64 * 8];
            let p = format!(
                "/demo/scratch/raw/0/{x},{}/{y},{}/{z},{}/",
                x + 64,
                y + 64,
                z + 8
            );
            ("cutout write", M::PUT, p, body, "application/octet-stream")
        }
        6 => {
            let mut csv = String::from(
                "pre_pt_position_x,pre_pt_position_y,pre_pt_position_z,post_pt_position_x,post_pt_position_y,post_pt_position_z,size,pre_pt_root_id,post_pt_root_id\n",
            );
            for k in 0..100 {
                let (a, b) = (
                    roots[r.next(roots.len() as u64) as usize],
                    roots[r.next(roots.len() as u64) as usize],
                );
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{k},{a},{b}\n",
                    r.next(1024),
                    r.next(1024),
                    r.next(64),
                    r.next(1024),
                    r.next(1024),
                    r.next(64)
                ));
            }
            (
                "upload",
                M::POST,
                "/v1/datasets/demo/tables/soak/rows".into(),
                csv.into_bytes(),
                "text/csv",
            )
        }
        7..=8 => {
            let id = roots[r.next(roots.len() as u64) as usize];
            let body = json!({"post_ids": [id], "table": "synapses"})
                .to_string()
                .into_bytes();
            (
                "synapse_query",
                M::POST,
                "/v1/datasets/demo/synapse_query".into(),
                body,
                "application/json",
            )
        }
        _ => {
            let ids: Vec<u64> = (0..50)
                .map(|_| roots[r.next(roots.len() as u64) as usize])
                .collect();
            let body = json!({"ids": ids, "format": "csv", "table": "synapses"})
                .to_string()
                .into_bytes();
            (
                "graph",
                M::POST,
                "/v1/datasets/demo/graph".into(),
                body,
                "application/json",
            )
        }
    }
}

#[tokio::main]
async fn main() {
    let secs: u64 = arg("--secs").map_or(600, |s| s.parse().unwrap());
    let clients: u64 = arg("--clients").map_or(8, |s| s.parse().unwrap());
    let synapses = arg("--synapses").unwrap_or_else(|| "100000".into());
    let dir = tempfile::tempdir().unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("neurocube");
    let mut child = Command::new(bin)
        .args([
            "demo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--synapses",
            &synapses,
            "--data-dir",
        ])
        .arg(dir.path())
        .env("NEUROCUBE__LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let l = lines.next().expect("the demo printed its address").unwrap();
        if let Some(u) = l.strip_prefix("neurocube listening on ") {
            break u.trim().to_string();
        }
    };
    let c = reqwest::Client::new();
    let r = c
        .put(format!("{url}/v1/datasets/demo/channels/scratch"))
        .json(&json!({"type": "image", "dtype": "uint8", "chunk_size": [64, 64, 8]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = c
        .put(format!("{url}/v1/datasets/demo/tables/soak"))
        .json(&json!({"schema": "synapse", "voxel_resolution": [4, 4, 40]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // Root ids that have synapses, from the demo's graph.
    let edges = c
        .get(format!(
            "{url}/v1/datasets/demo/graph?format=csv&table=synapses"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut roots: Vec<u64> = edges
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    roots.sort_unstable();
    roots.dedup();
    assert!(
        !roots.is_empty(),
        "the demo has no synapses: {}",
        &edges[..edges.len().min(300)]
    );
    eprintln!(
        "soak: {url}, {clients} clients for {secs} s, {} root ids with synapses",
        roots.len()
    );

    let tally: Arc<Mutex<Tally>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let roots = Arc::new(roots);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let (c, url, tally, roots) = (c.clone(), url.clone(), tally.clone(), roots.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (k + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
            while Instant::now() < deadline {
                let (kind, method, path, body, ct) = request(&mut rng, &roots);
                let t = Instant::now();
                let mut b = c.request(method.clone(), format!("{url}{path}")).body(body);
                if !ct.is_empty() {
                    b = b.header("content-type", ct);
                }
                let outcome = match b.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let retry = r.headers().contains_key("retry-after");
                        let text = r.bytes().await.map(|b| b.len()).map_err(|e| e.to_string());
                        Ok((status, retry, text))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let mut t = tally.lock().unwrap();
                match outcome {
                    Ok((status, retry, body)) => {
                        *t.statuses.entry((kind, status)).or_default() += 1;
                        t.latencies.entry(kind).or_default().push(ms);
                        if status >= 500 && !(status == 503 && retry) || body.is_err() {
                            t.bad.push(format!("{method} {path}: {status} {body:?}"));
                        }
                    }
                    Err(e) => t.bad.push(format!("{method} {path}: {e}")),
                }
            }
        }));
    }
    // RSS over time.
    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        samples.push((started.elapsed().as_secs(), rss_mib(pid)));
        let n: u64 = tally.lock().unwrap().statuses.values().sum();
        eprintln!(
            "soak: {:>4} s, {n} requests, server RSS {:.0} MiB",
            started.elapsed().as_secs(),
            rss_mib(pid)
        );
        tokio::time::sleep(
            Duration::from_secs(30).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    samples.push((started.elapsed().as_secs(), rss_mib(pid)));
    let _ = child.kill();
    let _ = child.wait();

    let t = tally.lock().unwrap();
    println!("| kind | requests | answers | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (kind, lat) in &t.latencies {
        let mut l = lat.clone();
        let answers: Vec<String> = t
            .statuses
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, s), n)| format!("{s}: {n}"))
            .collect();
        println!(
            "| {kind} | {} | {} | {:.2} | {:.2} |",
            l.len(),
            answers.join(", "),
            pct(&mut l, 0.5),
            pct(&mut l, 0.99)
        );
    }
    let rss: Vec<String> = samples
        .iter()
        .map(|(s, m)| format!("{s} s: {m:.0}"))
        .collect();
    println!("\nserver RSS (MiB) over time: {}", rss.join(", "));
    let first_half = samples
        .iter()
        .skip(1)
        .take(samples.len() / 2)
        .map(|s| s.1)
        .fold(0.0, f64::max);
    let last = samples.last().map_or(0.0, |s| s.1);
    println!("RSS: highest of the first half {first_half:.0} MiB, at the end {last:.0} MiB");
    println!(
        "5xx other than 503 + Retry-After, and broken answers: {}",
        t.bad.len()
    );
    for b in t.bad.iter().take(20) {
        println!("  {b}");
    }
}
