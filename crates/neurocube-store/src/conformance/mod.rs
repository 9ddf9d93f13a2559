//! The behaviour every backend must have, written once against [`Store`].
//! A backend's test file calls [`conformance_tests!`](crate::conformance_tests)
//! with an async expression that builds a [`Fixture`].

// A test suite: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;

use crate::{Key, PageToken, Scan, SortRange, Store, Table};

mod writes;
pub use writes::*;

/// A store under test, and whatever must live as long as it (a temp dir, a keyspace).
pub struct Fixture {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Dropped after the test.
    pub guard: Box<dyn std::any::Any + Send + Sync>,
}

/// One test function per behaviour below, for one backend.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            put_get_delete, overwrite_and_missing, get_many_keeps_order, partitions_and_tables_are_separate,
            scan_in_sort_order_within_range, scan_pages_resume_without_gaps, scan_all_covers_the_table,
            compare_and_set_semantics, compare_and_set_many_decides_each, compare_and_set_never_loses_an_update, large_values,
            delete_partition_removes_only_that_partition, empty_batches,
            scan_helper_reads_every_page, flush_keeps_everything, put_rows_spans_tables, scan_ranges_reads_each_range,
            partitions_lists_what_exists, scan_prefix_reads_every_row, ingest_adds_rows);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture: $crate::conformance::Fixture = $make.await;
                $crate::conformance::$name(&fixture.store).await;
                drop(fixture);
            }
        )*
    };
}

fn k(p: &str, s: &str) -> Key {
    Key::new(p.as_bytes().to_vec(), s.as_bytes().to_vec())
}

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Rows written are read back; deleted rows read as absent.
pub async fn put_get_delete(s: &Arc<dyn Store>) {
    s.put_many(
        Table::Meta,
        vec![(k("p", "a"), v("1")), (k("p", "b"), v("2"))],
    )
    .await
    .unwrap();
    let got = s
        .get_many(Table::Meta, &[k("p", "a"), k("p", "b")])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(v("1")), Some(v("2"))]);
    s.delete_many(Table::Meta, &[k("p", "a")]).await.unwrap();
    let got = s
        .get_many(Table::Meta, &[k("p", "a"), k("p", "b")])
        .await
        .unwrap();
    assert_eq!(got, vec![None, Some(v("2"))]);
}

/// A second write replaces the value; an unknown key is `None`, not an error.
pub async fn overwrite_and_missing(s: &Arc<dyn Store>) {
    s.put_many(Table::Meta, vec![(k("o", "x"), v("old"))])
        .await
        .unwrap();
    s.put_many(Table::Meta, vec![(k("o", "x"), v("new"))])
        .await
        .unwrap();
    assert_eq!(
        s.get_many(Table::Meta, &[k("o", "x")]).await.unwrap(),
        vec![Some(v("new"))]
    );
    assert_eq!(
        s.get_many(Table::Meta, &[k("o", "nope")]).await.unwrap(),
        vec![None]
    );
    s.delete_many(Table::Meta, &[k("o", "never-written")])
        .await
        .unwrap();
}

/// One result per key, in request order, duplicates included.
pub async fn get_many_keeps_order(s: &Arc<dyn Store>) {
    let rows: Vec<_> = (0..50)
        .map(|i| {
            (
                k(&format!("g{}", i % 7), &format!("{i:03}")),
                v(&i.to_string()),
            )
        })
        .collect();
    s.put_many(Table::Chunks, rows).await.unwrap();
    let keys = vec![
        k("g3", "010"),
        k("g0", "049"),
        k("g5", "999"),
        k("g3", "010"),
        k("g1", "001"),
    ];
    let got = s.get_many(Table::Chunks, &keys).await.unwrap();
    assert_eq!(
        got,
        vec![
            Some(v("10")),
            Some(v("49")),
            None,
            Some(v("10")),
            Some(v("1"))
        ]
    );
}

/// Partition `a` never sees rows of partition `ab`, and tables never share rows.
pub async fn partitions_and_tables_are_separate(s: &Arc<dyn Store>) {
    s.put_many(
        Table::Meta,
        vec![(k("a", "bc"), v("a/bc")), (k("ab", "c"), v("ab/c"))],
    )
    .await
    .unwrap();
    s.put_many(Table::Jobs, vec![(k("a", "bc"), v("jobs"))])
        .await
        .unwrap();
    let page = s
        .scan(Table::Meta, b"a", SortRange::all(), None, 100)
        .await
        .unwrap();
    assert_eq!(page.rows, vec![(k("a", "bc"), v("a/bc"))]);
    assert_eq!(
        s.get_many(Table::Jobs, &[k("ab", "c")]).await.unwrap(),
        vec![None]
    );
    assert_eq!(
        s.get_many(Table::Jobs, &[k("a", "bc")]).await.unwrap(),
        vec![Some(v("jobs"))]
    );
}

/// Scans return sort order, honour `[start, end)`, and stay in their partition.
pub async fn scan_in_sort_order_within_range(s: &Arc<dyn Store>) {
    let rows: Vec<_> = [5u8, 1, 9, 3, 7]
        .iter()
        .map(|&i| (Key::new(b"sc".to_vec(), vec![i]), Bytes::from(vec![i; 3])))
        .collect();
    s.put_many(Table::Meta, rows).await.unwrap();
    s.put_many(Table::Meta, vec![(k("sd", "\u{1}"), v("other"))])
        .await
        .unwrap();
    let all = s
        .scan(Table::Meta, b"sc", SortRange::all(), None, 100)
        .await
        .unwrap();
    let sorts: Vec<u8> = all.rows.iter().map(|(k, _)| k.sort[0]).collect();
    assert_eq!(sorts, vec![1, 3, 5, 7, 9]);
    assert!(all.next.is_none());
    let r = SortRange {
        start: Some(Bytes::from(vec![3u8])),
        end: Some(Bytes::from(vec![9u8])),
    };
    let mid = s.scan(Table::Meta, b"sc", r, None, 100).await.unwrap();
    let sorts: Vec<u8> = mid.rows.iter().map(|(k, _)| k.sort[0]).collect();
    assert_eq!(sorts, vec![3, 5, 7]);
    assert_eq!(mid.rows[0].1, Bytes::from(vec![3u8; 3]));
}

/// Paging with small limits returns every row exactly once, in order.
pub async fn scan_pages_resume_without_gaps(s: &Arc<dyn Store>) {
    let rows: Vec<_> = (0u16..23)
        .map(|i| {
            (
                Key::new(b"pg".to_vec(), i.to_be_bytes().to_vec()),
                Bytes::from(i.to_string()),
            )
        })
        .collect();
    s.put_many(Table::Jobs, rows).await.unwrap();
    let mut seen = Vec::new();
    let mut token: Option<PageToken> = None;
    let mut pages = 0;
    loop {
        let page = s
            .scan(Table::Jobs, b"pg", SortRange::all(), token.clone(), 5)
            .await
            .unwrap();
        assert!(page.rows.len() <= 5);
        seen.extend(
            page.rows
                .iter()
                .map(|(k, _)| u16::from_be_bytes([k.sort[0], k.sort[1]])),
        );
        pages += 1;
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(pages < 50, "paging does not end");
    }
    assert_eq!(seen, (0..23).collect::<Vec<_>>());
}

/// `scan_all` pages cover every row of every partition of the table, once.
pub async fn scan_all_covers_the_table(s: &Arc<dyn Store>) {
    let mut want = Vec::new();
    for p in 0..6 {
        let rows: Vec<_> = (0..4)
            .map(|i| {
                (
                    k(&format!("all{p}"), &format!("{i}")),
                    v(&format!("{p}-{i}")),
                )
            })
            .collect();
        want.extend(rows.iter().map(|(_, v)| v.clone()));
        s.put_many(Table::Chunks, rows).await.unwrap();
    }
    let mut got = Vec::new();
    let mut token = None;
    for _ in 0..100 {
        let page = s.scan_all(Table::Chunks, token, 5).await.unwrap();
        got.extend(page.rows.into_iter().map(|(_, v)| v));
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

/// Multi-MiB values (large chunks) round-trip byte for byte.
pub async fn large_values(s: &Arc<dyn Store>) {
    let big: Vec<u8> = (0..(4 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big = Bytes::from(big);
    s.put_many(
        Table::Chunks,
        vec![(k("big", "1"), big.clone()), (k("big", "2"), Bytes::new())],
    )
    .await
    .unwrap();
    let got = s
        .get_many(Table::Chunks, &[k("big", "1"), k("big", "2")])
        .await
        .unwrap();
    assert_eq!(got[0].as_ref().map(Bytes::len), Some(big.len()));
    assert!(got[0].as_ref() == Some(&big));
    assert_eq!(got[1], Some(Bytes::new()));
}

/// Deleting a partition leaves neighbours (`dp` vs `dpx`) intact.
pub async fn delete_partition_removes_only_that_partition(s: &Arc<dyn Store>) {
    let rows: Vec<_> = (0..30)
        .map(|i| (k("dp", &format!("{i:02}")), v("x")))
        .collect();
    s.put_many(Table::Chunks, rows).await.unwrap();
    s.put_many(
        Table::Chunks,
        vec![(k("dpx", "00"), v("keep")), (k("dq", "00"), v("keep"))],
    )
    .await
    .unwrap();
    s.delete_partition(Table::Chunks, b"dp").await.unwrap();
    assert!(
        s.scan(Table::Chunks, b"dp", SortRange::all(), None, 100)
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    let got = s
        .get_many(Table::Chunks, &[k("dpx", "00"), k("dq", "00")])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(v("keep")), Some(v("keep"))]);
}

/// Listing partitions finds each one that holds rows once, by prefix and
/// length, across pages, and nothing from other tables.
pub async fn partitions_lists_what_exists(s: &Arc<dyn Store>) {
    let mut rows = Vec::new();
    for i in 0..25 {
        for j in 0..3 {
            rows.push((k(&format!("pa{i:02}"), &format!("{j}")), v("x")));
        }
    }
    rows.push((k("pb01", "0"), v("other prefix")));
    rows.push((k("pa001", "0"), v("longer key")));
    rows.push((k("pa", "0"), v("shorter key")));
    s.put_many(Table::Chunks, rows).await.unwrap();
    s.put_many(Table::Meta, vec![(k("pa99", "0"), v("other table"))])
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut page = None;
    let mut calls = 0;
    loop {
        let p = s
            .partitions(Table::Chunks, b"pa", 4, page, 7)
            .await
            .unwrap();
        got.extend(p.keys);
        calls += 1;
        assert!(calls < 100, "listing partitions does not end");
        match p.next {
            Some(t) => page = Some(t),
            None => break,
        }
    }
    got.sort();
    let want: Vec<Bytes> = (0..25).map(|i| Bytes::from(format!("pa{i:02}"))).collect();
    assert_eq!(got, want);
    let none = s
        .partitions(Table::Chunks, b"zz", 4, None, 10)
        .await
        .unwrap();
    assert!(none.keys.is_empty());
}

/// Reading the rows of every partition of a prefix, page by page, gives
/// each row once and nothing of other prefixes, lengths or tables.
pub async fn scan_prefix_reads_every_row(s: &Arc<dyn Store>) {
    let mut rows = Vec::new();
    for i in 0..25 {
        for j in 0..3 {
            rows.push((
                k(&format!("sp{i:02}"), &format!("{j}")),
                v(&format!("{i}/{j}")),
            ));
        }
    }
    rows.push((k("sq01", "0"), v("other prefix")));
    rows.push((k("sp001", "0"), v("longer key")));
    s.put_many(Table::Chunks, rows).await.unwrap();
    s.put_many(Table::Meta, vec![(k("sp99", "0"), v("other table"))])
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut page = None;
    for _ in 0..200 {
        let p = s
            .scan_prefix(Table::Chunks, b"sp", 4, page, 5)
            .await
            .unwrap();
        got.extend(p.rows);
        match p.next {
            Some(t) => page = Some(t),
            None => break,
        }
    }
    let mut got: Vec<String> = got
        .into_iter()
        .map(|(key, val)| {
            assert_eq!(
                std::str::from_utf8(&val).unwrap(),
                format!(
                    "{}/{}",
                    std::str::from_utf8(&key.partition[2..])
                        .unwrap()
                        .parse::<u32>()
                        .unwrap(),
                    std::str::from_utf8(&key.sort).unwrap()
                )
            );
            String::from_utf8(val.to_vec()).unwrap()
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..25)
        .flat_map(|i| (0..3).map(move |j| format!("{i}/{j}")))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

/// The scan helper follows every page of a partition, of a sort range and
/// of a whole table: more rows than one page, none dropped, none twice.
pub async fn scan_helper_reads_every_page(s: &Arc<dyn Store>) {
    let rows: Vec<(Key, Bytes)> = (0..2_345u32)
        .map(|i| {
            let sort = format!("{i:05}");
            (k("many", &sort), v(&sort))
        })
        .collect();
    for batch in rows.chunks(500) {
        s.put_many(Table::Jobs, batch.to_vec()).await.unwrap();
    }
    s.put_many(Table::Jobs, vec![(k("other", "x"), v("x"))])
        .await
        .unwrap();
    let got = Scan::partition(s.clone(), Table::Jobs, b"many".to_vec(), SortRange::all())
        .page_size(100)
        .collect()
        .await
        .unwrap();
    assert_eq!(got, rows, "every row of the partition, in order");
    let range = SortRange {
        start: Some(v("00990")),
        end: Some(v("02001")),
    };
    let got = Scan::partition(s.clone(), Table::Jobs, b"many".to_vec(), range)
        .page_size(7)
        .collect()
        .await
        .unwrap();
    assert_eq!(got, rows[990..2001].to_vec());
    let all = Scan::table(s.clone(), Table::Jobs)
        .page_size(64)
        .collect()
        .await
        .unwrap();
    assert_eq!(all.len(), rows.len() + 1);
    let mut keys: Vec<Key> = all.into_iter().map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), rows.len() + 1, "no row twice");
    let n = Scan::partition(s.clone(), Table::Jobs, b"many".to_vec(), SortRange::all())
        .page_size(100)
        .count(1_000)
        .await
        .unwrap();
    assert_eq!(n, 1_000);
}

/// `scan_ranges` reads every range to its end, or its first `limit` rows, in order.
pub async fn scan_ranges_reads_each_range(s: &Arc<dyn Store>) {
    let rows: Vec<(Key, Bytes)> = (0..1500u32)
        .map(|i| (k(&format!("p{}", i % 3), &format!("{i:05}")), v("x")))
        .collect();
    s.put_many(Table::RowIndex, rows).await.unwrap();
    let got = s
        .scan_ranges(
            Table::RowIndex,
            vec![
                (Bytes::from_static(b"p1"), SortRange::all()),
                (
                    Bytes::from_static(b"p0"),
                    SortRange {
                        start: Some(v("00300")),
                        end: Some(v("00600")),
                    },
                ),
                (Bytes::from_static(b"none"), SortRange::all()),
            ],
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].len(), 500);
    assert!(got[0].windows(2).all(|w| w[0].0.sort < w[1].0.sort));
    assert_eq!(got[1].len(), 100);
    assert_eq!(got[1][0].0.sort, v("00300"));
    assert!(got[2].is_empty());
    // Many ranges (the embedded engine splits these over two threads): one
    // answer per range, in the order asked, each holding exactly its rows.
    let many: Vec<(Bytes, SortRange)> = (0..100u32)
        .rev()
        .map(|i| {
            (
                Bytes::from(format!("p{}", i % 3)),
                SortRange {
                    start: Some(Bytes::from(format!("{:05}", i * 15))),
                    end: Some(Bytes::from(format!("{:05}", i * 15 + 15))),
                },
            )
        })
        .collect();
    let got = s
        .scan_ranges(Table::RowIndex, many, usize::MAX)
        .await
        .unwrap();
    assert_eq!(got.len(), 100);
    for (j, rows) in got.iter().enumerate() {
        let i = 99 - j as u32;
        let want: Vec<Bytes> = (i * 15..i * 15 + 15)
            .filter(|n| n % 3 == i % 3)
            .map(|n| Bytes::from(format!("{n:05}")))
            .collect();
        let sorts: Vec<Bytes> = rows.iter().map(|(key, _)| key.sort.clone()).collect();
        assert_eq!(sorts, want, "range {j}");
    }
    // A limit cuts each range to its first rows; reading on from the last
    // sort key returns the rest.
    let cut = s
        .scan_ranges(
            Table::RowIndex,
            vec![
                (Bytes::from_static(b"p2"), SortRange::all()),
                (
                    Bytes::from_static(b"p0"),
                    SortRange {
                        start: Some(v("00300")),
                        end: Some(v("00312")),
                    },
                ),
            ],
            1200,
        )
        .await
        .unwrap();
    assert_eq!(cut[0].len(), 500, "fewer rows than the limit: all of them");
    assert_eq!(cut[1].len(), 4);
    let cut = s
        .scan_ranges(
            Table::RowIndex,
            vec![(Bytes::from_static(b"p1"), SortRange::all())],
            3,
        )
        .await
        .unwrap();
    let sorts: Vec<Bytes> = cut[0].iter().map(|(key, _)| key.sort.clone()).collect();
    assert_eq!(sorts, vec![v("00001"), v("00004"), v("00007")]);
}
