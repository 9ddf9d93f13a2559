//! Cutout assembly in the service layer (store fetch, parallel Blosc decode,
//! copy loop) over the in-memory store, so only the CPU work is measured:
//! aligned and unaligned boxes, and the write path (split + compress).
//!
//! `cargo bench -p neurocube-benches --bench cutout`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use neurocube_core::Box3;
use neurocube_service::{ServiceConfig, Services, demo};
use neurocube_store::memory::MemoryStore;

fn dn(s: &str) -> neurocube_core::DatasetName {
    neurocube_core::DatasetName::parse(s).unwrap()
}

fn cn(s: &str) -> neurocube_core::ChannelName {
    neurocube_core::ChannelName::parse(s).unwrap()
}

fn setup(rt: &tokio::runtime::Runtime) -> Services {
    let s = Services::new(&ServiceConfig::default(), Arc::new(MemoryStore::default()));
    rt.block_on(async {
        demo::create(&s, [1024, 1024, 64], |_, _| {}).await.unwrap();
    });
    s
}

fn assembly(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = setup(&rt);
    let mut g = c.benchmark_group("cutout_read_u8");
    for (name, b) in [
        (
            "aligned_1024x1024x64",
            Box3::new([0, 0, 0], [1024, 1024, 64]).unwrap(),
        ),
        (
            "unaligned_1000x1000x60",
            Box3::new([7, 9, 3], [1007, 1009, 63]).unwrap(),
        ),
        (
            "slab_512x512x16",
            Box3::new([256, 256, 16], [768, 768, 32]).unwrap(),
        ),
    ] {
        g.throughput(Throughput::Bytes(b.voxels()));
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                rt.block_on(async {
                    let t = s
                        .volumes
                        .target(&dn("demo"), &cn("image"), 0, b)
                        .await
                        .unwrap();
                    s.volumes.read_all(t).await.unwrap()
                })
            });
        });
    }
    g.finish();
    let mut g = c.benchmark_group("cutout_write_u8");
    let b = Box3::new([0, 0, 0], [1024, 1024, 64]).unwrap();
    let data = Bytes::from(demo::generate(&b).0);
    g.throughput(Throughput::Bytes(b.voxels()));
    g.bench_function("aligned_1024x1024x64", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let t = s
                    .volumes
                    .target(&dn("demo"), &cn("image"), 0, b)
                    .await
                    .unwrap();
                s.volumes.write(t, data.clone()).await.unwrap()
            })
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = assembly
}
criterion_main!(benches);
