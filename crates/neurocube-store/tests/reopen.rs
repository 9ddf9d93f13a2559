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
