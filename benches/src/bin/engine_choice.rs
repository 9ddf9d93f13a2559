//! Measures the two embedded engine candidates (fjall, redb) on the chunk
//! workload: 256 KiB values, 2 GiB written in batches of 64 values (16 MiB, a
//! typical cutout write), each batch made crash-safe the cheapest way the
//! engine allows, then random point reads from 1 and 2 threads.
//!
//! `cargo run --release -p neurocube-benches --bin engine-choice -- [--gib 2]`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};

const VALUE: usize = 256 * 1024;
const BATCH: usize = 64;

fn values(n: usize) -> Vec<Vec<u8>> {
    // Incompressible bytes, like Blosc-compressed EM chunks.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..n.min(16))
        .map(|_| {
            let mut v = vec![0u8; VALUE];
            rng.fill(&mut v[..]);
            v
        })
        .collect()
}

fn key(i: usize) -> [u8; 8] {
    // Spread keys like Morton codes of a 3-D grid would be.
    ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes()
}

trait Engine: Send + Sync {
    fn name(&self) -> String;
    fn write_batch(&self, items: &[([u8; 8], &[u8])]);
    fn get(&self, k: &[u8; 8]) -> usize;
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
    mode: fjall::PersistMode,
}

impl Engine for Fjall {
    fn name(&self) -> String {
        format!("fjall ({:?} per batch)", self.mode)
    }
    fn write_batch(&self, items: &[([u8; 8], &[u8])]) {
        let mut b = self.db.batch().durability(Some(self.mode));
        for (k, v) in items {
            b.insert(&self.ks, k.to_vec(), v.to_vec());
        }
        b.commit().expect("fjall commit");
    }
    fn get(&self, k: &[u8; 8]) -> usize {
        self.ks.get(k).expect("fjall get").map_or(0, |v| v.len())
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("chunks");

struct Redb {
    db: redb::Database,
}

impl Engine for Redb {
    fn name(&self) -> String {
        "redb (Durability::Immediate per batch)".into()
    }
    fn write_batch(&self, items: &[([u8; 8], &[u8])]) {
        let tx = self.db.begin_write().expect("redb begin");
        {
            let mut t = tx.open_table(TABLE).expect("redb table");
            for (k, v) in items {
                t.insert(&k[..], *v).expect("redb insert");
            }
        }
        tx.commit().expect("redb commit");
    }
    fn get(&self, k: &[u8; 8]) -> usize {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().expect("redb read");
        let t = tx.open_table(TABLE).expect("redb table");
        t.get(&k[..])
            .expect("redb get")
            .map_or(0, |v| v.value().len())
    }
}

fn run(engine: Arc<dyn Engine>, n: usize, vals: &[Vec<u8>]) {
    let t = Instant::now();
    for b in 0..n / BATCH {
        let items: Vec<([u8; 8], &[u8])> = (0..BATCH)
            .map(|j| {
                let i = b * BATCH + j;
                (key(i), vals[i % vals.len()].as_slice())
            })
            .collect();
        engine.write_batch(&items);
    }
    let w = t.elapsed().as_secs_f64();
    let bytes = (n * VALUE) as f64;
    println!(
        "{:<40} write {:>7.0} MB/s ({:.1} s for {:.2} GiB)",
        engine.name(),
        bytes / w / 1e6,
        w,
        bytes / (1u64 << 30) as f64
    );
    for threads in [1usize, 2] {
        let reads = 4096;
        let t = Instant::now();
        std::thread::scope(|s| {
            for th in 0..threads {
                let e = engine.clone();
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(th as u64);
                    let mut total = 0;
                    for _ in 0..reads / threads {
                        total += e.get(&key(rng.random_range(0..n)));
                    }
                    assert_eq!(total, reads / threads * VALUE);
                });
            }
        });
        let r = t.elapsed().as_secs_f64();
        println!(
            "{:<40} random reads, {threads} thread(s): {:>7.0} reads/s, {:>7.0} MB/s",
            engine.name(),
            reads as f64 / r,
            (reads * VALUE) as f64 / r / 1e6
        );
    }
}

fn open_fjall(dir: &Path, mode: fjall::PersistMode) -> Arc<dyn Engine> {
    let db = fjall::Database::builder(dir)
        .cache_size(256 << 20)
        .open()
        .expect("open fjall");
    let ks = db
        .keyspace("chunks", || {
            fjall::KeyspaceCreateOptions::default().with_kv_separation(Some(
                fjall::KvSeparationOptions::default().compression(fjall::CompressionType::None),
            ))
        })
        .expect("keyspace");
    Arc::new(Fjall { db, ks, mode })
}

fn main() {
    let gib: f64 = std::env::args()
        .skip_while(|a| a != "--gib")
        .nth(1)
        .map_or(2.0, |s| s.parse().expect("--gib takes a number"));
    let n = ((gib * (1u64 << 30) as f64) as usize / VALUE) / BATCH * BATCH;
    let vals = values(n);
    println!("engine choice: {n} values of 256 KiB, batches of {BATCH}");
    let base = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    {
        let e = open_fjall(
            &base.path().join("fjall-buffer"),
            fjall::PersistMode::Buffer,
        );
        run(e, n, &vals);
    }
    std::fs::remove_dir_all(base.path().join("fjall-buffer")).ok();
    {
        let e = open_fjall(
            &base.path().join("fjall-sync"),
            fjall::PersistMode::SyncData,
        );
        run(e, n, &vals);
    }
    std::fs::remove_dir_all(base.path().join("fjall-sync")).ok();
    {
        let mut b = redb::Builder::new();
        b.set_cache_size(256 << 20);
        let db = b.create(base.path().join("redb.db")).expect("create redb");
        run(Arc::new(Redb { db }), n, &vals);
    }
}
