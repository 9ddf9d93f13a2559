//! The Cassandra / ScyllaDB backend, on the `scylla` driver.
//!
//! Each [`Table`] is a CQL table `(p blob, s blob, v blob, PRIMARY KEY (p, s))`
//! in one keyspace: the partition key is `p`, the sort key the clustering
//! column `s`. Chunk partitions are Morton super-blocks (see
//! `neurocube-service`'s `keys.rs`), so a cutout reads few partitions, each
//! with one `s IN (...)` query. The keyspace and tables are created when the
//! store opens; every statement is prepared once, there.
//!
//! * Reads use the read consistency, writes the write consistency
//!   (`LOCAL_QUORUM` by default). Requests in flight are bounded by a
//!   semaphore (`max_concurrency`), and each has a client-side timeout.
//! * `compare_and_set` is a lightweight transaction (Paxos): `INSERT … IF NOT
//!   EXISTS`, `UPDATE … IF v = ?`, `DELETE … IF v = ?`; "absent stays
//!   absent" is a `SERIAL` read.
//! * `scan` pages by key: the page token is the last sort key returned.
//!   `scan_all` walks the token ring (`token(p) > ?`), resuming inside a
//!   partition when a page ends there; its token is (token, partition, sort).
//! * Connection failures and timeouts become [`StoreError::Unavailable`]
//!   (HTTP 503 with `Retry-After`); the driver reconnects by itself.
//!
//! **Caveat: LWT and plain writes.** Cassandra orders writes by timestamp,
//! and a Paxos write's timestamp comes from its ballot, a plain write's from
//! the coordinator's clock. Mixing the two on one row is therefore only
//! linearizable when clocks agree (one node, or NTP-synced nodes and
//! conflicting writes further apart than the skew). neurocube writes partly
//! covered chunks with CAS, and fully covered chunks with plain writes: a
//! plain write replaces the whole chunk, so a CAS based on a value read
//! before it fails its `IF v = ?` and is retried on the new value. See
//! docs/cassandra.md.

mod options;
mod statements;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tokio::sync::Semaphore;

use options::{BACKEND, engine, exec_error, session_error};
pub use options::{
    CassandraOptions, parse_consistency, parse_serial_consistency, validate_keyspace,
};
use statements::{Stmts, prepare_table, table_options};

use crate::{Key, Page, PageToken, Partitions, SortRange, Store, StoreError, Table};

/// Sort keys per `IN (...)` read: small batches spread one cutout over many
/// concurrent requests (and Cassandra read threads); measured 64 → 4 took a
/// 1024×1024×64 read from 71 to 163 MiB/s on one local node.
const IN_BATCH: usize = 4;

/// Attempts after the first of a request no coordinator ran.
const RETRIES: u32 = 4;

struct Inner {
    session: Session,
    opts: CassandraOptions,
    hosts: String,
    limit: Semaphore,
    tables: Vec<Stmts>,
}

/// Cassandra/ScyllaDB behind the [`Store`] trait.
#[derive(Clone)]
pub struct CassandraStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CassandraStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraStore")
            .field("hosts", &self.inner.hosts)
            .field("keyspace", &self.inner.opts.keyspace)
            .finish_non_exhaustive()
    }
}

fn tidx(t: Table) -> usize {
    match t {
        Table::Meta => 0,
        Table::Chunks => 1,
        Table::Jobs => 2,
        Table::Rows => 3,
        Table::RowIndex => 4,
    }
}

impl CassandraStore {
    /// Connect, create the keyspace and tables if missing, and prepare the
    /// statements. While no node answers, retry with exponential backoff
    /// (each retry logged) until `startup_deadline` passes.
    pub async fn open(opts: CassandraOptions) -> Result<Self, StoreError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1u32;
        loop {
            match Self::try_open(&opts).await {
                Ok(s) => {
                    if attempt > 1 {
                        tracing::info!(attempt, hosts = %opts.hosts(), "cassandra store reachable");
                    }
                    return Ok(s);
                }
                Err(StoreError::Unavailable { reason, .. }) => {
                    let elapsed = started.elapsed();
                    if elapsed + delay > opts.startup_deadline {
                        return Err(StoreError::Unavailable {
                            backend: BACKEND,
                            reason: format!(
                                "{}; gave up after {attempt} attempts in {:.0} s (store.cassandra.startup_deadline_secs = {})",
                                reason.trim_end_matches("; retry later"),
                                elapsed.as_secs_f64(),
                                opts.startup_deadline.as_secs()
                            ),
                        });
                    }
                    tracing::warn!(
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        "cassandra store unavailable at start: {}; retrying",
                        reason.trim_end_matches("; retry later")
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_open(opts: &CassandraOptions) -> Result<Self, StoreError> {
        let hosts = opts.hosts();
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(opts.request_timeout))
            .consistency(opts.read_consistency)
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&opts.nodes)
            .connection_timeout(opts.connect_timeout)
            .keyspaces_to_fetch([opts.keyspace.clone()])
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(|e| session_error(&hosts, e))?;
        let ks = &opts.keyspace;
        validate_keyspace(ks).map_err(|r| StoreError::Engine {
            backend: BACKEND,
            op: "open",
            source: r.into(),
        })?;
        let ddl = |q: String| {
            let session = &session;
            let hosts = &hosts;
            async move {
                session
                    .query_unpaged(q, ())
                    .await
                    .map_err(|e| exec_error(hosts, "create the schema", e))
            }
        };
        ddl(format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
            opts.replication
        ))
        .await?;
        for t in Table::ALL {
            ddl(format!(
                "CREATE TABLE IF NOT EXISTS {ks}.{} (p blob, s blob, v blob, PRIMARY KEY (p, s)){}",
                t.name(),
                table_options(t)
            ))
            .await?;
        }
        let mut tables = Vec::new();
        for t in Table::ALL {
            tables.push(prepare_table(&session, opts, &hosts, t).await?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                session,
                opts: opts.clone(),
                limit: Semaphore::new(opts.max_concurrency.max(1)),
                hosts,
                tables,
            }),
        })
    }

    /// Drop this store's keyspace and everything in it (tests clean up with it).
    pub async fn drop_keyspace(&self) -> Result<(), StoreError> {
        let q = format!("DROP KEYSPACE IF EXISTS {}", self.inner.opts.keyspace);
        self.inner
            .session
            .query_unpaged(q, ())
            .await
            .map_err(|e| exec_error(&self.inner.hosts, "drop the keyspace", e))?;
        Ok(())
    }

    /// The keyspace.
    #[must_use]
    pub fn keyspace(&self) -> &str {
        &self.inner.opts.keyspace
    }

    fn stmts(&self, t: Table) -> &Stmts {
        &self.inner.tables[tidx(t)]
    }

    async fn run(
        &self,
        op: &'static str,
        stmt: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        let _permit = self
            .inner
            .limit
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable {
                backend: BACKEND,
                reason: "the store is closing".into(),
            })?;
        // A request a coordinator refused before running it (a node
        // shutting down, too few replicas for a moment) is sent again, a
        // few times, through the driver's next choice of coordinator.
        let mut attempt = 0u32;
        loop {
            match self.inner.session.execute_unpaged(stmt, &values).await {
                Ok(r) => return Ok(r),
                Err(e) if attempt < RETRIES && options::not_executed(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(e) => return Err(exec_error(&self.inner.hosts, op, e)),
            }
        }
    }

    fn concurrency(&self) -> usize {
        self.inner.opts.max_concurrency.max(1)
    }
}

fn rows<R>(op: &'static str, res: QueryResult) -> Result<Vec<R>, StoreError>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let res = res.into_rows_result().map_err(|e| engine(op, e))?;
    res.rows::<R>()
        .map_err(|e| engine(op, e))?
        .collect::<Result<Vec<R>, _>>()
        .map_err(|e| engine(op, e))
}

/// Whether an LWT applied: the `[applied]` column comes first.
fn applied(res: QueryResult) -> Result<bool, StoreError> {
    let r: Vec<Row> = rows("compare and set", res)?;
    match r.first().and_then(|row| row.columns.first()) {
        Some(Some(CqlValue::Boolean(b))) => Ok(*b),
        _ => Err(StoreError::Engine {
            backend: BACKEND,
            op: "compare and set",
            source: "the LWT result has no [applied] column".into(),
        }),
    }
}

fn limit_i32(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

/// `scan_all` position: last token, partition and sort key returned.
fn encode_ring(token: i64, p: &[u8], s: &[u8]) -> PageToken {
    let mut b = Vec::with_capacity(11 + p.len() + s.len());
    b.push(b'R');
    b.extend_from_slice(&token.to_be_bytes());
    b.extend_from_slice(&(p.len() as u16).to_be_bytes());
    b.extend_from_slice(p);
    b.extend_from_slice(s);
    PageToken(b.into())
}

fn decode_ring(t: &PageToken) -> Option<(i64, Bytes, Bytes)> {
    let b = &t.0;
    if b.first() != Some(&b'R') || b.len() < 11 {
        return None;
    }
    let token = i64::from_be_bytes(b[1..9].try_into().ok()?);
    let plen = u16::from_be_bytes([b[9], b[10]]) as usize;
    let p = b.get(11..11 + plen)?;
    Some((token, b.slice_ref(p), b.slice(11 + plen..)))
}

fn bad_token() -> StoreError {
    StoreError::BadPageToken { backend: BACKEND }
}

#[async_trait]
impl Store for CassandraStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn put_many(&self, table: Table, rows: Vec<(Key, Bytes)>) -> Result<(), StoreError> {
        let st = &self.stmts(table).put;
        stream::iter(rows)
            .map(|(k, v)| async move {
                self.run("write", st, (&k.partition[..], &k.sort[..], &v[..]))
                    .await
                    .map(drop)
            })
            .buffer_unordered(self.concurrency())
            .try_collect::<()>()
            .await
    }

    async fn put_rows(&self, rows: Vec<(Table, Key, Bytes)>) -> Result<(), StoreError> {
        // Concurrent plain writes (a logged batch across partitions would
        // cost a batchlog round trip for little): durable when all return.
        stream::iter(rows)
            .map(|(t, k, v)| async move {
                let st = &self.stmts(t).put;
                self.run("write", st, (&k.partition[..], &k.sort[..], &v[..]))
                    .await
                    .map(drop)
            })
            .buffer_unordered(self.concurrency())
            .try_collect::<()>()
            .await
    }

    async fn get_many(&self, table: Table, keys: &[Key]) -> Result<Vec<Option<Bytes>>, StoreError> {
        // One `s IN (...)` query per partition and batch of sort keys.
        let mut by_partition: HashMap<Bytes, Vec<Bytes>> = HashMap::new();
        for k in keys {
            let sorts = by_partition.entry(k.partition.clone()).or_default();
            if !sorts.contains(&k.sort) {
                sorts.push(k.sort.clone());
            }
        }
        let st = &self.stmts(table).get_in;
        let queries: Vec<(Bytes, Vec<Bytes>)> = by_partition
            .into_iter()
            .flat_map(|(p, sorts)| {
                sorts
                    .chunks(IN_BATCH)
                    .map(|c| (p.clone(), c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let found: Vec<Vec<(Bytes, Bytes, Bytes)>> = stream::iter(queries)
            .map(|(p, sorts)| async move {
                let list: Vec<&[u8]> = sorts.iter().map(|s| &s[..]).collect();
                let res = self.run("read", st, (&p[..], list)).await?;
                let got: Vec<(Bytes, Bytes)> = rows("read", res)?;
                Ok::<_, StoreError>(got.into_iter().map(|(s, v)| (p.clone(), s, v)).collect())
            })
            .buffer_unordered(self.concurrency())
            .try_collect()
            .await?;
        let mut map: HashMap<(Bytes, Bytes), Bytes> = HashMap::new();
        for (p, s, v) in found.into_iter().flatten() {
            map.insert((p, s), v);
        }
        Ok(keys
            .iter()
            .map(|k| map.get(&(k.partition.clone(), k.sort.clone())).cloned())
            .collect())
    }

    async fn delete_many(&self, table: Table, keys: &[Key]) -> Result<(), StoreError> {
        let st = &self.stmts(table).del;
        stream::iter(keys.to_vec())
            .map(|k| async move {
                self.run("delete", st, (&k.partition[..], &k.sort[..]))
                    .await
                    .map(drop)
            })
            .buffer_unordered(self.concurrency())
            .try_collect::<()>()
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
        if limit == 0 {
            return Ok(Page {
                rows: vec![],
                next: page,
            });
        }
        let (lower, from) = match page {
            Some(t) => {
                if t.0.first() != Some(&b'S') {
                    return Err(bad_token());
                }
                (2, Some(t.0.slice(1..)))
            }
            None => (usize::from(range.start.is_some()), range.start.clone()),
        };
        let upper = usize::from(range.end.is_some());
        let st = &self.stmts(table).scan[lower][upper];
        let n = limit_i32(limit);
        let res = match (&from, &range.end) {
            (None, None) => self.run("scan", st, (partition, n)).await?,
            (Some(f), None) => self.run("scan", st, (partition, &f[..], n)).await?,
            (None, Some(e)) => self.run("scan", st, (partition, &e[..], n)).await?,
            (Some(f), Some(e)) => self.run("scan", st, (partition, &f[..], &e[..], n)).await?,
        };
        let got: Vec<(Bytes, Bytes)> = rows("scan", res)?;
        let next = if got.len() >= limit {
            got.last().map(|(s, _)| {
                let mut b = vec![b'S'];
                b.extend_from_slice(s);
                PageToken(b.into())
            })
        } else {
            None
        };
        let p = Bytes::copy_from_slice(partition);
        Ok(Page {
            rows: got
                .into_iter()
                .map(|(s, v)| (Key::new(p.clone(), s), v))
                .collect(),
            next,
        })
    }

    async fn scan_ranges(
        &self,
        table: Table,
        ranges: Vec<(Bytes, SortRange)>,
        limit: usize,
    ) -> Result<Vec<Vec<(Key, Bytes)>>, StoreError> {
        stream::iter(ranges)
            .map(|(p, r)| async move { crate::scan_limited(self, table, &p, r, limit).await })
            .buffered(self.concurrency().min(64))
            .try_collect()
            .await
    }

    async fn scan_all(
        &self,
        table: Table,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        if limit == 0 {
            return Ok(Page {
                rows: vec![],
                next: page,
            });
        }
        let st = self.stmts(table);
        let mut out: Vec<(i64, Key, Bytes)> = Vec::new();
        // Resume inside the partition where the last page ended, then walk
        // the ring from its token on.
        let mut after = i64::MIN;
        if let Some(t) = &page {
            let (token, p, s) = decode_ring(t).ok_or_else(bad_token)?;
            let res = self
                .run("scan", &st.scan[2][0], (&p[..], &s[..], limit_i32(limit)))
                .await?;
            let got: Vec<(Bytes, Bytes)> = rows("scan", res)?;
            out.extend(
                got.into_iter()
                    .map(|(s, v)| (token, Key::new(p.clone(), s), v)),
            );
            after = token;
        }
        if out.len() < limit {
            let want = limit - out.len();
            let res = self.run("scan", &st.ring, (after, limit_i32(want))).await?;
            let got: Vec<(i64, Bytes, Bytes, Bytes)> = rows("scan", res)?;
            out.extend(got.into_iter().map(|(t, p, s, v)| (t, Key::new(p, s), v)));
        }
        let next = if out.len() >= limit {
            out.last()
                .map(|(t, k, _)| encode_ring(*t, &k.partition, &k.sort))
        } else {
            None
        };
        Ok(Page {
            rows: out.into_iter().map(|(_, k, v)| (k, v)).collect(),
            next,
        })
    }

    async fn compare_and_set(
        &self,
        table: Table,
        key: Key,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<bool, StoreError> {
        let st = self.stmts(table);
        let (p, s) = (&key.partition[..], &key.sort[..]);
        let op = "compare and set";
        match (expected, new) {
            (None, Some(n)) => applied(self.run(op, &st.cas_insert, (p, s, &n[..])).await?),
            (Some(e), Some(n)) => {
                applied(self.run(op, &st.cas_update, (&n[..], p, s, &e[..])).await?)
            }
            (Some(e), None) => applied(self.run(op, &st.cas_delete, (p, s, &e[..])).await?),
            (None, None) => {
                let res = self.run(op, &st.serial_get, (p, s)).await?;
                let got: Vec<(Option<Bytes>,)> = rows(op, res)?;
                Ok(got.is_empty())
            }
        }
    }

    async fn partitions(
        &self,
        table: Table,
        prefix: &[u8],
        len: usize,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Partitions, StoreError> {
        // Partition keys are hashed onto the ring: walk it (keys only) and
        // keep the matching ones; a page may keep none and still go on.
        let st = self.stmts(table);
        let want = limit_i32(limit.max(1));
        let res = match &page {
            None => {
                self.run("list partitions", &st.parts_first, (want,))
                    .await?
            }
            Some(PageToken(after)) => {
                self.run("list partitions", &st.parts_after, (&after[..], want))
                    .await?
            }
        };
        let got: Vec<(Bytes,)> = rows("list partitions", res)?;
        let next = (got.len() >= limit.max(1))
            .then(|| got.last().map(|(p,)| PageToken(p.clone())))
            .flatten();
        let keys = got
            .into_iter()
            .map(|(p,)| p)
            .filter(|p| p.len() == len && p.starts_with(prefix))
            .collect();
        Ok(Partitions { keys, next })
    }

    async fn delete_partition(&self, table: Table, partition: &[u8]) -> Result<(), StoreError> {
        self.run(
            "delete a partition",
            &self.stmts(table).del_partition,
            (partition,),
        )
        .await
        .map(drop)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Writes are acknowledged by the cluster at the write consistency;
        // there is nothing buffered on this side.
        Ok(())
    }
}
