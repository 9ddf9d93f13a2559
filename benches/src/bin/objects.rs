//! Small annotation objects, written by 16 concurrent clients, the way a
//! detection pipeline writes them: each object is an 8 × 8 × 4-voxel
//! synapse at a random position of an 8192 × 8192 × 512 uint64 annotation
//! channel (chunks 128 × 128 × 16), in one run:
//!
//! - today's path: one npy cutout PUT per object (a chunk read-modify-write
//!   with compare-and-set each), into its own channel;
//! - objects: one `POST .../objects` per object (its row and its 256
//!   voxels as a list), the NeuroBlaze path: acknowledged once logged
//!   durably, stored in its chunks by the background flusher;
//! - then the time the flusher takes to store what is still pending, and
//!   its chunk writes per object;
//! - then objects again, `--batch` (8) per request as NDJSON, the way a
//!   pipeline sends them once it has many; the flusher stores them;
//! - then the same as Arrow IPC (voxels as a list of fixed-size lists of
//!   3 `uint32`), what a pipeline with numpy arrays at hand sends.
//!
//! ```sh
//! cargo build --release -p neurocube-server -p neurocube-benches
//! target/release/objects [--seconds 10] [--clients 16] [--flush-ms 1000] [--batch 8] [--no-drain] [--work DIR]
//! ```
//!
//! Each phase runs for `--seconds`; figures are acknowledged (durable:
//! fsync) objects per second over the phase, and latency percentiles.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use neurocube_benches::synbench::{arg, pct, put, start_server};
use rand::{Rng, SeedableRng};
use serde_json::json;

const EXTENT: [u64; 3] = [8192, 8192, 512];
const OBJ: [u64; 3] = [8, 8, 4];

fn npy_u64(shape: [u64; 3], data: &[u8]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<u8', 'fortran_order': False, 'shape': ({}, {}, {}), }}",
        shape[2], shape[1], shape[0]
    );
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    let padded = format!("{dict:<w$}\n", w = total - 11);
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    out.extend_from_slice(padded.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A number's decimal digits (the client formats 768 per object; a lean
/// client leaves the cores to the server).
fn digits(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

fn corner(rng: &mut rand::rngs::StdRng) -> [u64; 3] {
    [
        rng.random_range(0..EXTENT[0] - OBJ[0]),
        rng.random_range(0..EXTENT[1] - OBJ[1]),
        rng.random_range(0..EXTENT[2] - OBJ[2]),
    ]
}

/// One synapse object as JSON: its row's fields and its 256 voxels.
fn object_json(rng: &mut rand::rngs::StdRng) -> String {
    let c = corner(rng);
    let mut voxels = String::with_capacity(6144);
    voxels.push('[');
    for z in c[2]..c[2] + OBJ[2] {
        for y in c[1]..c[1] + OBJ[1] {
            for x in c[0]..c[0] + OBJ[0] {
                if voxels.len() > 1 {
                    voxels.push(',');
                }
                voxels.push('[');
                digits(&mut voxels, x);
                voxels.push(',');
                digits(&mut voxels, y);
                voxels.push(',');
                digits(&mut voxels, z);
                voxels.push(']');
            }
        }
    }
    voxels.push(']');
    format!(
        r#"{{"author":"detector","confidence":{:.3},"weight":{:.2},"synapse_type":1,"centroid_position":[{},{},{}],"voxels":{voxels}}}"#,
        rng.random::<f64>(),
        rng.random::<f64>() * 10.0,
        c[0] + 4,
        c[1] + 4,
        c[2] + 2
    )
}

/// `n` objects as one Arrow IPC stream: the same fields and random draws
/// as [`object_json`], voxels as list<fixed_size_list<uint32, 3>>.
fn objects_arrow(rng: &mut rand::rngs::StdRng, n: u64) -> Vec<u8> {
    use arrow_array::builder::{
        FixedSizeListBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
        UInt32Builder,
    };
    use arrow_array::{ArrayRef, RecordBatch};
    let mut author = StringBuilder::new();
    let (mut confidence, mut weight) = (Float64Builder::new(), Float64Builder::new());
    let mut kind = Int64Builder::new();
    let mut centroid = FixedSizeListBuilder::new(Int64Builder::new(), 3);
    let mut voxels = ListBuilder::new(FixedSizeListBuilder::new(UInt32Builder::new(), 3));
    for _ in 0..n {
        let c = corner(rng);
        for z in c[2]..c[2] + OBJ[2] {
            for y in c[1]..c[1] + OBJ[1] {
                for x in c[0]..c[0] + OBJ[0] {
                    let v = voxels.values();
                    v.values().append_slice(&[x as u32, y as u32, z as u32]);
                    v.append(true);
                }
            }
        }
        voxels.append(true);
        author.append_value("detector");
        confidence.append_value((rng.random::<f64>() * 1e3).round() / 1e3);
        weight.append_value((rng.random::<f64>() * 1e3).round() / 1e2);
        kind.append_value(1);
        centroid
            .values()
            .append_slice(&[c[0] as i64 + 4, c[1] as i64 + 4, c[2] as i64 + 2]);
        centroid.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("author", Arc::new(author.finish())),
        ("confidence", Arc::new(confidence.finish())),
        ("weight", Arc::new(weight.finish())),
        ("synapse_type", Arc::new(kind.finish())),
        ("centroid_position", Arc::new(centroid.finish())),
        ("voxels", Arc::new(voxels.finish())),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut buf = Vec::with_capacity(n as usize * 3300);
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

/// Wait until the flusher has stored everything pending; seconds taken.
async fn drain(client: &reqwest::Client, base: &str) -> f64 {
    let t = Instant::now();
    while metric(client, base, "neurocube_label_pending_bytes").await > 0.0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed().as_secs_f64()
}

struct Phase {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    objects: u64,
}

/// Run `clients` writers for `secs`; each calls `one(client, worker, i)`,
/// a request writing `per` objects.
async fn phase<F, Fut>(clients: u64, secs: u64, per: u64, one: F) -> Phase
where
    F: Fn(reqwest::Client, u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (one, stop, acked) = (one.clone(), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut lat = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                one(client.clone(), w, i).await;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                acked.fetch_add(per, Ordering::Relaxed);
                i += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = acked.load(Ordering::Relaxed);
    Phase {
        per_s: n as f64 / elapsed,
        p50_ms: pct(&mut lat, 0.5),
        p99_ms: pct(&mut lat, 0.99),
        objects: n,
    }
}

async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let secs: u64 = arg("--seconds").map_or(10, |s| s.parse().unwrap());
    let clients: u64 = arg("--clients").map_or(16, |s| s.parse().unwrap());
    let flush_ms = arg("--flush-ms").unwrap_or_else(|| "1000".into());
    let batch: u64 = arg("--batch").map_or(8, |s| s.parse().unwrap());
    let work = arg("--work").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let tmp = tempfile::tempdir_in(&work).unwrap();
    // SAFETY: set before any thread of ours reads the environment (the
    // server is a child process that inherits it).
    unsafe { std::env::set_var("NEUROCUBE__OBJECTS__FLUSH_INTERVAL_MS", &flush_ms) };
    let server = start_server(tmp.path(), None);
    let base = server.url.clone();
    let client = reqwest::Client::new();
    put(
        &client,
        &format!("{base}/v1/datasets/b"),
        json!({"voxel_size": [4, 4, 40], "extent": EXTENT, "levels": 1}),
    )
    .await;
    for ch in ["today", "anno"] {
        put(
            &client,
            &format!("{base}/v1/datasets/b/channels/{ch}"),
            json!({"type": "segmentation", "dtype": "uint64", "chunk_size": [128, 128, 16]}),
        )
        .await;
    }
    put(
        &client,
        &format!("{base}/v1/datasets/b/tables/syn"),
        json!({"schema": "ramon_synapse", "voxel_resolution": [4, 4, 40], "segmentation": "anno"}),
    )
    .await;
    eprintln!(
        "{clients} clients, {secs} s per phase, 8x8x4-voxel objects at random positions of an {}x{}x{} uint64 channel, flush interval {flush_ms} ms",
        EXTENT[0], EXTENT[1], EXTENT[2]
    );

    // Today's path: one npy PUT per object.
    let b = base.clone();
    let today = phase(clients, secs, 1, move |client, w, i| {
        let b = b.clone();
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w << 32 | i);
            let c = corner(&mut rng);
            let label = (w << 32 | i) + 1;
            let data: Vec<u8> = std::iter::repeat_n(label.to_le_bytes(), 256)
                .flatten()
                .collect();
            let r = client
                .put(format!(
                    "{b}/b/today/npy/0/{},{}/{},{}/{},{}/",
                    c[0],
                    c[0] + OBJ[0],
                    c[1],
                    c[1] + OBJ[1],
                    c[2],
                    c[2] + OBJ[2]
                ))
                .body(npy_u64(OBJ, &data))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    })
    .await;
    eprintln!(
        "today's path (one npy PUT per object): {:.0} objects/s, p50 {:.1} ms, p99 {:.1} ms ({} objects)",
        today.per_s, today.p50_ms, today.p99_ms, today.objects
    );

    // Objects through NeuroBlaze.
    let chunk_writes0 = metric(&client, &base, "neurocube_label_chunk_writes_total").await;
    let b = base.clone();
    let objects = phase(clients, secs, 1, move |client, w, i| {
        let b = b.clone();
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(!(w << 32 | i));
            let r = client
                .post(format!("{b}/v1/datasets/b/tables/syn/objects"))
                .header("content-type", "application/json")
                .body(object_json(&mut rng))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
    })
    .await;
    let commits = metric(&client, &base, "neurocube_annotation_commit_seconds_count").await;
    let commit_ms = 1e3 * metric(&client, &base, "neurocube_annotation_commit_seconds_sum").await
        / commits.max(1.0);
    eprintln!(
        "objects (POST .../objects, NeuroBlaze): {:.0} durable objects/s, p50 {:.1} ms, p99 {:.1} ms ({} objects); {:.1}x today's path; {:.1} objects per group commit, {commit_ms:.2} ms per commit",
        objects.per_s,
        objects.p50_ms,
        objects.p99_ms,
        objects.objects,
        objects.per_s / today.per_s,
        objects.objects as f64 / commits.max(1.0),
    );
    // The flusher stores what is left.
    let pending = metric(&client, &base, "neurocube_label_pending_bytes").await;
    let no_drain = neurocube_benches::synbench::flag("--no-drain");
    let drain_s = if no_drain {
        0.0
    } else {
        drain(&client, &base).await
    };
    let chunk_writes =
        metric(&client, &base, "neurocube_label_chunk_writes_total").await - chunk_writes0;
    eprintln!(
        "flusher: {:.0} MB pending at the end of the storm, stored in {drain_s:.1} s more; {chunk_writes:.0} chunk writes for {} objects = {:.2} chunk writes per object",
        pending / 1e6,
        objects.objects,
        chunk_writes / objects.objects as f64
    );

    // The same objects, `--batch` per request, as a pipeline sends them
    // once it has many: as NDJSON, then as Arrow, each into an empty buffer.
    let bulk = if batch > 1 && !no_drain {
        Some(bulk_phase(&base, clients, secs, batch, false, today.per_s).await)
    } else {
        None
    };
    let bulk_arrow = if batch > 1 && !no_drain {
        let drained = drain(&client, &base).await;
        eprintln!("flusher: the NDJSON objects stored in {drained:.1} s");
        Some(bulk_phase(&base, clients, secs, batch, true, today.per_s).await)
    } else {
        None
    };
    println!(
        "{}",
        json!({
            "clients": clients,
            "seconds": secs,
            "flush_interval_ms": flush_ms,
            "today_objects_per_s": today.per_s,
            "today_p50_ms": today.p50_ms,
            "today_p99_ms": today.p99_ms,
            "objects_per_s": objects.per_s,
            "objects_p50_ms": objects.p50_ms,
            "objects_p99_ms": objects.p99_ms,
            "ratio": objects.per_s / today.per_s,
            "pending_mb_after": pending / 1e6,
            "drain_s": drain_s,
            "chunk_writes_per_object": chunk_writes / objects.objects as f64,
            "batch": batch,
            "bulk_objects_per_s": bulk.as_ref().map(|p| p.per_s),
            "bulk_request_p50_ms": bulk.as_ref().map(|p| p.p50_ms),
            "bulk_request_p99_ms": bulk.as_ref().map(|p| p.p99_ms),
            "bulk_ratio": bulk.as_ref().map(|p| p.per_s / today.per_s),
            "bulk_arrow_objects_per_s": bulk_arrow.as_ref().map(|p| p.per_s),
            "bulk_arrow_request_p50_ms": bulk_arrow.as_ref().map(|p| p.p50_ms),
            "bulk_arrow_request_p99_ms": bulk_arrow.as_ref().map(|p| p.p99_ms),
            "bulk_arrow_ratio": bulk_arrow.as_ref().map(|p| p.per_s / today.per_s),
        })
    );
}

/// `batch` objects per request, as NDJSON or Arrow, for `secs`.
async fn bulk_phase(
    base: &str,
    clients: u64,
    secs: u64,
    batch: u64,
    arrow: bool,
    today: f64,
) -> Phase {
    let b = base.to_string();
    let bulk = phase(clients, secs, batch, move |client, w, i| {
        let b = b.clone();
        async move {
            let mut rng =
                rand::rngs::StdRng::seed_from_u64(w << 48 | i << 2 | 1 | u64::from(arrow) << 1);
            let (ct, body) = if arrow {
                (
                    "application/vnd.apache.arrow.stream",
                    objects_arrow(&mut rng, batch),
                )
            } else {
                let mut body = String::with_capacity(batch as usize * 6200);
                for _ in 0..batch {
                    body.push_str(&object_json(&mut rng));
                    body.push('\n');
                }
                ("application/x-ndjson", body.into_bytes())
            };
            let r = client
                .post(format!("{b}/v1/datasets/b/tables/syn/objects"))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
    })
    .await;
    eprintln!(
        "objects, {batch} per request ({}): {:.0} durable objects/s, request p50 {:.1} ms, p99 {:.1} ms ({} objects); {:.1}x today's path",
        if arrow { "Arrow" } else { "NDJSON" },
        bulk.per_s,
        bulk.p50_ms,
        bulk.p99_ms,
        bulk.objects,
        bulk.per_s / today
    );
    bulk
}
