//! The resolution pyramid over the embedded store: every level equals a
//! reference computed here, independently, from the level-0 volume; writes
//! mark only the affected coarser chunks stale; a new job fixes exactly them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use neurocube_core::Box3;
use neurocube_core::DType;
use neurocube_core::meta::{Channel, ChannelType, Compression, Dataset, Scaling};
use neurocube_service::jobs::JobState;
use neurocube_service::{ServiceConfig, Services};
use neurocube_store::embedded::{Durability, EmbeddedOptions, EmbeddedStore};

fn dn(s: &str) -> neurocube_core::DatasetName {
    neurocube_core::DatasetName::parse(s).unwrap()
}

fn cn(s: &str) -> neurocube_core::ChannelName {
    neurocube_core::ChannelName::parse(s).unwrap()
}

fn services(dir: &tempfile::TempDir) -> Services {
    let store = EmbeddedStore::open(&EmbeddedOptions {
        cache_bytes: 16 << 20,
        durability: Durability::Flush,
        ..EmbeddedOptions::new(dir.path().to_path_buf())
    })
    .unwrap();
    Services::new(&ServiceConfig::default(), Arc::new(store))
}

/// Dense volume of one level: values by (x, y, z) over `b`.
struct Vol {
    b: Box3,
    v: Vec<u64>,
}

impl Vol {
    fn at(&self, p: [u64; 3]) -> u64 {
        let s = self.b.shape();
        let r = [
            p[0] - self.b.start[0],
            p[1] - self.b.start[1],
            p[2] - self.b.start[2],
        ];
        self.v[((r[2] * s[1] + r[1]) * s[0] + r[0]) as usize]
    }
}

/// The next level, the textbook way: every coarse voxel looks at its
/// `step` block of finer voxels that exist, and averages (rounding half up)
/// or takes the most frequent non-zero value (smallest on ties).
fn reference_next(fine: &Vol, coarse_bounds: Box3, step: [u64; 3], mode: bool) -> Vol {
    let mut v = Vec::new();
    for z in coarse_bounds.start[2]..coarse_bounds.end[2] {
        for y in coarse_bounds.start[1]..coarse_bounds.end[1] {
            for x in coarse_bounds.start[0]..coarse_bounds.end[0] {
                let mut vals = Vec::new();
                for zz in z * step[2]..(z + 1) * step[2] {
                    for yy in y * step[1]..(y + 1) * step[1] {
                        for xx in x * step[0]..(x + 1) * step[0] {
                            let p = [xx, yy, zz];
                            if (0..3).all(|a| fine.b.start[a] <= p[a] && p[a] < fine.b.end[a]) {
                                vals.push(fine.at(p));
                            }
                        }
                    }
                }
                let out = if mode {
                    let mut counts: HashMap<u64, usize> = HashMap::new();
                    for &x in vals.iter().filter(|&&x| x != 0) {
                        *counts.entry(x).or_default() += 1;
                    }
                    counts
                        .into_iter()
                        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                        .map_or(0, |(k, _)| k)
                } else {
                    let n = vals.len() as u64;
                    (vals.iter().sum::<u64>() + n / 2) / n
                };
                v.push(out);
            }
        }
    }
    Vol {
        b: coarse_bounds,
        v,
    }
}

fn bytes_of(v: &[u64], dtype: DType) -> Vec<u8> {
    v.iter()
        .flat_map(|x| x.to_le_bytes()[..dtype.size()].to_vec())
        .collect()
}

async fn read_level(
    s: &Services,
    ds: &str,
    ch: &str,
    level: u8,
    b: Box3,
    dtype: DType,
) -> Vec<u64> {
    let t = s.volumes.target(&dn(ds), &cn(ch), level, b).await.unwrap();
    let raw = s.volumes.read_all(t).await.unwrap();
    raw.chunks(dtype.size())
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect()
}

async fn setup(
    s: &Services,
    ds: Dataset,
    kind: ChannelType,
    dtype: DType,
    chunk: [u64; 3],
) -> Dataset {
    s.catalog.create_dataset(ds.clone()).await.unwrap();
    s.catalog
        .create_channel(
            &dn(&ds.name),
            Channel {
                name: "c".into(),
                kind,
                dtype,
                chunk_size: chunk,
                compression: Compression::BloscLz4,
                description: String::new(),
            },
        )
        .await
        .unwrap();
    ds
}

async fn write0(s: &Services, ds: &str, b: Box3, v: &[u64], dtype: DType) {
    let t = s.volumes.target(&dn(ds), &cn("c"), 0, b).await.unwrap();
    s.volumes
        .write(t, Bytes::from(bytes_of(v, dtype)))
        .await
        .unwrap();
}

async fn downsample_all(s: &Services, ds: &str) {
    let (job, _) = s.pyramid.start_downsample(&dn(ds), &cn("c")).await.unwrap();
    let done = s.jobs.run_to_end(&job.id, |_| {}).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{:?}", done.errors);
    assert_eq!(done.done, done.total);
}

/// Check every level against the reference pyramid of `level0`.
async fn assert_pyramid(s: &Services, d: &Dataset, level0: &Vol, dtype: DType, mode: bool) {
    let mut fine = Vol {
        b: level0.b,
        v: level0.v.clone(),
    };
    for l in 1..d.levels {
        let lv = d.level(l);
        let want = reference_next(&fine, lv.bounds(), d.step(l), mode);
        let got = read_level(s, &d.name, "c", l, lv.bounds(), dtype).await;
        assert_eq!(got.len(), want.v.len());
        let bad = got.iter().zip(&want.v).position(|(a, b)| a != b);
        assert!(bad.is_none(), "level {l} differs at voxel {bad:?}");
        let rc = s.catalog.channel(&dn(&d.name), &cn("c")).await.unwrap();
        let t = s
            .volumes
            .target(&dn(&d.name), &cn("c"), l, lv.bounds())
            .await
            .unwrap();
        assert!(!s.pyramid.is_stale(&t).await.unwrap());
        assert_eq!(
            s.pyramid.status(&rc).await.unwrap()[l as usize].state,
            "current"
        );
        fine = want;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pyramid_matches_the_reference_and_updates_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(&dir);
    // Odd extents and an offset: edge blocks hold fewer voxels.
    let d = setup(
        &s,
        Dataset {
            name: "img".into(),
            voxel_size: [4.0, 4.0, 12.0],
            extent: [301, 203, 21],
            offset: [3, 0, 1],
            levels: 4,
            scaling: Scaling::Anisotropic,
            description: String::new(),
            synapse_table: None,
            soma_table: None,
        },
        ChannelType::Image,
        DType::Uint8,
        [64, 64, 8],
    )
    .await;
    // Levels: (2,2,1), (4,4,1), then z is no longer coarser: (8,8,2).
    assert_eq!(d.level(3).factor, [8, 8, 2]);
    let b0 = d.level(0).bounds();
    let mut v: Vec<u64> = (0..b0.voxels())
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) & 0xff)
        .collect();
    write0(&s, "img", b0, &v, DType::Uint8).await;
    let rc = s.catalog.channel(&dn("img"), &cn("c")).await.unwrap();
    let st = s.pyramid.status(&rc).await.unwrap();
    assert!(st[1..].iter().all(|l| l.state == "stale"), "{st:?}");
    let t1 = s
        .volumes
        .target(&dn("img"), &cn("c"), 1, d.level(1).bounds())
        .await
        .unwrap();
    assert!(s.pyramid.is_stale(&t1).await.unwrap());
    downsample_all(&s, "img").await;
    let mut level0 = Vol {
        b: b0,
        v: v.clone(),
    };
    assert_pyramid(&s, &d, &level0, DType::Uint8, false).await;

    // A small write marks one chunk per coarser level stale, no more.
    let small = Box3::new([10, 10, 2], [20, 20, 4]).unwrap();
    let patch: Vec<u64> = (0..small.voxels()).map(|i| 255 - (i % 7)).collect();
    write0(&s, "img", small, &patch, DType::Uint8).await;
    let st = s.pyramid.status(&rc).await.unwrap();
    assert_eq!(
        st.iter().map(|l| l.stale_chunks).collect::<Vec<_>>(),
        vec![0, 1, 1, 1]
    );
    let far = s
        .volumes
        .target(
            &dn("img"),
            &cn("c"),
            1,
            Box3::new([100, 64, 1], [140, 90, 5]).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        !s.pyramid.is_stale(&far).await.unwrap(),
        "an untouched chunk is current"
    );
    let mut k = 0;
    for z in small.start[2]..small.end[2] {
        for y in small.start[1]..small.end[1] {
            for x in small.start[0]..small.end[0] {
                let s0 = b0.shape();
                let i = ((z - b0.start[2]) * s0[1] + (y - b0.start[1])) * s0[0] + (x - b0.start[0]);
                v[i as usize] = patch[k];
                k += 1;
            }
        }
    }
    let (job, _) = s
        .pyramid
        .start_downsample(&dn("img"), &cn("c"))
        .await
        .unwrap();
    assert_eq!(job.total, 3, "only the affected chunks are recomputed");
    let done = s.jobs.run_to_end(&job.id, |_| {}).await.unwrap();
    assert_eq!((done.state, done.done), (JobState::Done, 3));
    level0.v = v;
    assert_pyramid(&s, &d, &level0, DType::Uint8, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmentation_levels_take_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(&dir);
    let d = setup(
        &s,
        Dataset {
            name: "seg".into(),
            voxel_size: [8.0, 8.0, 8.0],
            extent: [67, 45, 33],
            offset: [0, 0, 0],
            levels: 3,
            scaling: Scaling::Isotropic,
            description: String::new(),
            synapse_table: None,
            soma_table: None,
        },
        ChannelType::Segmentation,
        DType::Uint64,
        [32, 32, 16],
    )
    .await;
    let b0 = d.level(0).bounds();
    // Few labels, big ones, and background, so ties and zero-majorities occur.
    let v: Vec<u64> = (0..b0.voxels())
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
            if h < 6 { 0 } else { (h % 4) << 40 | (h % 3) }
        })
        .collect();
    write0(&s, "seg", b0, &v, DType::Uint64).await;
    downsample_all(&s, "seg").await;
    assert_pyramid(&s, &d, &Vol { b: b0, v }, DType::Uint64, true).await;
}
