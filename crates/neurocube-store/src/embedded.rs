//! The embedded backend: fjall (an LSM-tree engine with key-value
//! separation for large values) in one directory on local disk. Chosen over
//! redb by measurement: see docs/decisions/0001-embedded-engine.md.
//!
//! Each table is a fjall keyspace; keys are [`crate::encode_key`]. Every
//! write is one atomic batch persisted to the journal before it returns
//! (`fsync` by default, or a flush to the OS that survives a killed process
//! but not a power cut). Engine calls are blocking and run on tokio's
//! blocking pool, but for small reads (see [`INLINE_KEYS`]), which run on
//! the calling thread.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{
    AbstractTree, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode,
};

use crate::striped::Stripes;
use crate::{
    Key, Page, PageToken, Partitions, SortRange, Store, StoreError, Table, decode_key,
    decode_key_shared, encode_key,
};

mod ingest;

const BACKEND: &str = "embedded";

/// The index table merges level 0 into the level below once it has this
/// many runs (fjall's default is 4). Bulk uploads ingest a run of random
/// keys (root ids, cells) per request, each overlapping the whole level
/// below, so every merge rewrites that level: merging 20 runs at once
/// instead of 4 made a 10M-synapse upload 1.3–1.5× faster (BENCHMARKS.md),
/// with no change to query latency. At 20 runs fjall also starts to slow
/// the table's journal writers, so a merge begins as soon as they are
/// slowed. fjall keeps a table's settings from its creation: data
/// directories made before keep 4.
const INDEX_L0_THRESHOLD: u8 = 20;

/// How far a write is persisted before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` the journal: survives power loss.
    #[default]
    Fsync,
    /// Flush the journal to the OS: survives a killed process, not a power cut.
    Flush,
}

/// Settings of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Data directory (created if missing).
    pub path: PathBuf,
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// Persistence of each write.
    pub durability: Durability,
    /// Threads that flush memtables and compact (at least 1).
    pub engine_threads: usize,
}

impl EmbeddedOptions {
    /// Defaults for a directory: 256 MiB cache, fsync, one engine thread.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_bytes: 256 << 20,
            durability: Durability::Fsync,
            engine_threads: 1,
        }
    }
}

/// fjall behind the [`Store`] trait.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    tables: HashMap<Table, Keyspace>,
    stripes: Stripes,
    ingesting: ingest::IngestQueues,
    mode: PersistMode,
}

fn engine(op: &'static str) -> impl FnOnce(fjall::Error) -> StoreError {
    move |e| StoreError::Engine {
        backend: BACKEND,
        op,
        source: Box::new(e),
    }
}

impl EmbeddedStore {
    /// Open (or create) the store in a directory.
    pub fn open(opts: &EmbeddedOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&opts.path).map_err(|e| StoreError::Engine {
            backend: BACKEND,
            op: "create the data directory",
            source: Box::new(e),
        })?;
        // Chunk values are Blosc frames already: compressing them again in
        // the journal costs CPU (measured) and saves nothing.
        let db = Database::builder(&opts.path)
            .cache_size(opts.cache_bytes)
            .journal_compression(fjall::CompressionType::None)
            // fjall's own default is a thread per core (up to 4). With more
            // than one, its first thread hands compaction requests on to the
            // others and, while they are busy, takes the same request back at
            // once: it spins on its queue, a whole core on this 2-core kind
            // of machine during uploads and write storms (perf). One thread
            // flushes and compacts in turn: bulk upload +17% (BENCHMARKS.md).
            .worker_threads(opts.engine_threads.max(1))
            .open()
            .map_err(engine("open"))?;
        let mut tables = HashMap::new();
        for t in Table::ALL {
            let ks = db
                .keyspace(t.name(), || match t {
                    // Chunks are already Blosc-compressed and large: keep
                    // them out of the LSM tree, uncompressed.
                    Table::Chunks => KeyspaceCreateOptions::default().with_kv_separation(Some(
                        KvSeparationOptions::default().compression(fjall::CompressionType::None),
                    )),
                    // Index entries: see INDEX_L0_THRESHOLD.
                    Table::RowIndex => {
                        KeyspaceCreateOptions::default().compaction_strategy(Arc::new(
                            fjall::compaction::Leveled::default()
                                .with_l0_threshold(INDEX_L0_THRESHOLD),
                        ))
                    }
                    _ => KeyspaceCreateOptions::default(),
                })
                .map_err(engine("open a table"))?;
            tables.insert(t, ks);
        }
        let mode = match opts.durability {
            Durability::Fsync => PersistMode::SyncData,
            Durability::Flush => PersistMode::Buffer,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tables,
                stripes: Stripes::default(),
                ingesting: Table::ALL
                    .iter()
                    .map(|t| (*t, ingest::IngestQueue::default()))
                    .collect(),
                mode,
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Engine {
                backend: BACKEND,
                op: "run a blocking task",
                source: Box::new(e),
            })?
    }
}

/// Reads of at most this many keys, or pages of at most [`INLINE_ROWS`]
/// rows, outside the chunks table run on the calling thread: such a read
/// from the engine's block cache or the OS page cache takes less time than
/// handing it to the blocking pool and back, two thread wake-ups (about
/// 0.1 ms of a 0.6 ms `synapse_query`; see BENCHMARKS.md). Chunk values
/// (large, read from blob files), long scans and every write (journal
/// sync) go to the pool.
pub const INLINE_KEYS: usize = 16;
/// See [`INLINE_KEYS`].
pub const INLINE_ROWS: usize = 2000;

/// Listing partitions steps over this many keys of one partition before
/// seeking past it.
const SEEK_AFTER: usize = 16;

/// `scan_ranges` calls with at least this many ranges use two threads.
const PARALLEL_RANGES: usize = 32;

impl Inner {
    fn ks(&self, t: Table) -> &Keyspace {
        &self.tables[&t]
    }

    fn write(&self, t: Table, rows: Vec<(Vec<u8>, Option<Bytes>)>) -> Result<(), StoreError> {
        let ks = self.ks(t);
        let mut batch = self.db.batch().durability(Some(self.mode));
        for (k, v) in rows {
            match v {
                Some(v) => batch.insert(ks, k, v),
                None => batch.remove(ks, k),
            }
        }
        batch.commit().map_err(engine("commit a write"))
    }

    /// Partition keys of `len` bytes beginning with `prefix`, walking the
    /// keys in order and seeking past a partition with many.
    fn partitions(
        &self,
        t: Table,
        prefix: &[u8],
        len: usize,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Partitions, StoreError> {
        let Some(head) = partition_head(prefix, len) else {
            return Ok(Partitions::default());
        };
        let hi = prefix_end(&head);
        let mut lo = match page {
            Some(PageToken(after)) => match prefix_end(&encode_key(&after, b"")) {
                Bound::Excluded(k) => Bound::Included(k),
                _ => return Ok(Partitions::default()),
            },
            None => Bound::Included(head),
        };
        // Walk forward over small partitions; seek past a large one.
        let mut keys: Vec<Bytes> = Vec::new();
        let mut iter = self.ks(t).range((lo, hi.clone()));
        let mut same = 0;
        loop {
            let Some(item) = iter.next() else {
                return Ok(Partitions { keys, next: None });
            };
            let k = item.key().map_err(engine("scan"))?;
            let key = decode_key(&k).ok_or_else(|| StoreError::Engine {
                backend: BACKEND,
                op: "decode a stored key",
                source: "key without a partition prefix".into(),
            })?;
            if keys.last() == Some(&key.partition) {
                same += 1;
                if same >= SEEK_AFTER {
                    same = 0;
                    lo = match prefix_end(&encode_key(&key.partition, b"")) {
                        Bound::Excluded(k) => Bound::Included(k),
                        _ => return Ok(Partitions { keys, next: None }),
                    };
                    iter = self.ks(t).range((lo, hi.clone()));
                }
                continue;
            }
            if keys.len() == limit.max(1) {
                let next = keys.last().map(|p| PageToken(p.clone()));
                return Ok(Partitions { keys, next });
            }
            same = 0;
            keys.push(key.partition);
        }
    }

    fn ranges(
        &self,
        table: Table,
        ranges: Vec<(Bytes, SortRange)>,
        limit: usize,
    ) -> Result<Vec<Vec<(Key, Bytes)>>, StoreError> {
        ranges
            .into_iter()
            .map(|(p, r)| {
                let prefix = encode_key(&p, b"");
                let lo = Bound::Included(encode_key(&p, r.start.as_deref().unwrap_or_default()));
                let hi = match &r.end {
                    Some(e) => Bound::Excluded(encode_key(&p, e)),
                    None => prefix_end(&prefix),
                };
                Ok(self.page(table, lo, hi, limit)?.rows)
            })
            .collect()
    }

    fn page(
        &self,
        t: Table,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let mut rows = Vec::new();
        let mut last = None;
        for item in self.ks(t).range((lo, hi)) {
            if rows.len() == limit.max(1) {
                return Ok(Page {
                    rows,
                    next: last.map(PageToken),
                });
            }
            let (k, v) = item.into_inner().map_err(engine("scan"))?;
            // The engine's slices are `Bytes`: the key's parts share them.
            let k = Bytes::from(k);
            let key = decode_key_shared(&k).ok_or_else(|| StoreError::Engine {
                backend: BACKEND,
                op: "decode a stored key",
                source: "key without a partition prefix".into(),
            })?;
            rows.push((key, Bytes::from(v)));
            last = Some(k);
        }
        Ok(Page { rows, next: None })
    }
}

/// The encoded start of every key whose partition is `len` bytes long and
/// begins with `prefix` (`None`: no partition can be that long).
fn partition_head(prefix: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut head = u16::try_from(len).ok()?.to_be_bytes().to_vec();
    head.extend_from_slice(prefix);
    Some(head)
}

/// The smallest byte string greater than every string with this prefix.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return Bound::Excluded(p);
        }
    }
    Bound::Unbounded
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn put_many(&self, table: Table, rows: Vec<(Key, Bytes)>) -> Result<(), StoreError> {
        self.blocking(move |s| {
            let _g = s.stripes.lock_all(rows.iter().map(|(k, _)| k));
            s.write(
                table,
                rows.into_iter()
                    .map(|(k, v)| (encode_key(&k.partition, &k.sort), Some(v)))
                    .collect(),
            )
        })
        .await
    }

    async fn put_rows(&self, rows: Vec<(Table, Key, Bytes)>) -> Result<(), StoreError> {
        self.blocking(move |s| {
            let _g = s.stripes.lock_all(rows.iter().map(|(_, k, _)| k));
            let mut batch = s.db.batch().durability(Some(s.mode));
            for (t, k, v) in rows {
                batch.insert(s.ks(t), encode_key(&k.partition, &k.sort), v);
            }
            batch.commit().map_err(engine("commit a write"))
        })
        .await
    }

    fn ingests(&self) -> bool {
        true
    }

    async fn ingest(&self, table: Table, rows: Vec<(Key, Bytes)>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.blocking(move |s| {
            let run = ingest::sorted_run(
                rows.into_iter()
                    .map(|(k, v)| (encode_key(&k.partition, &k.sort), v))
                    .collect(),
            );
            let ks = s.ks(table);
            s.ingesting[&table].ingest(
                run,
                || ks.tree.l0_run_count(),
                |entries| {
                    let mut ingestion =
                        ks.start_ingestion().map_err(engine("start an ingestion"))?;
                    for (k, v) in entries {
                        ingestion.write(k, v).map_err(engine("ingest"))?;
                    }
                    ingestion.finish().map_err(engine("finish an ingestion"))
                },
            )
        })
        .await
    }

    async fn get_many(&self, table: Table, keys: &[Key]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let keys: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| encode_key(&k.partition, &k.sort))
            .collect();
        let inline = table != Table::Chunks && keys.len() <= INLINE_KEYS;
        let read = move |s: &Inner| {
            let ks = s.ks(table);
            keys.iter()
                .map(|k| Ok(ks.get(k).map_err(engine("read"))?.map(Bytes::from)))
                .collect()
        };
        if inline {
            return read(&self.inner);
        }
        self.blocking(read).await
    }

    async fn delete_many(&self, table: Table, keys: &[Key]) -> Result<(), StoreError> {
        let keys = keys.to_vec();
        self.blocking(move |s| {
            let _g = s.stripes.lock_all(keys.iter());
            s.write(
                table,
                keys.iter()
                    .map(|k| (encode_key(&k.partition, &k.sort), None))
                    .collect(),
            )
        })
        .await
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
        let mut lo = Bound::Included(encode_key(
            partition,
            range.start.as_deref().unwrap_or_default(),
        ));
        if let Some(PageToken(t)) = page {
            if !t.starts_with(&prefix) {
                return Err(StoreError::BadPageToken { backend: BACKEND });
            }
            lo = Bound::Excluded(t.to_vec());
        }
        let hi = match &range.end {
            Some(e) => Bound::Excluded(encode_key(partition, e)),
            None => prefix_end(&prefix),
        };
        if table != Table::Chunks && limit <= INLINE_ROWS {
            return self.inner.page(table, lo, hi, limit);
        }
        self.blocking(move |s| s.page(table, lo, hi, limit)).await
    }

    async fn scan_ranges(
        &self,
        table: Table,
        ranges: Vec<(Bytes, SortRange)>,
        limit: usize,
    ) -> Result<Vec<Vec<(Key, Bytes)>>, StoreError> {
        // Many ranges are read on two blocking threads (a query's batch of
        // partitions is CPU-bound in the engine's block decoding).
        if ranges.len() >= PARALLEL_RANGES {
            let mut first = ranges;
            let second = first.split_off(first.len() / 2);
            let (mut a, b) = tokio::try_join!(
                self.blocking(move |s| s.ranges(table, first, limit)),
                self.blocking(move |s| s.ranges(table, second, limit)),
            )?;
            a.extend(b);
            return Ok(a);
        }
        self.blocking(move |s| s.ranges(table, ranges, limit)).await
    }

    async fn scan_all(
        &self,
        table: Table,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let lo = page.map_or(Bound::Unbounded, |PageToken(t)| Bound::Excluded(t.to_vec()));
        self.blocking(move |s| s.page(table, lo, Bound::Unbounded, limit))
            .await
    }

    async fn compare_and_set(
        &self,
        table: Table,
        key: Key,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<bool, StoreError> {
        self.blocking(move |s| {
            let _g = s.stripes.lock_all(std::iter::once(&key));
            let k = encode_key(&key.partition, &key.sort);
            let current = s.ks(table).get(&k).map_err(engine("read"))?;
            if current.as_deref() != expected.as_deref() {
                return Ok(false);
            }
            s.write(table, vec![(k, new)])?;
            Ok(true)
        })
        .await
    }

    async fn compare_and_set_many(
        &self,
        table: Table,
        items: Vec<(Key, Option<Bytes>, Option<Bytes>)>,
    ) -> Result<Vec<bool>, StoreError> {
        self.blocking(move |s| {
            let _g = s.stripes.lock_all(items.iter().map(|(k, _, _)| k));
            let mut won = Vec::with_capacity(items.len());
            let mut rows = Vec::new();
            for (key, expected, new) in items {
                let k = encode_key(&key.partition, &key.sort);
                let current = s.ks(table).get(&k).map_err(engine("read"))?;
                let ok = current.as_deref() == expected.as_deref();
                if ok {
                    rows.push((k, new));
                }
                won.push(ok);
            }
            if !rows.is_empty() {
                s.write(table, rows)?;
            }
            Ok(won)
        })
        .await
    }

    async fn partitions(
        &self,
        table: Table,
        prefix: &[u8],
        len: usize,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Partitions, StoreError> {
        let prefix = prefix.to_vec();
        self.blocking(move |s| s.partitions(table, &prefix, len, page, limit))
            .await
    }

    async fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        len: usize,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let Some(head) = partition_head(prefix, len) else {
            return Ok(Page::default());
        };
        let hi = prefix_end(&head);
        let lo = match page {
            Some(PageToken(t)) if t.starts_with(&head) => Bound::Excluded(t.to_vec()),
            Some(_) => return Err(StoreError::BadPageToken { backend: BACKEND }),
            None => Bound::Included(head),
        };
        self.blocking(move |s| s.page(table, lo, hi, limit)).await
    }

    async fn delete_partition(&self, table: Table, partition: &[u8]) -> Result<(), StoreError> {
        let prefix = encode_key(partition, b"");
        self.blocking(move |s| {
            loop {
                let keys: Vec<Vec<u8>> = s
                    .ks(table)
                    .prefix(&prefix)
                    .take(1024)
                    .map(|g| g.key().map(|k| k.to_vec()).map_err(engine("scan")))
                    .collect::<Result<_, _>>()?;
                if keys.is_empty() {
                    return Ok(());
                }
                let decoded: Vec<Key> = keys.iter().filter_map(|k| decode_key(k)).collect();
                let _g = s.stripes.lock_all(decoded.iter());
                s.write(table, keys.into_iter().map(|k| (k, None)).collect())?;
            }
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.blocking(|s| s.db.persist(PersistMode::SyncAll).map_err(engine("flush")))
            .await
    }
}
