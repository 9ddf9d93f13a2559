//! Codec throughput on EM-like data (the demo volume: Blosc lz4 about 1.3x):
//! Blosc (lz4, zstd) on 128×128×16 chunks, PNG (Fast) and JPEG of 512² and
//! 1024² slices; Blosc on white noise as the extra row.
//!
//! `cargo bench -p neurocube-benches --bench codecs`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use neurocube_benches::white_noise;
use neurocube_core::blosc::{self, Blosc, Compressor};
use neurocube_core::render::{ImageFormat, Shading, Slice, render};
use neurocube_core::{Box3, DType};
use neurocube_service::demo::generate;

fn chunk() -> Vec<u8> {
    generate(&Box3::new([0, 0, 0], [128, 128, 16]).unwrap()).0
}

fn blosc_codecs(c: &mut Criterion) {
    let em = chunk();
    let noise = white_noise(em.len(), 1);
    let mut g = c.benchmark_group("blosc_chunk_128x128x16_u8");
    g.throughput(Throughput::Bytes(em.len() as u64));
    for (data_name, data) in [("em", &em), ("noise", &noise)] {
        for comp in [Compressor::Lz4, Compressor::Zstd] {
            let codec = Blosc::new(comp, 5, 1).unwrap();
            let z = codec.compress(data).unwrap();
            println!(
                "blosc {comp:?} on {data_name}: ratio {:.2}",
                data.len() as f64 / z.len() as f64
            );
            let id = format!("{comp:?}_{data_name}");
            g.bench_function(BenchmarkId::new("compress", &id), |b| {
                b.iter(|| codec.compress(data).unwrap())
            });
            let mut out = vec![0u8; data.len()];
            g.bench_function(BenchmarkId::new("decompress", &id), |b| {
                b.iter(|| blosc::decompress_into(&z, &mut out).unwrap());
            });
        }
    }
    g.finish();
}

fn images(c: &mut Criterion) {
    let mut g = c.benchmark_group("slice_encode_u8");
    for side in [512u64, 1024] {
        let data = generate(&Box3::new([0, 0, 0], [side, side, 1]).unwrap()).0;
        let s = Slice {
            data: &data,
            dtype: DType::Uint8,
            width: side as u32,
            height: side as u32,
        };
        g.throughput(Throughput::Elements(1));
        for (name, fmt) in [
            ("png_fast", ImageFormat::Png),
            ("jpeg_q85", ImageFormat::Jpeg(85)),
        ] {
            g.bench_function(BenchmarkId::new(name, side), |b| {
                b.iter(|| render(&s, Shading::Gray { window: None }, fmt).unwrap());
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = blosc_codecs, images
}
criterion_main!(benches);
