//! Fuzzing the whole HTTP surface (issue 9): requests generated from the
//! URL grammar and mutated from a committed corpus (`tests/fuzz/corpus.txt`),
//! with bodies that are almost right (npy, raw, Blosc, JSON, CSV, Arrow
//! with bytes changed, cut or appended) or junk, sent to the real server.
//! Every answer must be a 2xx/3xx/4xx, or a 503 with Retry-After; no handler
//! or task may panic; a refused request must leave the stored voxels and
//! rows as they were. `NEUROCUBE_FUZZ_CASES` sets the number of requests
//! (the test command runs a bounded number; `scripts/fuzz.sh` runs long).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::json;

use crate::helpers::{TestApp, spawn_with};

/// Panics anywhere in the process (handler threads, tasks, workers).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn corpus() -> Vec<String> {
    include_str!("../fuzz/corpus.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Values a path segment or query value takes: valid names, numbers and
/// ranges, and the edges of their grammar.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "f", "img", "seg", "syn", "types", "nope", "0", "1", "2", "20", "0,10", "0,64",
            "10,5", "5,5", "0,16", "3,4", "0,1", "npy", "raw", "blosc", "xy", "xz", "yz",
            "png", "jpg", "csv", "json", "graphml", "npz", "arrow", "256", "512", "0_0_0.png",
            "18446744073709551615", "18446744073709551616,18446744073709551617",
            "0,18446744073709551615", "-1", "-1,5", "1e3", "0x10", "", " ", "..", "%00",
            "%2F", "é", "a,b", ",", "0,", ",9", "0,1,2", "9999999999999999999999",
            "4294967296", "0,4294967296",
        ]).prop_map(str::to_string),
        1 => "[a-z0-9,_.%-]{0,12}",
        1 => (0u64..u64::MAX, 0u64..u64::MAX).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

/// A path from a template, its `{}` holes filled with segments.
fn path() -> impl Strategy<Value = String> {
    let templates = vec![
        "/{}/{}/{}/{}/{}/{}/{}/",
        "/ocp/ca/{}/{}/{}/{}/{}/{}/{}/",
        "/f/img/{}/0/{}/{}/{}/",
        "/f/seg/npy/{}/{}/{}/{}/",
        "/f/img/xy/0/{}/{}/{}/",
        "/v1/datasets/{}",
        "/v1/datasets/f/channels/{}",
        "/v1/datasets/{}/channels/{}",
        "/v1/datasets/f/tables/{}",
        "/v1/datasets/f/tables/{}/rows",
        "/v1/datasets/f/tables/syn/query?format={}",
        "/v1/datasets/f/tables/syn/count?version={}",
        "/v1/datasets/f/graph?ids={}&format={}",
        "/v1/datasets/f/graph?bounding_box={}&min_synapses={}",
        "/v1/datasets/f/graph/stats?pre_ids={}",
        "/v1/datasets/f/versions/{}",
        "/v1/datasets/f/synapse_query",
        "/v1/tiles/f/img/{}/{}/{}/{}/{}/{}",
        "/catmaid/f/img/{}/{}/{}",
        "/v1/jobs/{}",
        "/v1/datasets/f/channels/img/downsample?{}={}",
    ];
    (
        prop::sample::select(templates),
        prop::collection::vec(segment(), 7),
    )
        .prop_map(|(t, segs)| {
            let mut out = String::new();
            let mut it = segs.into_iter();
            for (i, part) in t.split("{}").enumerate() {
                if i > 0 {
                    out.push_str(&it.next().unwrap_or_default());
                }
                out.push_str(part);
            }
            out
        })
}

/// Bodies that are nearly valid, or not at all.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop::sample::select(vec![
        Vec::new(),
        vec![7u8; 64 * 64],
        neurocube_core::npy::header(neurocube_core::DType::Uint8, &[1, 64, 64])
            .into_iter()
            .chain(std::iter::repeat_n(3u8, 64 * 64))
            .collect::<Vec<u8>>(),
        neurocube_core::blosc::Blosc::lz4(1).unwrap().compress(&[9u8; 64 * 64]).unwrap(),
        json!({"voxel_size": [4, 4, 40], "extent": [64, 64, 16], "levels": 2}).to_string().into_bytes(),
        json!({"type": "image", "dtype": "uint8", "chunk_size": [32, 32, 8]}).to_string().into_bytes(),
        json!({"schema": "synapse", "voxel_resolution": [4, 4, 40]}).to_string().into_bytes(),
        json!([{"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6], "size": 2.5,
                "pre_pt_root_id": 5, "post_pt_root_id": 6}]).to_string().into_bytes(),
        b"pre_pt_position_x,pre_pt_position_y,pre_pt_position_z,post_pt_position_x,post_pt_position_y,post_pt_position_z\n1,2,3,4,5,6\n".to_vec(),
        json!({"filter_in_dict": {"pre_pt_root_id": [5]}, "limit": 3}).to_string().into_bytes(),
        json!({"ids": [5, 6], "format": "csv"}).to_string().into_bytes(),
        json!({"pre_ids": [5], "post_ids": [6]}).to_string().into_bytes(),
    ]);
    prop_oneof![
        3 => (valid, prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), 0usize..3, prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(mut b, flips, cut, tail)| {
                for (i, v) in flips {
                    if !b.is_empty() {
                        let i = i.index(b.len());
                        b[i] = v;
                    }
                }
                if cut == 1 && !b.is_empty() {
                    b.truncate(b.len() / 2);
                }
                if cut == 2 {
                    b.extend(tail);
                }
                b
            }),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
}

fn request(corpus: Vec<String>) -> impl Strategy<Value = Req> {
    let from_corpus =
        (prop::sample::select(corpus), segment(), 0usize..3).prop_map(|(line, seg, how)| {
            // Mutate a corpus line: as is, one segment replaced, or a segment appended.
            let (method, path) = line.split_once(' ').unwrap_or(("GET", line.as_str()));
            let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
            match how {
                1 if parts.len() > 2 => {
                    let i = 1 + (seg.len() % (parts.len() - 1));
                    parts[i] = seg;
                }
                2 => parts.push(seg),
                _ => {}
            }
            (method.to_string(), parts.join("/"))
        });
    let generated = (
        prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "PATCH", "BREW"]),
        path(),
    )
        .prop_map(|(m, p)| (m.to_string(), p));
    // Every route of the route table, its `{holes}` filled: a new route is
    // fuzzed without a line here.
    let routes: Vec<(String, String)> = neurocube_server::routes::table()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path))
        .collect();
    let from_routes = (
        prop::sample::select(routes),
        prop::collection::vec(segment(), 8),
    )
        .prop_map(|((m, p), segs)| {
            let mut out = String::new();
            let mut segs = segs.into_iter();
            let mut rest = p.as_str();
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
                out.push_str(&segs.next().unwrap_or_default());
                rest = &rest[close..];
            }
            out.push_str(rest);
            (m, out)
        });
    (
        prop_oneof![from_corpus, generated, from_routes],
        body(),
        prop::sample::select(vec![
            "application/json",
            "text/csv",
            "application/x-ndjson",
            "application/vnd.apache.arrow.stream",
            "application/octet-stream",
            "",
        ]),
    )
        .prop_map(|((method, path), body, content_type)| Req {
            method: match method.as_str() {
                "PUT" => "PUT",
                "POST" => "POST",
                "DELETE" => "DELETE",
                "PATCH" => "PATCH",
                "BREW" => "BREW",
                _ => "GET",
            },
            path,
            content_type,
            body,
        })
}

/// What a refused request must not change: the voxels of both channels and
/// the rows of the synapse table.
async fn state(app: &TestApp) -> (Vec<u8>, Vec<u8>, String) {
    let img = app
        .get("/f/img/raw/0/0,64/0,64/0,16/")
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let seg = app
        .get("/f/seg/raw/0/0,64/0,64/0,16/")
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let rows = app
        .post_json("/v1/datasets/f/tables/syn/query?format=csv", &json!({}))
        .await
        .text()
        .await
        .unwrap();
    (img, seg, rows)
}

async fn send(app: &TestApp, r: &Req) -> Result<(u16, bool, String), String> {
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut b = app.client.request(method, format!("{}{}", app.url, r.path));
    if !r.content_type.is_empty() {
        b = b.header("content-type", r.content_type);
    }
    let resp = b
        .body(r.body.clone())
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status().as_u16();
    let retry = resp.headers().contains_key("retry-after");
    let text = resp.text().await.map_err(|e| format!("broken body: {e}"))?;
    Ok((status, retry, text))
}

#[test]
fn requests_from_the_grammar_never_panic_5xx_or_change_data_when_refused() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // arrow-ipc's panic on damaged buffers is contained by the upload
        // parser (answered 400, checked below); every other panic counts.
        if info
            .location()
            .is_some_and(|l| l.file().contains("/arrow-"))
        {
            return;
        }
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(info);
    }));
    let cases: u32 = std::env::var("NEUROCUBE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = Arc::new(rt.block_on(async {
        // Small limits: the fuzzer's huge boxes and bodies meet them at once.
        let app = spawn_with(|s| {
            s.limits.max_cutout_bytes = 4 << 20;
            s.limits.body_idle_timeout_secs = 2;
        })
        .await;
        app.put_json("/v1/datasets/f", &json!({"voxel_size": [4, 4, 40], "extent": [64, 64, 16], "levels": 2})).await;
        app.channel("f", "img", "image", "uint8", [32, 32, 8]).await;
        app.channel("f", "seg", "segmentation", "uint32", [32, 32, 8]).await;
        let vox: Vec<u8> = (0..64 * 64 * 16).map(|i: u32| (i * 7 % 251) as u8).collect();
        app.put("/f/img/raw/0/0,64/0,64/0,16/", vox).await;
        app.put_json("/v1/datasets/f/tables/syn", &json!({"schema": "synapse", "voxel_resolution": [4, 4, 40]})).await;
        app.post_json(
            "/v1/datasets/f/tables/syn/rows",
            &json!([{"pre_pt_position": [1, 2, 3], "post_pt_position": [4, 5, 6], "size": 2.5, "pre_pt_root_id": 5, "post_pt_root_id": 6}]),
        )
        .await;
        app
    }));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions.txt"
        )))),
        ..Config::default()
    });
    let known = std::cell::RefCell::new(rt.block_on(state(&app)));
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&request(corpus()), |r| {
        let (status, retry, text) = rt.block_on(send(&app, &r)).map_err(TestCaseError::fail)?;
        *statuses.borrow_mut().entry(status).or_default() += 1;
        prop_assert!(
            status < 500 || (status == 503 && retry),
            "{} {} -> {status}: {text}",
            r.method,
            r.path
        );
        prop_assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "a panic while serving {} {}",
            r.method,
            r.path
        );
        if r.method != "GET" {
            let now = rt.block_on(state(&app));
            if status >= 400 {
                prop_assert!(
                    now == *known.borrow(),
                    "refused {} {} ({status}: {text}) changed stored data",
                    r.method,
                    r.path
                );
            }
            *known.borrow_mut() = now;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The requests reached handlers, not only the router's 404.
    let statuses = statuses.into_inner();
    eprintln!("fuzz: answers by status {statuses:?}");
    let count = |lo: u16, hi: u16| statuses.range(lo..hi).map(|(_, n)| n).sum::<u32>();
    assert!(
        count(200, 300) * 20 >= cases,
        "too few successes: {statuses:?}"
    );
    assert!(
        count(400, 404) + count(405, 500) > 0,
        "no refusals: {statuses:?}"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
