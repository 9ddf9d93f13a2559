//! Throughput of the resolution pyramid and of slice ingest, end to end on
//! the embedded store (flush durability) in a temporary directory:
//!
//! - downsample: level 0 of `--gib` GiB of uint8 (4096 x 4096 x 64·gib,
//!   chunks 128 x 128 x 16, EM-like content) into all coarser levels by a
//!   downsample job run by `--workers` job workers; MB/s of level-0 input;
//! - ingest: `--gib` GiB of 8-bit 2048 x 2048 PNG slices through
//!   `neurocube ingest` (decode, write; no downsampling); MB/s of decoded voxels.
//!
//! `cargo run --release -p neurocube-benches --bin pyramid -- --gib 0.5`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use neurocube_core::meta::{Channel, ChannelType, Compression, Dataset, Scaling};
use neurocube_core::{Box3, DType};
use neurocube_service::jobs::{JobState, JobsConfig};
use neurocube_service::{ServiceConfig, Services};
use neurocube_store::embedded::{Durability, EmbeddedOptions, EmbeddedStore};

fn dn(s: &str) -> neurocube_core::DatasetName {
    neurocube_core::DatasetName::parse(s).unwrap()
}

fn cn(s: &str) -> neurocube_core::ChannelName {
    neurocube_core::ChannelName::parse(s).unwrap()
}

#[derive(Parser)]
struct Args {
    /// GiB of level-0 data (downsample) and of decoded slices (ingest).
    #[arg(long, default_value_t = 0.5)]
    gib: f64,
    /// Job workers for the downsample job.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// `downsample`, `ingest` or `both`.
    #[arg(long, default_value = "both")]
    what: String,
}

/// EM-like voxel: smooth cells, membranes, noise (compresses like EM).
fn voxel(x: u64, y: u64, z: u64) -> u8 {
    let h =
        (x.wrapping_mul(0x9E37_79B9) ^ y.wrapping_mul(0x85EB_CA6B) ^ z.wrapping_mul(0xC2B2_AE35))
            .wrapping_mul(0x2545_F491);
    let cell = ((x / 40 + y / 40 * 7 + z / 8 * 13) % 9) as u8;
    let membrane = x % 40 < 2 || y % 40 < 2;
    let base: u8 = if membrane { 40 } else { 120 + cell * 10 };
    base.wrapping_add((h >> 58) as u8)
}

fn open(dir: &std::path::Path, workers: usize) -> Services {
    let store = EmbeddedStore::open(&EmbeddedOptions {
        cache_bytes: 256 << 20,
        durability: Durability::Flush,
        ..EmbeddedOptions::new(dir.to_path_buf())
    })
    .expect("open store");
    let config = ServiceConfig {
        jobs: JobsConfig {
            workers,
            lease: Duration::from_secs(60),
            pause: Duration::ZERO,
        },
        ..ServiceConfig::default()
    };
    Services::new(&config, Arc::new(store))
}

async fn downsample(gib: f64, workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path(), workers));
    let z = ((gib * 64.0).round() as u64).max(16);
    let ds = Dataset {
        name: "b".into(),
        voxel_size: [4.0, 4.0, 40.0],
        extent: [4096, 4096, z],
        offset: [0, 0, 0],
        levels: 5,
        scaling: Scaling::Anisotropic,
        description: String::new(),
        synapse_table: None,
        soma_table: None,
    };
    s.catalog.create_dataset(ds.clone()).await.unwrap();
    s.catalog
        .create_channel(
            &dn("b"),
            Channel {
                name: "c".into(),
                kind: ChannelType::Image,
                dtype: DType::Uint8,
                chunk_size: [128, 128, 16],
                compression: Compression::BloscLz4,
                description: String::new(),
            },
        )
        .await
        .unwrap();
    let bytes = 4096 * 4096 * z;
    eprintln!(
        "writing level 0: 4096 x 4096 x {z} uint8 ({:.2} GiB)",
        bytes as f64 / (1u64 << 30) as f64
    );
    for z0 in (0..z).step_by(16) {
        let b = Box3::new([0, 0, z0], [4096, 4096, (z0 + 16).min(z)]).unwrap();
        let data = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            let sh = b.shape();
            let mut v = vec![0u8; b.voxels() as usize];
            v.par_chunks_mut(4096).enumerate().for_each(|(row, r)| {
                let (yy, zz) = (row as u64 % sh[1], b.start[2] + row as u64 / sh[1]);
                for (x, p) in r.iter_mut().enumerate() {
                    *p = voxel(x as u64, yy, zz);
                }
            });
            v
        })
        .await
        .unwrap();
        let t = s.volumes.target(&dn("b"), &cn("c"), 0, b).await.unwrap();
        s.volumes.write(t, Bytes::from(data)).await.unwrap();
    }
    let levels_bytes: Vec<u64> = (1..ds.levels)
        .map(|l| ds.level(l).bounds().voxels())
        .collect();
    let started = Instant::now();
    let (job, _) = s
        .pyramid
        .start_downsample(&dn("b"), &cn("c"))
        .await
        .unwrap();
    s.start();
    let done = loop {
        let r = s.jobs.get(&job.id).await.unwrap();
        if r.state.is_final() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done.state, JobState::Done, "{:?}", done.errors);
    println!(
        "downsample: {:.2} GiB level 0 into {} levels ({} chunks, {} MB written) in {secs:.1} s = {:.0} MB/s of level-0 input ({workers} job workers)",
        bytes as f64 / (1u64 << 30) as f64,
        ds.levels - 1,
        done.total,
        levels_bytes.iter().sum::<u64>() / 1_000_000,
        bytes as f64 / 1e6 / secs
    );
}

async fn ingest(gib: f64) {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (w, h) = (2048u32, 2048u32);
    let n = ((gib * (1u64 << 30) as f64) / f64::from(w * h))
        .round()
        .max(16.0) as u32;
    eprintln!("encoding {n} PNG slices of {w} x {h}");
    {
        use rayon::prelude::*;
        let dir = src.path().to_path_buf();
        (0..n).into_par_iter().for_each(|z| {
            let px: Vec<u8> = (0..w * h)
                .map(|i| voxel(u64::from(i % w), u64::from(i / w), u64::from(z)))
                .collect();
            image::GrayImage::from_raw(w, h, px)
                .unwrap()
                .save(dir.join(format!("s{z:05}.png")))
                .unwrap();
        });
    }
    let png_bytes: u64 = std::fs::read_dir(src.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // Decoding alone (all slices, in parallel, no store), for comparison.
    let started = Instant::now();
    {
        use rayon::prelude::*;
        let files: Vec<_> = std::fs::read_dir(src.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let n: usize = files
            .par_iter()
            .map(|f| image::open(f).unwrap().into_luma8().into_raw().len())
            .sum();
        assert_eq!(n as u64, u64::from(w * h) * u64::from(files.len() as u32));
    }
    let decode_secs = started.elapsed().as_secs_f64();
    let args = neurocube_server::ingest::IngestArgs {
        source: src.path().to_path_buf(),
        dataset: dn("i"),
        channel: cn("c"),
        url: None,
        token: None,
        data_dir: Some(data.path().to_path_buf()),
        config: None,
        z: None,
        create: true,
        voxel_size: "4,4,40".into(),
        levels: Some(1),
        kind: "image".into(),
        no_downsample: true,
    };
    // SAFETY: set before any other thread reads the environment in this process's ingest.
    unsafe { std::env::set_var("NEUROCUBE__STORE__DURABILITY", "flush") };
    let started = Instant::now();
    neurocube_server::ingest::run(args).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let bytes = u64::from(w * h) * u64::from(n);
    println!(
        "ingest: {n} PNG slices {w} x {h} ({:.2} GiB decoded, {} MB of PNG) in {secs:.1} s = {:.0} MB/s of decoded voxels (PNG decoding alone, same run: {:.0} MB/s)",
        bytes as f64 / (1u64 << 30) as f64,
        png_bytes / 1_000_000,
        bytes as f64 / 1e6 / secs,
        bytes as f64 / 1e6 / decode_secs
    );
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    if a.what == "downsample" || a.what == "both" {
        downsample(a.gib, a.workers).await;
    }
    if a.what == "ingest" || a.what == "both" {
        ingest(a.gib).await;
    }
}
