//! Scroll z through tiles the way a viewer does and time it: `--connections`
//! HTTP/1.1 connections (6, like a browser) share one z counter, so frames
//! are asked for in z order. `--once` asks for each of the `--z` frames
//! once (a cold cache sees every frame for the first time); otherwise it
//! loops over them for `--seconds`. `--rate` paces the requests like a
//! viewer playing z as a movie. Prints frames/s and p50/p99 latency.
//!
//! `tile-walk --base http://127.0.0.1:8080 --prefix /v1/tiles/demo/image/xy/1024/0/ --suffix /0/0.png --z 512 --once`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Server base URL.
    #[arg(long)]
    base: String,
    /// Path before the slice number.
    #[arg(long)]
    prefix: String,
    /// Path after the slice number.
    #[arg(long, default_value = "")]
    suffix: String,
    /// Number of slices.
    #[arg(long)]
    z: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 6)]
    connections: usize,
    /// Ask for every slice once, then stop.
    #[arg(long)]
    once: bool,
    /// Otherwise, loop for this long.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Ask for frames at this rate (frames/s, all connections together), like
    /// a viewer playing a movie; 0: as fast as the server answers.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        // One client per connection: each keeps its own HTTP/1.1 connection.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (next, base, prefix, suffix) = (
            next.clone(),
            a.base.clone(),
            a.prefix.clone(),
            a.suffix.clone(),
        );
        let (z, once, rate) = (a.z, a.once, a.rate);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if (once && i >= z) || (!once && Instant::now() >= deadline) {
                    break;
                }
                if rate > 0.0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let url = format!("{base}{prefix}{}{suffix}", i % z);
                let t0 = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        if r.bytes().await.is_err() {
                            errors += 1;
                        }
                    }
                    _ => errors += 1,
                }
                lat.push(t0.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "FRAMES {} FPS {:.1} P50_MS {:.2} P99_MS {:.2} ERRORS {errors}",
        lat.len(),
        lat.len() as f64 / secs,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0)
    );
    Ok(())
}
