//! Start the real application on port 0 with a temporary data directory.

use std::sync::Arc;

use neurocube_server::{Application, Settings};
use neurocube_service::Services;
use neurocube_store::cassandra::CassandraStore;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub services: Arc<Services>,
    handle: actix_web::dev::ServerHandle,
    _dir: tempfile::TempDir,
    _keyspace: Option<DropKeyspace>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the server; its task ends with the test runtime anyway.
        drop(self.handle.stop(false));
    }
}

/// The store the apps use: `embedded`, or `cassandra` with
/// NEUROCUBE_TEST_BACKEND=cassandra.
pub fn backend() -> &'static str {
    if std::env::var("NEUROCUBE_TEST_BACKEND").is_ok_and(|b| b == "cassandra") {
        "cassandra"
    } else {
        "embedded"
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::defaults();
    s.server.host = "127.0.0.1".into();
    s.server.port = 0;
    s.server.workers = 2;
    s.store.data_dir = dir.path().to_path_buf();
    s.store.durability = "flush".into();
    // NEUROCUBE_TEST_BACKEND=cassandra: a fresh keyspace per app on the
    // node NEUROCUBE_CASSANDRA (default 127.0.0.1:9042), dropped afterwards.
    let cassandra = std::env::var("NEUROCUBE_TEST_BACKEND").is_ok_and(|b| b == "cassandra");
    if cassandra {
        let node = std::env::var("NEUROCUBE_CASSANDRA").unwrap_or_else(|_| "127.0.0.1:9042".into());
        s.store.uri = format!(
            "cassandra://{node}/nc_test_{}",
            uuid::Uuid::new_v4().simple()
        );
    }
    tweak(&mut s);
    let mut keyspace = None;
    let app = if cassandra {
        let opts = neurocube_server::app::cassandra_options(&s.store.uri, &s.store.cassandra)
            .expect("cassandra settings");
        let store = CassandraStore::open(opts)
            .await
            .expect("cassandra store opens");
        keyspace = Some(DropKeyspace(store.clone()));
        Application::with_store(&s, Arc::new(store))
            .await
            .expect("app starts")
    } else {
        Application::build(s).await.expect("app starts")
    };
    let url = app.url();
    let services = app.services();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        url,
        client: reqwest::Client::new(),
        services,
        handle,
        _dir: dir,
        _keyspace: keyspace,
    }
}

/// Drops a test app's Cassandra keyspace (on a thread of its own, so it
/// works from any runtime and after a panic).
pub struct DropKeyspace(pub CassandraStore);

impl Drop for DropKeyspace {
    fn drop(&mut self) {
        let store = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            if let Err(e) = rt.block_on(store.drop_keyspace()) {
                eprintln!("could not drop keyspace {}: {e}", store.keyspace());
            }
        })
        .join();
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client
            .put(format!("{}{path}", self.url))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_json(&self, path: &str, v: &Value) -> Response {
        self.client
            .put(format!("{}{path}", self.url))
            .json(v)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, v: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .json(v)
            .send()
            .await
            .unwrap()
    }

    /// POST a body with a Content-Type.
    pub async fn post_as(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Rows of a JSON-lines query answer.
    pub async fn query(&self, path: &str, body: &Value) -> Vec<Value> {
        let r = self.post_json(path, body).await;
        assert_eq!(
            r.status(),
            200,
            "{path} {body}: {}",
            r.text().await.unwrap()
        );
        r.text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// Create a dataset and a channel, asserting success.
    pub async fn dataset(&self, ds: &str, extent: [u64; 3], levels: u8) {
        let r = self
            .put_json(
                &format!("/v1/datasets/{ds}"),
                &json!({"voxel_size": [4, 4, 40], "extent": extent, "levels": levels}),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }

    pub async fn channel(&self, ds: &str, ch: &str, kind: &str, dtype: &str, chunk: [u64; 3]) {
        let r = self
            .put_json(
                &format!("/v1/datasets/{ds}/channels/{ch}"),
                &json!({"type": kind, "dtype": dtype, "chunk_size": chunk}),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }

    /// Chunks stored, over every channel.
    pub async fn stored_chunks(&self) -> usize {
        let mut n = 0;
        let mut token = None;
        loop {
            let page = self
                .services
                .store
                .scan_all(neurocube_store::Table::Chunks, token, 1000)
                .await
                .unwrap();
            n += page.rows.len();
            token = page.next;
            if token.is_none() {
                return n;
            }
        }
    }
}

/// Assert status and error code/message of a JSON error response.
pub async fn assert_error(r: Response, status: u16, code: &str, message_contains: &str) {
    assert_eq!(r.status().as_u16(), status);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], code, "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains(message_contains),
        "message {m:?} lacks {message_contains:?}"
    );
}

/// A C-ordered array of `n` bytes where every byte depends on its position.
/// A record batch as an Arrow IPC stream body.
pub fn arrow_stream(batch: &arrow_array::RecordBatch) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed)
        .collect()
}

pub fn npy(descr: &str, shape: [u64; 3], data: &[u8]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}, {}), }}",
        shape[0], shape[1], shape[2]
    );
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    let padded = format!("{dict:<w$}\n", w = total - 11);
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    out.extend_from_slice(padded.as_bytes());
    out.extend_from_slice(data);
    out
}

pub fn decode_png(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
    let mut r = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info, buf)
}
