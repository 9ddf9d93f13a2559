//! An in-memory store, for unit tests of the layers above only: it keeps
//! nothing across restarts.

use std::collections::BTreeMap;
use std::ops::Bound;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::{
    Key, Page, PageToken, Partitions, SortRange, Store, StoreError, Table, decode_key, encode_key,
};

/// A `BTreeMap` per table behind one mutex.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<BTreeMap<(Table, Vec<u8>), Bytes>>,
}

impl MemoryStore {
    fn page(
        &self,
        table: Table,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        keep: impl Fn(&[u8]) -> bool,
        limit: usize,
    ) -> Page {
        let map = self.tables.lock();
        let lo = match lo {
            Bound::Included(k) => Bound::Included((table, k)),
            Bound::Excluded(k) => Bound::Excluded((table, k)),
            Bound::Unbounded => Bound::Included((table, Vec::new())),
        };
        let mut rows = Vec::new();
        let mut next = None;
        for ((t, k), v) in map.range((lo, Bound::Unbounded)) {
            let past_hi = match &hi {
                Bound::Excluded(h) => k >= h,
                Bound::Included(h) => k > h,
                Bound::Unbounded => false,
            };
            if *t != table || past_hi || !keep(k) {
                break;
            }
            if rows.len() == limit.max(1) {
                next = rows.last().map(|(key, _): &(Key, Bytes)| {
                    PageToken(encode_key(&key.partition, &key.sort).into())
                });
                break;
            }
            if let Some(key) = decode_key(k) {
                rows.push((key, v.clone()));
            }
        }
        Page { rows, next }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn put_many(&self, table: Table, rows: Vec<(Key, Bytes)>) -> Result<(), StoreError> {
        let mut m = self.tables.lock();
        for (k, v) in rows {
            m.insert((table, encode_key(&k.partition, &k.sort)), v);
        }
        Ok(())
    }

    async fn put_rows(&self, rows: Vec<(Table, Key, Bytes)>) -> Result<(), StoreError> {
        let mut m = self.tables.lock();
        for (t, k, v) in rows {
            m.insert((t, encode_key(&k.partition, &k.sort)), v);
        }
        Ok(())
    }

    async fn get_many(&self, table: Table, keys: &[Key]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let m = self.tables.lock();
        Ok(keys
            .iter()
            .map(|k| m.get(&(table, encode_key(&k.partition, &k.sort))).cloned())
            .collect())
    }

    async fn delete_many(&self, table: Table, keys: &[Key]) -> Result<(), StoreError> {
        let mut m = self.tables.lock();
        for k in keys {
            m.remove(&(table, encode_key(&k.partition, &k.sort)));
        }
        Ok(())
    }

    async fn scan(
        &self,
        table: Table,
        partition: &[u8],
        range: SortRange,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let prefix = encode_key(partition, b"");
        let lo = match page {
            Some(PageToken(t)) if t.starts_with(&prefix) => Bound::Excluded(t.to_vec()),
            Some(_) => return Err(StoreError::BadPageToken { backend: "memory" }),
            None => Bound::Included(encode_key(
                partition,
                range.start.as_deref().unwrap_or_default(),
            )),
        };
        let hi = range.end.as_ref().map_or(Bound::Unbounded, |e| {
            Bound::Excluded(encode_key(partition, e))
        });
        Ok(self.page(table, lo, hi, |k| k.starts_with(&prefix), limit))
    }

    async fn scan_all(
        &self,
        table: Table,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let lo = page.map_or(Bound::Unbounded, |PageToken(t)| Bound::Excluded(t.to_vec()));
        Ok(self.page(table, lo, Bound::Unbounded, |_| true, limit))
    }

    async fn partitions(
        &self,
        table: Table,
        prefix: &[u8],
        len: usize,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Partitions, StoreError> {
        let m = self.tables.lock();
        let mut keys: Vec<Bytes> = Vec::new();
        for (t, k) in m.keys() {
            if *t != table {
                continue;
            }
            let Some(key) = decode_key(k) else { continue };
            let p = key.partition;
            if p.len() == len
                && p.starts_with(prefix)
                && page.as_ref().is_none_or(|PageToken(after)| p > *after)
                && keys.last() != Some(&p)
            {
                if keys.len() == limit.max(1) {
                    let next = keys.last().map(|p| PageToken(p.clone()));
                    return Ok(Partitions { keys, next });
                }
                keys.push(p);
            }
        }
        Ok(Partitions { keys, next: None })
    }

    async fn compare_and_set(
        &self,
        table: Table,
        key: Key,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<bool, StoreError> {
        let mut m = self.tables.lock();
        let k = (table, encode_key(&key.partition, &key.sort));
        if m.get(&k) != expected.as_ref() {
            return Ok(false);
        }
        match new {
            Some(v) => m.insert(k, v),
            None => m.remove(&k),
        };
        Ok(true)
    }

    async fn delete_partition(&self, table: Table, partition: &[u8]) -> Result<(), StoreError> {
        let prefix = encode_key(partition, b"");
        self.tables
            .lock()
            .retain(|(t, k), _| *t != table || !k.starts_with(&prefix));
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
