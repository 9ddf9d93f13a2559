//! Rows survive closing and reopening the embedded store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use bytes::Bytes;
use neurocube_store::embedded::{EmbeddedOptions, EmbeddedStore};
use neurocube_store::{Key, Store, Table};

#[tokio::test]
async fn rows_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::new(b"p".to_vec(), b"s".to_vec());
    {
        let s = EmbeddedStore::open(&EmbeddedOptions::new(dir.path())).unwrap();
        s.put_many(
            Table::Chunks,
            vec![(key.clone(), Bytes::from(vec![9u8; 300_000]))],
        )
        .await
        .unwrap();
    }
    let s = EmbeddedStore::open(&EmbeddedOptions::new(dir.path())).unwrap();
    let got = s
        .get_many(Table::Chunks, &[key])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(got, Bytes::from(vec![9u8; 300_000]));
}

/// Ingested rows are in the engine's tables, not its journal: they are
/// there after a reopen, of equal keys in one ingestion the last given, and
/// a write after the ingestion still wins over it.
#[tokio::test]
async fn ingested_rows_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = |i: u32| Key::new(format!("p{}", i % 5).into_bytes(), i.to_be_bytes().to_vec());
    {
        let s = EmbeddedStore::open(&EmbeddedOptions::new(dir.path())).unwrap();
        assert!(s.ingests());
        let rows = (0..10_000u32)
            .rev()
            .map(|i| (key(i), Bytes::from(i.to_le_bytes().to_vec())))
            .chain([(key(42), Bytes::from_static(b"second"))])
            .collect();
        s.ingest(Table::RowIndex, rows).await.unwrap();
        s.put_many(
            Table::RowIndex,
            vec![(key(7), Bytes::from_static(b"after"))],
        )
        .await
        .unwrap();
    }
    let s = EmbeddedStore::open(&EmbeddedOptions::new(dir.path())).unwrap();
    let keys: Vec<Key> = (0..10_000u32).map(key).collect();
    let got = s.get_many(Table::RowIndex, &keys).await.unwrap();
    for (i, g) in got.into_iter().enumerate() {
        let want = match i {
            42 => Bytes::from_static(b"second"),
            7 => Bytes::from_static(b"after"),
            _ => Bytes::from((i as u32).to_le_bytes().to_vec()),
        };
        assert_eq!(g, Some(want), "key {i}");
    }
}
