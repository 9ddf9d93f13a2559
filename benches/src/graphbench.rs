//! The graph endpoint's figures inside the annotation benchmark (issue 12),
//! on the same table and in the same run as PostgreSQL:
//! - the induced subgraph of the ~1,500 proofread neurons as a CSV edge
//!   list (median of 5); PostgreSQL: `GROUP BY (pre, post)` over the same
//!   rows through its root-id indexes;
//! - the connectivity PNG of those neurons, ordered by cell type (median of 3);
//! - the whole edge list as CSV: time, edges, the server's peak RSS;
//!   PostgreSQL: `COPY (SELECT ... GROUP BY ...) TO STDOUT`.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use crate::proc::peak_rss_mib;
use crate::synbench::{Data, median};

/// The cell types of the proofread neurons, as a node table (MICrONS has
/// manual types for about that many), created before the version.
pub async fn cell_types(client: &reqwest::Client, base: &str, data: &Data) {
    let r = client
        .put(format!("{base}/v1/datasets/b/tables/cell_types"))
        .json(&json!({"schema": "cell_type_local", "voxel_resolution": [4, 4, 40]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let rows: Vec<Value> = data
        .neurons
        .iter()
        .filter(|n| n.proofread)
        .map(|n| {
            json!({"pt_position": n.soma, "pt_root_id": n.root_id, "pt_supervoxel_id": n.root_id,
                   "classification_system": n.class, "cell_type": n.cell_type})
        })
        .collect();
    let r = client
        .post(format!("{base}/v1/datasets/b/tables/cell_types/rows"))
        .json(&rows)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn timed_post(client: &reqwest::Client, url: &str, body: &Value) -> (f64, bytes::Bytes) {
    let t = Instant::now();
    let r = client.post(url).json(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let b = r.bytes().await.unwrap();
    (t.elapsed().as_secs_f64(), b)
}

/// neurocube's graph figures (`work`: where the PNG is kept).
pub async fn neurocube(
    client: &reqwest::Client,
    base: &str,
    pid: u32,
    version: u64,
    data: &Data,
    label: &str,
    work: &Path,
) -> Value {
    let url = format!("{base}/v1/datasets/b/graph");
    let body = json!({"version": version, "ids": data.proofread, "format": "csv"});
    let mut times = Vec::new();
    let mut edges = 0;
    for _ in 0..5 {
        let (s, b) = timed_post(client, &url, &body).await;
        times.push(s);
        edges = b.iter().filter(|c| **c == b'\n').count() - 1;
    }
    let subgraph = median(times);
    eprintln!(
        "[{label}] graph: proofread induced subgraph {edges} edges in {subgraph:.3} s (median of 5)"
    );
    let body = json!({"version": version, "ids": data.proofread, "format": "png"});
    let mut times = Vec::new();
    let mut png = bytes::Bytes::new();
    for _ in 0..3 {
        let (s, b) = timed_post(client, &url, &body).await;
        times.push(s);
        png = b;
    }
    let png_s = median(times);
    let name = label.split(':').next().unwrap_or("server");
    let path = work.join(format!("graph-proofread-{name}.png"));
    std::fs::write(&path, &png).unwrap();
    eprintln!(
        "[{label}] graph: connectivity PNG of the proofread neurons ({} KB, {}) in {png_s:.3} s (median of 3)",
        png.len() / 1000,
        path.display()
    );
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = peak_rss_mib(pid);
    let t = Instant::now();
    let mut r = client
        .get(format!("{url}?format=csv&version={version}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(c) = r.chunk().await.unwrap() {
        bytes += c.len() as u64;
        lines += c.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let whole = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib(pid);
    eprintln!(
        "[{label}] graph: whole edge list as CSV, {} edges ({:.0} MB) in {whole:.2} s; server RSS {before:.0} MiB before, peak {peak:.0} MiB",
        lines - 1,
        bytes as f64 / 1e6
    );
    json!({
        "graph_subgraph_edges": edges,
        "graph_subgraph_s": subgraph,
        "graph_png_s": png_s,
        "graph_all_edges": lines - 1,
        "graph_all_csv_s": whole,
        "graph_all_rss_before_mib": before,
        "graph_all_rss_peak_mib": peak,
    })
}

/// PostgreSQL's graph figures on the same table.
pub async fn postgres(c: &tokio_postgres::Client, data: &Data) -> Value {
    let ids: Vec<i64> = data.proofread.iter().map(|x| *x as i64).collect();
    let q = c
        .prepare("SELECT pre_pt_root_id, post_pt_root_id, count(*), sum(size) FROM synapses WHERE pre_pt_root_id = ANY($1) AND post_pt_root_id = ANY($1) AND valid AND pre_pt_root_id <> post_pt_root_id GROUP BY 1, 2")
        .await
        .unwrap();
    let mut times = Vec::new();
    let mut edges = 0;
    for _ in 0..5 {
        let t = Instant::now();
        edges = c.query(&q, &[&ids]).await.unwrap().len();
        times.push(t.elapsed().as_secs_f64());
    }
    let subgraph = median(times);
    eprintln!(
        "[postgres] graph: proofread induced subgraph {edges} edges in {subgraph:.3} s (median of 5)"
    );
    let t = Instant::now();
    let out = c
        .copy_out("COPY (SELECT pre_pt_root_id, post_pt_root_id, count(*), sum(size) FROM synapses WHERE valid AND pre_pt_root_id <> post_pt_root_id GROUP BY 1, 2) TO STDOUT (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(out);
    let mut lines = 0u64;
    while let Some(chunk) = futures::StreamExt::next(&mut out).await {
        lines += chunk.unwrap().iter().filter(|b| **b == b'\n').count() as u64;
    }
    let whole = t.elapsed().as_secs_f64();
    eprintln!("[postgres] graph: whole edge list as CSV (GROUP BY), {lines} edges in {whole:.2} s");
    json!({
        "graph_subgraph_edges": edges,
        "graph_subgraph_s": subgraph,
        "graph_all_edges": lines,
        "graph_all_csv_s": whole,
    })
}
