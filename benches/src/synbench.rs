//! The MICrONS-like synapse table of the annotation benchmark, and the
//! helpers its binaries share (arguments, the server process).

#![allow(missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use neurocube_service::demo::synapses::{Neuron, SynapseRow, neurons, synapses_with};
use serde_json::Value;

pub const EXTENT: [u64; 3] = [16384, 16384, 256];
pub const CHUNK: usize = 100_000;

pub fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn median(mut v: Vec<f64>) -> f64 {
    pct(&mut v, 0.5)
}

pub struct Server {
    /// The process.
    pub child: Child,
    /// Its base URL.
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server(data: &Path, store: Option<&str>) -> Server {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().join("neurocube");
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(data)
        .env("NEUROCUBE__LOG__LEVEL", "warn")
        .env(
            "NEUROCUBE__STORE__DURABILITY",
            std::env::var("BENCH_DURABILITY").unwrap_or_else(|_| "fsync".into()),
        )
        // The same memory for cached data as PostgreSQL's shared_buffers.
        .env("NEUROCUBE__STORE__CACHE_BYTES", "2147483648")
        .env("NEUROCUBE__ANNOTATIONS__MAX_UPLOAD_BYTES", "1073741824")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(s) = store {
        cmd.args(["--store", s]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    Server { child, url }
}

pub struct Data {
    /// The neurons.
    pub neurons: Vec<Neuron>,
    /// The synapses.
    pub rows: Vec<SynapseRow>,
    /// CSV chunks of 100,000 rows (header included), neurocube's columns.
    pub chunks: Vec<String>,
    /// Root ids of the proofread neurons.
    pub proofread: Vec<u64>,
    /// Post root ids to query, one per draw.
    pub probes: Vec<u64>,
}

pub fn generate(n: u64) -> Data {
    let started = Instant::now();
    let neurons = neurons(EXTENT);
    let rows = synapses_with(&neurons, EXTENT, n, 0, false);
    let proofread: Vec<u64> = neurons
        .iter()
        .filter(|x| x.proofread)
        .map(|x| x.root_id)
        .collect();
    let header = "pre_pt_position_x,pre_pt_position_y,pre_pt_position_z,post_pt_position_x,post_pt_position_y,post_pt_position_z,ctr_pt_position_x,ctr_pt_position_y,ctr_pt_position_z,size,pre_pt_supervoxel_id,pre_pt_root_id,post_pt_supervoxel_id,post_pt_root_id\n";
    let chunks: Vec<String> = {
        use rayon::prelude::*;
        rows.par_chunks(CHUNK)
            .map(|c| {
                let mut s = String::with_capacity(c.len() * 110 + header.len());
                s.push_str(header);
                for r in c {
                    let (a, b) = (
                        neurons[r.partners.0 as usize].root_id,
                        neurons[r.partners.1 as usize].root_id,
                    );
                    s.push_str(&format!(
                        "{},{},{},{},{},{},{},{},{},{},{a},{a},{b},{b}\n",
                        r.pre[0],
                        r.pre[1],
                        r.pre[2],
                        r.post[0],
                        r.post[1],
                        r.post[2],
                        r.ctr[0],
                        r.ctr[1],
                        r.ctr[2],
                        r.size
                    ));
                }
                s
            })
            .collect()
    };
    // Probe ids: posts of random synapses (busy neurons come up as often as
    // users ask for them).
    let probes: Vec<u64> = (0..1000u64)
        .map(|i| {
            let r = &rows[((i * 2_654_435_761) % rows.len() as u64) as usize];
            neurons[r.partners.1 as usize].root_id
        })
        .collect();
    let induced = rows
        .iter()
        .filter(|r| {
            neurons[r.partners.0 as usize].proofread && neurons[r.partners.1 as usize].proofread
        })
        .count();
    eprintln!(
        "data: {} synapses among {} neurons ({} proofread; their induced subgraph {} synapses = {:.2}%), generated in {:.1} s",
        rows.len(),
        neurons.len(),
        proofread.len(),
        induced,
        100.0 * induced as f64 / rows.len() as f64,
        started.elapsed().as_secs_f64()
    );
    Data {
        neurons,
        rows,
        chunks,
        proofread,
        probes,
    }
}

pub async fn put(client: &reqwest::Client, url: &str, v: Value) {
    let r = client.put(url).json(&v).send().await.unwrap();
    assert!(
        r.status().is_success(),
        "{url}: {}",
        r.text().await.unwrap()
    );
}
