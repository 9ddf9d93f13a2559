//! Conformance: writes beyond a plain put (compare-and-set, batches across
//! tables, bulk ingestion, empty batches, flush).

// A test suite: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;

use super::{k, v};
use crate::{Key, SortRange, Store, Table};

/// A batch of compare-and-sets: each wins or loses on its own expected
/// value, and only the winners change.
pub async fn compare_and_set_many_decides_each(s: &Arc<dyn Store>) {
    let (a, b, c) = (k("casm", "a"), k("casm", "b"), k("casm", "c"));
    s.put_many(Table::Jobs, vec![(a.clone(), v("1")), (c.clone(), v("9"))])
        .await
        .unwrap();
    let won = s
        .compare_and_set_many(
            Table::Jobs,
            vec![
                (a.clone(), Some(v("1")), Some(v("2"))),
                (b.clone(), Some(v("0")), Some(v("3"))),
                (c.clone(), Some(v("9")), None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(won, vec![true, false, true]);
    assert_eq!(
        s.get_many(Table::Jobs, &[a, b, c]).await.unwrap(),
        vec![Some(v("2")), None, None]
    );
}

/// CAS sets only from the expected value; `None` means absent / delete.
pub async fn compare_and_set_semantics(s: &Arc<dyn Store>) {
    let key = k("cas", "x");
    assert!(
        s.compare_and_set(Table::Jobs, key.clone(), None, Some(v("1")))
            .await
            .unwrap()
    );
    assert!(
        !s.compare_and_set(Table::Jobs, key.clone(), None, Some(v("2")))
            .await
            .unwrap()
    );
    assert!(
        !s.compare_and_set(Table::Jobs, key.clone(), Some(v("0")), Some(v("2")))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_many(Table::Jobs, std::slice::from_ref(&key))
            .await
            .unwrap(),
        vec![Some(v("1"))]
    );
    assert!(
        s.compare_and_set(Table::Jobs, key.clone(), Some(v("1")), Some(v("2")))
            .await
            .unwrap()
    );
    assert!(
        s.compare_and_set(Table::Jobs, key.clone(), Some(v("2")), None)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_many(Table::Jobs, std::slice::from_ref(&key))
            .await
            .unwrap(),
        vec![None]
    );
    assert!(
        !s.compare_and_set(Table::Jobs, key, Some(v("2")), Some(v("3")))
            .await
            .unwrap()
    );
}

/// Concurrent read-modify-write through CAS loses no increment.
pub async fn compare_and_set_never_loses_an_update(s: &Arc<dyn Store>) {
    let key = k("counter", "n");
    let tasks = 6;
    let each = 15;
    let futures = (0..tasks).map(|_| {
        let key = key.clone();
        async move {
            for _ in 0..each {
                loop {
                    let cur = s
                        .get_many(Table::Meta, std::slice::from_ref(&key))
                        .await
                        .unwrap()
                        .remove(0);
                    let n: u64 = cur
                        .as_ref()
                        .map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
                    if s.compare_and_set(
                        Table::Meta,
                        key.clone(),
                        cur,
                        Some(v(&(n + 1).to_string())),
                    )
                    .await
                    .unwrap()
                    {
                        break;
                    }
                }
            }
        }
    });
    futures::future::join_all(futures).await;
    let got = s
        .get_many(Table::Meta, &[key])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(got, v(&(tasks * each).to_string()));
}

/// Empty requests are no-ops, not errors.
pub async fn empty_batches(s: &Arc<dyn Store>) {
    s.put_many(Table::Meta, vec![]).await.unwrap();
    assert!(s.get_many(Table::Meta, &[]).await.unwrap().is_empty());
    s.delete_many(Table::Meta, &[]).await.unwrap();
    assert!(
        s.scan(Table::Meta, b"empty-partition", SortRange::all(), None, 10)
            .await
            .unwrap()
            .rows
            .is_empty()
    );
}

/// `flush` succeeds and loses nothing.
pub async fn flush_keeps_everything(s: &Arc<dyn Store>) {
    s.put_many(Table::Meta, vec![(k("f", "1"), v("one"))])
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        s.get_many(Table::Meta, &[k("f", "1")]).await.unwrap(),
        vec![Some(v("one"))]
    );
}

/// `put_rows` writes rows of several tables at once.
pub async fn put_rows_spans_tables(s: &Arc<dyn Store>) {
    let rows = vec![
        (Table::Rows, k("r", "1"), v("row")),
        (Table::RowIndex, k("i", "1"), v("")),
        (Table::Meta, k("c", "x"), v("count")),
        (Table::Rows, k("r", "2"), v("row2")),
    ];
    s.put_rows(rows).await.unwrap();
    assert_eq!(
        s.get_many(Table::Rows, &[k("r", "1"), k("r", "2")])
            .await
            .unwrap(),
        vec![Some(v("row")), Some(v("row2"))]
    );
    assert_eq!(
        s.get_many(Table::RowIndex, &[k("i", "1")]).await.unwrap(),
        vec![Some(v(""))]
    );
    assert_eq!(
        s.get_many(Table::Meta, &[k("c", "x")]).await.unwrap(),
        vec![Some(v("count"))]
    );
    assert_eq!(
        s.get_many(Table::Meta, &[k("r", "1")]).await.unwrap(),
        vec![None]
    );
    s.put_rows(vec![]).await.unwrap();
}

/// `ingest` writes new rows in bulk (in any order given), over what was
/// there; writes after it win over it, and its rows delete like any other.
pub async fn ingest_adds_rows(s: &Arc<dyn Store>) {
    s.put_many(Table::RowIndex, vec![(k("a", "00007"), v("old"))])
        .await
        .unwrap();
    // Given out of order: a stride through 0..600 over three partitions.
    let rows: Vec<(Key, Bytes)> = (0..600u32)
        .map(|i| (i * 7) % 600)
        .map(|i| {
            let p = ["a", "b", "c"][(i % 3) as usize];
            (k(p, &format!("{i:05}")), v(&format!("v{i}")))
        })
        .chain([(k("a", "00007"), v("new"))])
        .collect();
    s.ingest(Table::RowIndex, rows).await.unwrap();
    s.ingest(Table::RowIndex, Vec::new()).await.unwrap();
    let got = s
        .scan_ranges(
            Table::RowIndex,
            vec![(Bytes::from_static(b"b"), SortRange::all())],
            usize::MAX,
        )
        .await
        .unwrap()
        .remove(0);
    let want: Vec<(Bytes, Bytes)> = (0..600u32)
        .filter(|i| i % 3 == 1)
        .map(|i| (Bytes::from(format!("{i:05}")), v(&format!("v{i}"))))
        .collect();
    let got: Vec<(Bytes, Bytes)> = got.into_iter().map(|(key, val)| (key.sort, val)).collect();
    assert_eq!(got, want);
    assert_eq!(
        s.get_many(Table::RowIndex, &[k("a", "00007"), k("c", "00002")])
            .await
            .unwrap(),
        vec![Some(v("new")), Some(v("v2"))]
    );
    s.put_many(Table::RowIndex, vec![(k("a", "00003"), v("later"))])
        .await
        .unwrap();
    s.delete_many(Table::RowIndex, &[k("b", "00001")])
        .await
        .unwrap();
    assert_eq!(
        s.get_many(Table::RowIndex, &[k("a", "00003"), k("b", "00001")])
            .await
            .unwrap(),
        vec![Some(v("later")), None]
    );
}
