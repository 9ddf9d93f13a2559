//! The benchmark's peer: CAVE's own engine, PostgreSQL 15 and PostGIS with
//! CAVE's indexes (`peer/postgres.sh` starts it), loaded with the same
//! generated synapse table and measured the same ways as neurocube in
//! `annotations`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // benches: a panic is a failure report

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::synbench::{CHUNK, Data, median, pct};

pub async fn bench_postgres(data: &Data, work: &Path) -> Value {
    let dir = work.join("pgdata");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peer/postgres.sh");
    let port = "55432";
    let ok = Command::new(&script)
        .args(["start", dir.to_str().unwrap(), port])
        .status()
        .unwrap();
    assert!(ok.success());
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let connect = || async {
        let (c, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    };
    let c = connect().await;
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS postgis;
         DROP TABLE IF EXISTS synapses;
         CREATE TABLE synapses (
            id bigserial PRIMARY KEY,
            created timestamptz NOT NULL DEFAULT now(),
            deleted timestamptz,
            superceded_id bigint,
            valid boolean NOT NULL DEFAULT true,
            pre_pt_position geometry(POINTZ) NOT NULL,
            pre_pt_supervoxel_id bigint,
            pre_pt_root_id bigint,
            post_pt_position geometry(POINTZ) NOT NULL,
            post_pt_supervoxel_id bigint,
            post_pt_root_id bigint,
            ctr_pt_position geometry(POINTZ),
            size double precision);
         CREATE INDEX ON synapses (pre_pt_root_id);
         CREATE INDEX ON synapses (post_pt_root_id);
         CREATE INDEX ON synapses (pre_pt_supervoxel_id);
         CREATE INDEX ON synapses (post_pt_supervoxel_id);
         CREATE INDEX ON synapses USING gist (pre_pt_position gist_geometry_ops_nd);
         CREATE INDEX ON synapses USING gist (post_pt_position gist_geometry_ops_nd);
         CREATE INDEX ON synapses USING gist (ctr_pt_position gist_geometry_ops_nd);",
    )
    .await
    .unwrap();
    // 4 parallel COPYs of the same rows (positions as WKT).
    let pg_chunks: Vec<String> = {
        use rayon::prelude::*;
        data.rows
            .par_chunks(CHUNK)
            .map(|c| {
                let mut s = String::with_capacity(c.len() * 160);
                for r in c {
                    let (a, b) = (
                        data.neurons[r.partners.0 as usize].root_id,
                        data.neurons[r.partners.1 as usize].root_id,
                    );
                    s.push_str(&format!(
                        "POINTZ({} {} {}),{a},{a},POINTZ({} {} {}),{b},{b},POINTZ({} {} {}),{}\n",
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
    let pg_chunks = Arc::new(pg_chunks);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (chunks, next) = (pg_chunks.clone(), next.clone());
        let c = connect().await;
        tasks.push(tokio::spawn(async move {
            use futures::SinkExt;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(chunk) = chunks.get(i) else { return };
                let sink = c
                    .copy_in("COPY synapses (pre_pt_position, pre_pt_supervoxel_id, pre_pt_root_id, post_pt_position, post_pt_supervoxel_id, post_pt_root_id, ctr_pt_position, size) FROM STDIN (FORMAT csv)")
                    .await
                    .unwrap();
                futures::pin_mut!(sink);
                sink.send(bytes::Bytes::from(chunk.clone())).await.unwrap();
                sink.finish().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();
    let load = data.rows.len() as f64 / load_secs;
    eprintln!("[postgres] COPY with indexes, 4 clients: {load:.0} rows/s ({load_secs:.1} s)");
    c.batch_execute("ANALYZE synapses").await.unwrap();

    // The same two ways as neurocube's probes: a client on one thread (its
    // connection driven on that thread), then the shared runtime.
    let one = {
        let (conn, probes) = (conn.clone(), data.probes.clone());
        on_one_thread(move || async move {
            let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            // A first pass warms the caches, as on neurocube's side.
            pg_probes(&c, &probes).await;
            pg_probes(&c, &probes).await
        })
    };
    let shared = pg_probes(&c, &data.probes).await;
    let mut figures = Vec::new();
    for (runtime, mut lat) in [
        ("one-thread client", one),
        ("client on the shared runtime", shared),
    ] {
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        eprintln!("[postgres] one post root id ({runtime}): p50 {p50:.3} ms, p99 {p99:.3} ms");
        figures.push((p50, p99));
    }
    let [(p50, p99), (shared_p50, shared_p99)] = figures[..] else {
        unreachable!("two runs")
    };
    let ids: Vec<i64> = data.proofread.iter().map(|x| *x as i64).collect();
    let sub = c
        .prepare("SELECT id, created, valid, ST_X(pre_pt_position), ST_Y(pre_pt_position), ST_Z(pre_pt_position), pre_pt_root_id, ST_X(post_pt_position), ST_Y(post_pt_position), ST_Z(post_pt_position), post_pt_root_id, size FROM synapses WHERE pre_pt_root_id = ANY($1) AND post_pt_root_id = ANY($1) AND valid")
        .await
        .unwrap();
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        n = c.query(&sub, &[&ids]).await.unwrap().len();
        times.push(t.elapsed().as_secs_f64());
    }
    let subgraph = median(times);
    eprintln!("[postgres] proofread subgraph: {n} rows in {subgraph:.3} s (median of 5)");
    let graph = crate::graphbench::postgres(&c, data).await;
    // 64 connections, one INSERT per commit, 10 s.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..64i64 {
        let c = connect().await;
        let (stop, acked) = (stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let ins = c
                .prepare("INSERT INTO synapses (pre_pt_position, pre_pt_supervoxel_id, pre_pt_root_id, post_pt_position, post_pt_supervoxel_id, post_pt_root_id, size) VALUES (ST_MakePoint($1, $2, 1), $3, $3, ST_MakePoint(200, $4, 2), $5, $5, 1.0)")
                .await
                .unwrap();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                c.execute(&ins, &[&((100 + w) as f64), &((100 + i % 1000) as f64), &(w + 1), &((200 + w) as f64), &(i + 1)])
                    .await
                    .unwrap();
                acked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let storm = acked.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    eprintln!("[postgres] write storm, 64 connections x 1 row per commit: {storm:.0} rows/s");
    let _ = Command::new(&script)
        .args(["stop", dir.to_str().unwrap(), port])
        .status();
    json!({
        "backend": "postgres",
        "upload_rows_per_s": load,
        "synapse_query_p50_ms": p50,
        "synapse_query_p99_ms": p99,
        "synapse_query_shared_rt_p50_ms": shared_p50,
        "synapse_query_shared_rt_p99_ms": shared_p99,
        "subgraph_rows": n,
        "subgraph_s": subgraph,
        "storm_rows_per_s": storm,
        "graph": graph,
    })
}

/// PostgreSQL's answer times (ms) to the probes' SELECT on the post root
/// id's B-tree, after 50 to warm up.
async fn pg_probes(c: &tokio_postgres::Client, probes: &[u64]) -> Vec<f64> {
    let q = c
        .prepare("SELECT id, created, superceded_id, valid, ST_X(pre_pt_position), ST_Y(pre_pt_position), ST_Z(pre_pt_position), pre_pt_supervoxel_id, pre_pt_root_id, ST_X(post_pt_position), ST_Y(post_pt_position), ST_Z(post_pt_position), post_pt_supervoxel_id, post_pt_root_id, ST_X(ctr_pt_position), ST_Y(ctr_pt_position), ST_Z(ctr_pt_position), size FROM synapses WHERE post_pt_root_id = $1 AND valid")
        .await
        .unwrap();
    let mut lat = Vec::new();
    for (i, id) in probes.iter().enumerate() {
        let t = Instant::now();
        let rows = c.query(&q, &[&(*id as i64)]).await.unwrap();
        std::hint::black_box(rows.len());
        if i >= 50 {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    lat
}

/// Run a future to completion on a new thread with its own one-thread
/// runtime: a client whose connection is driven on the thread that waits
/// for it, as a synchronous client's is, so no request crosses threads in
/// the client.
pub fn on_one_thread<F, Fut>(f: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .unwrap()
}
