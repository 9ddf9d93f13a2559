//! Random boxes written over a reference array read back exactly as the
//! same boxes of the reference (memory store: this tests the service layer).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::sync::Arc;

use bytes::Bytes;
use neurocube_core::meta::{Channel, ChannelType, Compression, Dataset, Scaling};
use neurocube_core::{Box3, DType};
use neurocube_service::{ServiceConfig, Services};
use neurocube_store::memory::MemoryStore;
use proptest::prelude::*;

fn dn(s: &str) -> neurocube_core::DatasetName {
    neurocube_core::DatasetName::parse(s).unwrap()
}

fn cn(s: &str) -> neurocube_core::ChannelName {
    neurocube_core::ChannelName::parse(s).unwrap()
}

const EXTENT: [u64; 3] = [70, 50, 40];

fn services(dtype: DType) -> (tokio::runtime::Runtime, Services) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = Services::new(&ServiceConfig::default(), Arc::new(MemoryStore::default()));
    rt.block_on(async {
        let ds = Dataset {
            name: "d".into(),
            voxel_size: [4.0, 4.0, 40.0],
            extent: EXTENT,
            offset: [0, 0, 0],
            levels: 1,
            scaling: Scaling::Anisotropic,
            description: String::new(),
            synapse_table: None,
            soma_table: None,
        };
        s.catalog.create_dataset(ds).await.unwrap();
        let ch = Channel {
            name: "c".into(),
            kind: ChannelType::Image,
            dtype,
            chunk_size: [16, 8, 4],
            compression: Compression::BloscLz4,
            description: String::new(),
        };
        s.catalog.create_channel(&dn("d"), ch).await.unwrap();
    });
    (rt, s)
}

fn sub(reference: &[u8], b: &Box3, elem: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for z in b.start[2]..b.end[2] {
        for y in b.start[1]..b.end[1] {
            let o = ((z * EXTENT[1] + y) * EXTENT[0] + b.start[0]) as usize * elem;
            out.extend_from_slice(&reference[o..o + (b.shape()[0] as usize) * elem]);
        }
    }
    out
}

fn put(reference: &mut [u8], b: &Box3, data: &[u8], elem: usize) {
    let row = b.shape()[0] as usize * elem;
    let mut i = 0;
    for z in b.start[2]..b.end[2] {
        for y in b.start[1]..b.end[1] {
            let o = ((z * EXTENT[1] + y) * EXTENT[0] + b.start[0]) as usize * elem;
            reference[o..o + row].copy_from_slice(&data[i..i + row]);
            i += row;
        }
    }
}

fn boxes() -> impl Strategy<Value = Box3> {
    (0..EXTENT[0], 0..EXTENT[1], 0..EXTENT[2]).prop_flat_map(|(x, y, z)| {
        (1..=EXTENT[0] - x, 1..=EXTENT[1] - y, 1..=EXTENT[2] - z)
            .prop_map(move |(w, h, d)| Box3::with_shape([x, y, z], [w, h, d]).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn written_boxes_read_back_like_the_reference(
        writes in proptest::collection::vec((boxes(), any::<u8>()), 1..5),
        reads in proptest::collection::vec(boxes(), 1..5),
        wide in any::<bool>(),
    ) {
        let dtype = if wide { DType::Uint16 } else { DType::Uint8 };
        let elem = dtype.size();
        let (rt, s) = services(dtype);
        let mut reference = vec![0u8; (EXTENT.iter().product::<u64>() as usize) * elem];
        for (i, (b, seed)) in writes.iter().enumerate() {
            // Zeros too, so deleting chunks is exercised.
            let data: Vec<u8> = (0..b.voxels() as usize * elem)
                .map(|j| if i % 3 == 2 { 0 } else { (j as u8).wrapping_mul(31).wrapping_add(*seed) | 1 })
                .collect();
            put(&mut reference, b, &data, elem);
            rt.block_on(async {
                let t = s.volumes.target(&dn("d"), &cn("c"), 0, *b).await.unwrap();
                s.volumes.write(t, Bytes::from(data)).await.unwrap();
            });
        }
        for b in reads.iter().chain(std::iter::once(&Box3::new([0, 0, 0], EXTENT).unwrap())) {
            let got = rt.block_on(async {
                let t = s.volumes.target(&dn("d"), &cn("c"), 0, *b).await.unwrap();
                s.volumes.read_all(t).await.unwrap()
            });
            prop_assert_eq!(got, sub(&reference, b, elem));
        }
    }
}
