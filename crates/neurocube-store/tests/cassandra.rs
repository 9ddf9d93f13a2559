//! The conformance suite on a real Cassandra node, one fresh keyspace per
//! test (dropped afterwards). Needs `NEUROCUBE_CASSANDRA=host:port`
//! (scripts/test.sh starts a node with scripts/cassandra.sh and sets it).
//! Without it the tests fail when `CI` is set and are skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::sync::Arc;
use std::time::Duration;

use neurocube_store::cassandra::{CassandraOptions, CassandraStore};
use neurocube_store::conformance::Fixture;
use neurocube_store::{Key, Store, StoreError, Table};

/// The node to test against, or `None` (after saying so) to skip.
fn node() -> Option<String> {
    match std::env::var("NEUROCUBE_CASSANDRA") {
        Ok(n) if !n.is_empty() => Some(n),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "NEUROCUBE_CASSANDRA is not set but CI is: the Cassandra tests must run in CI (scripts/test.sh starts a node)"
            );
            eprintln!("skipped: NEUROCUBE_CASSANDRA is not set (e.g. 127.0.0.1:9042)");
            None
        }
    }
}

fn options(node: &str) -> CassandraOptions {
    let ks = format!("nc_conf_{}", uuid::Uuid::new_v4().simple());
    let mut o = CassandraOptions::new(vec![node.to_string()], ks);
    o.startup_deadline = Duration::from_secs(20);
    o
}

/// Drops the keyspace when the test ends (on a thread of its own, so it
/// works from any runtime and after a panic).
struct DropKeyspace(CassandraStore);

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

async fn make(node: String) -> Fixture {
    let store = CassandraStore::open(options(&node))
        .await
        .expect("cassandra store opens");
    Fixture {
        store: Arc::new(store.clone()),
        guard: Box::new(DropKeyspace(store)),
    }
}

macro_rules! cassandra_conformance {
    ($($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(n) = node() else { return };
                let fixture = make(n).await;
                neurocube_store::conformance::$name(&fixture.store).await;
                drop(fixture);
            }
        )*
    };
}

cassandra_conformance!(
    put_get_delete,
    overwrite_and_missing,
    get_many_keeps_order,
    partitions_and_tables_are_separate,
    scan_in_sort_order_within_range,
    scan_pages_resume_without_gaps,
    scan_all_covers_the_table,
    compare_and_set_semantics,
    compare_and_set_many_decides_each,
    compare_and_set_never_loses_an_update,
    large_values,
    delete_partition_removes_only_that_partition,
    empty_batches,
    scan_helper_reads_every_page,
    flush_keeps_everything,
    put_rows_spans_tables,
    scan_ranges_reads_each_range,
    partitions_lists_what_exists,
    scan_prefix_reads_every_row,
    ingest_adds_rows
);

/// A page token of another backend is rejected, not misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_page_tokens_are_rejected() {
    let Some(n) = node() else { return };
    let f = make(n).await;
    let bad = neurocube_store::PageToken(bytes::Bytes::from_static(b"xyz"));
    let e = f
        .store
        .scan_all(Table::Meta, Some(bad.clone()), 10)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::BadPageToken { .. }), "{e}");
    let e = f
        .store
        .scan(Table::Meta, b"p", Default::default(), Some(bad), 10)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "page token is not valid for the cassandra store"
    );
}

/// Two stores (two server instances) on one keyspace: CAS is a real LWT,
/// so concurrent increments through both lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_one_keyspace() {
    let Some(n) = node() else { return };
    let f = make(n.clone()).await;
    let mut o = options(&n);
    o.keyspace = f
        .guard
        .downcast_ref::<DropKeyspace>()
        .unwrap()
        .0
        .keyspace()
        .to_string();
    let second: Arc<dyn Store> = Arc::new(CassandraStore::open(o).await.unwrap());
    let key = Key::new(&b"shared"[..], &b"n"[..]);
    let bump = |s: Arc<dyn Store>, key: Key| async move {
        for _ in 0..10 {
            loop {
                let cur = s
                    .get_many(Table::Meta, std::slice::from_ref(&key))
                    .await
                    .unwrap()[0]
                    .clone();
                let n: u32 = cur
                    .as_ref()
                    .map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
                let next = bytes::Bytes::from((n + 1).to_string());
                if s.compare_and_set(Table::Meta, key.clone(), cur, Some(next))
                    .await
                    .unwrap()
                {
                    break;
                }
            }
        }
    };
    futures::future::join(
        bump(f.store.clone(), key.clone()),
        bump(second.clone(), key.clone()),
    )
    .await;
    let got = second.get_many(Table::Meta, &[key]).await.unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"20"[..]));
}

/// Nothing listens: `open` retries until its deadline, then says what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_node_gives_a_clear_error_after_retrying() {
    // Needs no node: port 1 on loopback refuses connections.
    let mut o = CassandraOptions::new(vec!["127.0.0.1:1".into()], "nc_unreachable");
    o.startup_deadline = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let e = CassandraStore::open(o).await.unwrap_err();
    let waited = started.elapsed();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{msg}");
    assert!(
        msg.starts_with("cassandra store unavailable: cannot reach 127.0.0.1:1 (connection refused); gave up after "),
        "{msg}"
    );
    assert!(
        msg.contains("store.cassandra.startup_deadline_secs = 2"),
        "{msg}"
    );
    assert!(
        waited >= Duration::from_millis(700),
        "retried for {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "gave up only after {waited:?}"
    );
}
