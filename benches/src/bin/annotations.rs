//! The annotation store against its peer, CAVE's own engine (PostgreSQL
//! 15 and PostGIS with CAVE's indexes), on the same generated MICrONS-like
//! synapse table, in one run:
//!
//! ```sh
//! cargo build --release -p neurocube-server -p neurocube-benches
//! target/release/annotations --rows 10000000 [--backend embedded,cassandra] [--no-peer] [--work DIR] [--keep]
//! target/release/annotations --rows 10000000 --queries-on DIR [--version N]   # reads only, on a kept run's data
//! # --probe-log FILE: each synapse_query probe's rows and time, tab-separated
//! # --writes-only: the bulk upload and the write storm, nothing else
//! ```
//!
//! The table: `--rows` synapses among the ~116,000 neurons of a virtual
//! 16384 × 16384 × 256 demo (4 × 4 × 40 nm), Pareto out- and in-degrees,
//! ~1,500 proofread neurons holding ~11.5% of synapse ends (so their
//! induced subgraph is ~1.3% of the synapses, as in seed 000), root ids
//! given (the table is not bound to a segmentation volume).
//!
//! Figures, each printed as it is measured and as JSON at the end:
//! - bulk upload: the CSV in chunks of 100,000 rows from 4 parallel clients
//!   (rows/s, durable: fsync); PostgreSQL: 4 parallel `COPY`s into the table
//!   with its indexes;
//! - write storm: 64 clients each writing one synapse per request for 10 s
//!   (acknowledged rows/s); PostgreSQL: 64 connections, one INSERT per commit;
//! - materializing a version (neurocube only);
//! - (the server is left to finish its background compaction first)
//! - `synapse_query` for one post root id, 1,000 ids in turn (p50, p99),
//!   from a client on one thread (as curl, requests and caveclient are) and
//!   again from the bench's shared multi-threaded runtime (whose thread
//!   hand-offs add about 0.2 ms to a small answer here); PostgreSQL: the
//!   same SELECT on the B-tree index, the same two ways;
//! - seed 000's query (all synapses among the proofread neurons), median of 5;
//! - the whole table as one Arrow query: time and the server's peak RSS;
//! - the graph endpoint (see `neurocube_benches::graphbench`): the proofread
//!   induced subgraph, its connectivity PNG, the whole edge list as CSV.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use neurocube_benches::pgpeer::{bench_postgres, on_one_thread};
use neurocube_benches::proc::{peak_rss_mib, settle};
use neurocube_benches::synbench::{
    Data, EXTENT, arg, flag, generate, median, pct, put, start_server,
};
use serde_json::{Value, json};

async fn bench_neurocube(data: &Data, store: Option<&str>, work: &Path) -> Value {
    let tmp = tempfile::tempdir_in(work).unwrap();
    let dir = tmp.path().to_path_buf();
    let _guard = if flag("--keep") {
        eprintln!("data kept in {}", dir.display());
        let _ = tmp.keep();
        None
    } else {
        Some(tmp)
    };
    let server = start_server(&dir, store);
    let pid = server.child.id();
    let base = server.url.clone();
    let client = reqwest::Client::new();
    put(
        &client,
        &format!("{base}/v1/datasets/b"),
        json!({"voxel_size": [4, 4, 40], "extent": EXTENT}),
    )
    .await;
    put(
        &client,
        &format!("{base}/v1/datasets/b/tables/syn"),
        json!({"schema": "synapse", "voxel_resolution": [4, 4, 40]}),
    )
    .await;
    let label = store.unwrap_or("embedded");
    // Bulk upload: 4 clients.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let chunks: Arc<Vec<String>> = Arc::new(data.chunks.clone());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, base, next, chunks) =
            (client.clone(), base.clone(), next.clone(), chunks.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(c) = chunks.get(i) else { return };
                let r = client
                    .post(format!("{base}/v1/datasets/b/tables/syn/rows"))
                    .header("content-type", "text/csv")
                    .body(c.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let upload_secs = started.elapsed().as_secs_f64();
    let upload = data.rows.len() as f64 / upload_secs;
    eprintln!(
        "[{label}] bulk upload (CSV, 4 clients): {} rows in {upload_secs:.1} s = {upload:.0} rows/s",
        data.rows.len()
    );

    let mut figures =
        json!({"backend": label, "rows": data.rows.len(), "upload_rows_per_s": upload});
    if !flag("--writes-only") {
        figures = reads_and_graph(&client, &base, pid, &dir, data, label, work, figures).await;
    }
    storm(&client, &base, label, figures).await
}

/// Materialize a version, then everything read from it.
#[allow(clippy::too_many_arguments)]
async fn reads_and_graph(
    client: &reqwest::Client,
    base: &str,
    pid: u32,
    dir: &Path,
    data: &Data,
    label: &str,
    work: &Path,
    mut figures: Value,
) -> Value {
    neurocube_benches::graphbench::cell_types(client, base, data).await;

    // Materialize a version.
    let started = Instant::now();
    let v: Value = client
        .post(format!("{base}/v1/datasets/b/versions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = v["version"].as_u64().unwrap();
    loop {
        let v: Value = client
            .get(format!("{base}/v1/datasets/b/versions/{version}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "available" {
            break;
        }
        assert_ne!(v["status"], "failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mat_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "[{label}] materialize version {version}: {mat_secs:.1} s = {:.0} rows/s",
        data.rows.len() as f64 / mat_secs
    );

    settle(label, pid).await;

    let q = query_figures(client, base, data, version, label).await;
    if flag("--keep") {
        let path = dir.join("subgraph-query.json");
        std::fs::write(&path, subgraph_query(data, version).to_string()).unwrap();
        eprintln!("subgraph query body in {}", path.display());
    }

    let graph =
        neurocube_benches::graphbench::neurocube(client, base, pid, version, data, label, work)
            .await;

    // The whole table as one query; the server's peak memory.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = peak_rss_mib(pid);
    let t = Instant::now();
    let mut r = client
        .post(format!(
            "{base}/v1/datasets/b/tables/syn/query?format=arrow"
        ))
        .json(&json!({"version": version}))
        .send()
        .await
        .unwrap();
    let mut bytes = 0u64;
    while let Some(c) = r.chunk().await.unwrap() {
        bytes += c.len() as u64;
    }
    let full_secs = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib(pid);
    eprintln!(
        "[{label}] whole table as Arrow: {:.0} MB in {full_secs:.1} s ({:.0} rows/s); server RSS {before:.0} MiB before, peak {peak:.0} MiB",
        bytes as f64 / 1e6,
        data.rows.len() as f64 / full_secs
    );

    let fields = json!({
        "materialize_s": mat_secs,
        "synapse_query_p50_ms": q.p50,
        "synapse_query_p99_ms": q.p99,
        "synapse_query_arrow_p50_ms": q.arrow_p50,
        "synapse_query_arrow_p99_ms": q.arrow_p99,
        "synapse_query_shared_rt_p50_ms": q.shared_p50,
        "synapse_query_shared_rt_p99_ms": q.shared_p99,
        "synapse_query_arrow_shared_rt_p50_ms": q.shared_arrow_p50,
        "synapse_query_arrow_shared_rt_p99_ms": q.shared_arrow_p99,
        "subgraph_rows": q.induced,
        "subgraph_s": q.subgraph,
        "full_query_s": full_secs,
        "full_query_peak_rss_mib": peak,
        "full_query_rss_before_mib": before,
        "graph": graph,
    });
    for (k, v) in fields.as_object().unwrap() {
        figures[k] = v.clone();
    }
    figures
}

/// Write storm: 64 clients, one synapse per request, 10 s.
async fn storm(client: &reqwest::Client, base: &str, label: &str, mut figures: Value) -> Value {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for w in 0..64u64 {
        let (client, base, stop, acked) = (
            client.clone(),
            base.to_string(),
            stop.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let url = format!("{base}/v1/datasets/b/tables/syn/rows");
            while !stop.load(Ordering::Relaxed) {
                let body = format!(
                    r#"[{{"pre_pt_position":[{},{},1],"post_pt_position":[200,{},2],"size":1.0,"pre_pt_root_id":{},"post_pt_root_id":{}}}]"#,
                    100 + w,
                    100 + i % 1000,
                    200 + w,
                    w + 1,
                    i + 1
                );
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                acked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let storm = acked.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let commits = metric("neurocube_annotation_commit_seconds_count");
    eprintln!(
        "[{label}] write storm, 64 clients x 1 row per request: {storm:.0} acknowledged durable rows/s ({:.1} rows per group commit, {:.2} ms per commit on average, over the whole run)",
        metric("neurocube_annotation_batch_rows_sum") / commits.max(1.0),
        1e3 * metric("neurocube_annotation_commit_seconds_sum") / commits.max(1.0)
    );
    figures["storm_rows_per_s"] = json!(storm);
    figures
}

/// seed 000's query: every synapse among the proofread neurons.
fn subgraph_query(data: &Data, version: u64) -> Value {
    json!({"version": version, "filter_in_dict": {"pre_pt_root_id": data.proofread, "post_pt_root_id": data.proofread}, "desired_resolution": [1, 1, 1], "split_positions": true})
}

/// The read figures on a settled server: `synapse_query` by one post root
/// id and the proofread subgraph.
async fn query_figures(
    client: &reqwest::Client,
    base: &str,
    data: &Data,
    version: u64,
    label: &str,
) -> QueryFigures {
    // synapse_query by one post root id, as JSON lines (the endpoint's
    // default) and as Arrow (what caveclient asks for), each from a client
    // on one thread (as curl, requests and caveclient are) and from the
    // bench's shared multi-threaded runtime.
    let mut figures = Vec::new();
    // `--probe-log FILE`: each probe's label, client, format, id, rows and ms.
    let mut probe_log = arg("--probe-log").map(|p| std::fs::File::create(p).unwrap());
    for (runtime, format) in [
        // A first pass warms the caches (its figures are printed as "cold"
        // and not kept): each figure after it is warm, whatever its order.
        ("first pass (cold caches), one-thread client", "jsonl"),
        ("one-thread client", "jsonl"),
        ("one-thread client", "arrow"),
        ("client on the shared runtime", "jsonl"),
        ("client on the shared runtime", "arrow"),
    ] {
        let url = format!("{base}/v1/datasets/b/synapse_query?format={format}");
        let probes = data.probes.clone();
        let answers = if runtime.contains("shared") {
            probe_synapse_query(client.clone(), url, probes, version).await
        } else {
            on_one_thread(move || probe_synapse_query(reqwest::Client::new(), url, probes, version))
        };
        let mut lat = Vec::new();
        let mut sizes = Vec::new();
        for (i, (id, body, ms)) in answers.into_iter().enumerate() {
            let n = if format == "arrow" {
                arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
                    .unwrap()
                    .map(|b| b.unwrap().num_rows())
                    .sum::<usize>()
            } else {
                body.iter().filter(|b| **b == b'\n').count()
            };
            // The first 50 warm the connection and the caches.
            if i >= 50 {
                lat.push(ms);
            }
            sizes.push(n as f64);
            if let Some(log) = &mut probe_log {
                writeln!(log, "{label}\t{runtime}\t{format}\t{id}\t{n}\t{ms:.4}").unwrap();
            }
        }
        let mean = sizes.iter().sum::<f64>() / sizes.len() as f64;
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        eprintln!(
            "[{label}] synapse_query by one post root id ({format}, {runtime}): p50 {p50:.3} ms, p99 {p99:.3} ms (rows per answer: mean {mean:.0}, median {:.0}, p99 {:.0})",
            pct(&mut sizes, 0.5),
            pct(&mut sizes, 0.99)
        );
        figures.push((p50, p99));
    }
    let [
        _cold,
        (p50, p99),
        (arrow_p50, arrow_p99),
        (shared_p50, shared_p99),
        (shared_arrow_p50, shared_arrow_p99),
    ] = figures[..]
    else {
        unreachable!("five runs")
    };

    // Seed 000's proofread subgraph.
    let query = subgraph_query(data, version);
    let mut times = Vec::new();
    let mut induced = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = client
            .post(format!(
                "{base}/v1/datasets/b/tables/syn/query?format=arrow"
            ))
            .json(&query)
            .send()
            .await
            .unwrap();
        let body = r.bytes().await.unwrap();
        times.push(t.elapsed().as_secs_f64());
        let reader =
            arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
                .unwrap();
        induced = reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
    }
    let subgraph = median(times);
    eprintln!("[{label}] proofread subgraph: {induced} rows in {subgraph:.3} s (median of 5)");
    QueryFigures {
        p50,
        p99,
        arrow_p50,
        arrow_p99,
        shared_p50,
        shared_p99,
        shared_arrow_p50,
        shared_arrow_p99,
        induced,
        subgraph,
    }
}

/// Each probe's `synapse_query` answer: the id, the body and the time from
/// sending to the last byte (ms).
async fn probe_synapse_query(
    client: reqwest::Client,
    url: String,
    probes: Vec<u64>,
    version: u64,
) -> Vec<(u64, bytes::Bytes, f64)> {
    let mut out = Vec::with_capacity(probes.len());
    for id in probes {
        let t = Instant::now();
        let r = client
            .post(&url)
            .json(&json!({"post_ids": [id], "version": version}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "synapse_query for {id}");
        let body = r.bytes().await.unwrap();
        out.push((id, body, t.elapsed().as_secs_f64() * 1e3));
    }
    out
}

/// What [`query_figures`] measures.
struct QueryFigures {
    /// `synapse_query` as JSON lines, ms.
    p50: f64,
    p99: f64,
    /// The same as Arrow, ms.
    arrow_p50: f64,
    arrow_p99: f64,
    /// The same two from the bench's shared multi-threaded runtime, ms.
    shared_p50: f64,
    shared_p99: f64,
    shared_arrow_p50: f64,
    shared_arrow_p99: f64,
    /// The proofread subgraph: rows, median seconds.
    induced: usize,
    subgraph: f64,
}

/// `--queries-on DIR [--version N]`: only the read figures, on the data an
/// earlier `--keep` run left in DIR (its version 1 by default), for
/// measuring a change to the
/// read path without uploading and materializing again.
async fn queries_on(data: &Data, dir: &Path) {
    let server = start_server(dir, None);
    let client = reqwest::Client::new();
    settle("embedded", server.child.id()).await;
    let version = arg("--version").map_or(1, |v| v.parse().unwrap());
    query_figures(&client, &server.url, data, version, "embedded").await;
}

#[tokio::main]
async fn main() {
    let rows: u64 = arg("--rows").map_or(10_000_000, |r| r.parse().unwrap());
    let work = PathBuf::from(arg("--work").unwrap_or_else(|| "/tmp".into()));
    let backends = arg("--backend").unwrap_or_else(|| "embedded".into());
    let data = generate(rows);
    if let Some(dir) = arg("--queries-on") {
        queries_on(&data, Path::new(&dir)).await;
        return;
    }
    let mut out = Vec::new();
    for backend in backends.split(',') {
        match backend {
            "embedded" => out.push(bench_neurocube(&data, None, &work).await),
            "cassandra" => {
                let node = std::env::var("NEUROCUBE_CASSANDRA")
                    .unwrap_or_else(|_| "127.0.0.1:9042".into());
                let uri = format!(
                    "cassandra://{node}/nc_bench_{}",
                    uuid::Uuid::new_v4().simple()
                );
                out.push(bench_neurocube(&data, Some(&uri), &work).await);
            }
            other => panic!("--backend {other}: use embedded, cassandra or both, comma-separated"),
        }
    }
    if !flag("--no-peer") {
        out.push(bench_postgres(&data, &work).await);
    }
    ratios(&out);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", serde_json::to_string_pretty(&out).unwrap()).unwrap();
}

/// Every later backend's figures as a ratio to the first one's, measured in
/// this run (> 1: the later one is faster, for rates and for times alike).
fn ratios(out: &[Value]) {
    let Some((first, rest)) = out.split_first() else {
        return;
    };
    let figures = [
        ("upload_rows_per_s", true),
        ("storm_rows_per_s", true),
        ("materialize_s", false),
        ("synapse_query_p50_ms", false),
        ("synapse_query_p99_ms", false),
        ("synapse_query_arrow_p50_ms", false),
        ("synapse_query_arrow_p99_ms", false),
        ("synapse_query_shared_rt_p50_ms", false),
        ("synapse_query_shared_rt_p99_ms", false),
        ("subgraph_s", false),
        ("full_query_s", false),
    ];
    for other in rest {
        let mut line = format!(
            "{} speed relative to {} (above 1 = {} faster):",
            other["backend"], first["backend"], other["backend"]
        );
        for (name, rate) in figures {
            if let (Some(a), Some(b)) = (first[name].as_f64(), other[name].as_f64()) {
                let r = if rate { b / a } else { a / b };
                line.push_str(&format!(" {name} {r:.2}x"));
            }
        }
        for name in ["graph_subgraph_s", "graph_all_csv_s", "graph_png_s"] {
            if let (Some(a), Some(b)) =
                (first["graph"][name].as_f64(), other["graph"][name].as_f64())
            {
                line.push_str(&format!(" {name} {:.2}x", a / b));
            }
        }
        eprintln!("{line}");
    }
}
