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

/// `copy_region` over ndarray views, the rows of the region's slices
/// zipped and each copied with one memcpy: the row `copy_region`'s hand
/// loop is measured against.
fn ndarray_rows(
    src: &[u8],
    src_box: &Box3,
    dst: &mut [u8],
    dst_box: &Box3,
    region: &Box3,
    elem: usize,
) {
    use ndarray::{ArrayView3, ArrayViewMut3, Zip, s};
    let view = |b: &Box3| {
        let s = b.shape().map(|v| v as usize);
        (s[2], s[1], s[0] * elem)
    };
    let lo = |b: &Box3, a: usize| (region.start[a] - b.start[a]) as usize;
    let hi = |b: &Box3, a: usize| (region.end[a] - b.start[a]) as usize;
    let within = |b: &Box3| {
        s![
            lo(b, 2)..hi(b, 2),
            lo(b, 1)..hi(b, 1),
            lo(b, 0) * elem..hi(b, 0) * elem
        ]
    };
    let from = ArrayView3::from_shape(view(src_box), src).unwrap();
    let mut to = ArrayViewMut3::from_shape(view(dst_box), dst).unwrap();
    Zip::from(to.slice_mut(within(dst_box)).rows_mut())
        .and(from.slice(within(src_box)).rows())
        .for_each(|mut t, f| {
            t.as_slice_mut()
                .unwrap()
                .copy_from_slice(f.as_slice().unwrap())
        });
}

/// The copy loop alone: every 128×128×16 chunk of a 1024×1024×64 box
/// copied into the box's array, aligned and shifted by (7, 9, 3), uint8 and
/// uint64; `copy_region` (a hand loop, a memcpy per row) against the same
/// over ndarray views, in the same run.
fn copy_loop(c: &mut Criterion) {
    use neurocube_core::cutout::copy_region;
    use neurocube_core::geometry::ChunkGrid;
    let mut g = c.benchmark_group("copy_region");
    for elem in [1usize, 8] {
        let chunk = vec![7u8; 128 * 128 * 16 * elem];
        for (name, out_box) in [
            ("aligned", Box3::new([0, 0, 0], [1024, 1024, 64]).unwrap()),
            ("unaligned", Box3::new([7, 9, 3], [1031, 1033, 67]).unwrap()),
        ] {
            let grid = ChunkGrid::new([128, 128, 16]).unwrap();
            let pieces: Vec<(Box3, Box3)> = grid
                .chunks_in(&out_box)
                .into_iter()
                .map(|ix| {
                    let cb = grid.chunk_box(ix);
                    (cb, cb.overlap(&out_box).unwrap())
                })
                .collect();
            let mut out = vec![0u8; out_box.voxels() as usize * elem];
            g.throughput(Throughput::Bytes(out.len() as u64));
            for (imp, f) in [
                (
                    "loop",
                    copy_region as fn(&[u8], &Box3, &mut [u8], &Box3, &Box3, usize),
                ),
                ("ndarray", ndarray_rows),
            ] {
                g.bench_function(
                    BenchmarkId::new(format!("{imp}_{name}"), format!("u{}", elem * 8)),
                    |b| {
                        b.iter(|| {
                            for (cb, region) in &pieces {
                                f(&chunk, cb, &mut out, &out_box, region, elem);
                            }
                        });
                    },
                );
            }
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = copy_loop, assembly
}
criterion_main!(benches);
