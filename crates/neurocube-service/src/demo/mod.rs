//! A synthetic EM-like demo volume and its matching segmentation: neurites
//! as 2-D Voronoi cells whose seeds drift slowly through z (so segments are
//! tubes), dark membranes between them, per-cell gray levels, texture and
//! noise. Deterministic: the same box always gives the same voxels.

use bytes::Bytes;
use neurocube_core::meta::{Channel, ChannelType, Compression, Dataset, Scaling};
use neurocube_core::names::NameError;
use neurocube_core::{Box3, ChannelName, DType, DatasetName};
use neurocube_store::Table;
use rayon::prelude::*;

use crate::Services;
use crate::error::{Result, ServiceError};
use crate::keys;

pub mod synapses;

/// Name of the demo dataset.
pub const DATASET: &str = "demo";
/// Seed spacing in voxels.
const CELL: i64 = 48;

fn hash(a: i64, b: i64, c: i64) -> u64 {
    let mut z = (a as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (b as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (c as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed(gx: i64, gy: i64, z: i64) -> (f64, f64) {
    let h = hash(gx, gy, 0);
    let phase = (h & 0xffff) as f64 / 65536.0 * std::f64::consts::TAU;
    let jx = ((h >> 16) & 0xff) as f64 / 255.0 * 0.6 + 0.2;
    let jy = ((h >> 24) & 0xff) as f64 / 255.0 * 0.6 + 0.2;
    let drift = 6.0 * (z as f64 * 0.05 + phase).sin();
    (
        (gx as f64 + jx) * CELL as f64 + drift,
        (gy as f64 + jy) * CELL as f64 - drift,
    )
}

/// Label of the cell whose seed is at grid position `(gx, gy)` (never 0).
fn label(gx: i64, gy: i64) -> u32 {
    1 + ((gy + 4096) as u32 & 0xfff) * 4096 + ((gx + 4096) as u32 & 0xfff)
}

/// Image intensity and label of one voxel.
fn voxel(x: i64, y: i64, z: i64) -> (u8, u32) {
    let (cx, cy) = (x.div_euclid(CELL), y.div_euclid(CELL));
    let (mut d1, mut d2, mut best) = (f64::MAX, f64::MAX, (0, 0));
    for gy in cy - 1..=cy + 1 {
        for gx in cx - 1..=cx + 1 {
            let (sx, sy) = seed(gx, gy, z);
            let d = (x as f64 - sx).powi(2) + (y as f64 - sy).powi(2);
            if d < d1 {
                d2 = d1;
                d1 = d;
                best = (gx, gy);
            } else if d < d2 {
                d2 = d;
            }
        }
    }
    let noise = gaussian(hash(x, y, z)) * NOISE_SIGMA;
    if d2.sqrt() - d1.sqrt() < 2.5 {
        return (quantize(40.0 + noise * 0.7, hash(cx, cy, 3) % STEP), 0);
    }
    let lab = label(best.0, best.1);
    let h = hash(best.0, best.1, 7);
    let base = 130.0 + (h % 70) as f64;
    let texture = 14.0 * (x as f64 * 0.11).sin() * (y as f64 * 0.07 + z as f64 * 0.2).cos();
    (quantize(base + texture + noise, (h >> 8) % STEP), lab)
}

/// Standard deviation of the detector noise, in gray levels.
const NOISE_SIGMA: f64 = 11.5;
/// Gray levels come in steps of this many, as from a detector whose range
/// was stretched after acquisition: the steps (and the modest noise) are
/// what make EM compress about 1.3x with Blosc lz4 and 2.4x with zstd.
const STEP: u64 = 8;

/// About a standard normal deviate from the 64 bits of a hash: the sum of
/// four 16-bit uniforms (Irwin-Hall), centred and scaled.
fn gaussian(h: u64) -> f64 {
    let sum: u64 = (0..4).map(|i| (h >> (16 * i)) & 0xffff).sum();
    // Each uniform has variance 65536^2 / 12; four have twice 65536 / sqrt(3).
    (sum as f64 - 2.0 * 65535.0) / (2.0 * 65536.0 / 3f64.sqrt())
}

/// `v` rounded down to the steps `offset + k * STEP`. Each cell (and each
/// stretch of membrane) has its own offset, so a slice still shows most
/// gray levels.
fn quantize(v: f64, offset: u64) -> u8 {
    let o = offset as f64;
    let q = ((v - o) / STEP as f64).floor() * STEP as f64 + o;
    q.clamp(0.0, 255.0) as u8
}

/// Image and segmentation voxels of a box, C order (z, y, x).
#[must_use]
pub fn generate(b: &Box3) -> (Vec<u8>, Vec<u32>) {
    let s = b.shape();
    let plane = (s[0] * s[1]) as usize;
    let mut img = vec![0u8; plane * s[2] as usize];
    let mut seg = vec![0u32; plane * s[2] as usize];
    img.par_chunks_mut(s[0] as usize)
        .zip(seg.par_chunks_mut(s[0] as usize))
        .enumerate()
        .for_each(|(row, (ir, sr))| {
            let z = b.start[2] as i64 + (row / s[1] as usize) as i64;
            let y = b.start[1] as i64 + (row % s[1] as usize) as i64;
            for (i, (iv, sv)) in ir.iter_mut().zip(sr.iter_mut()).enumerate() {
                (*iv, *sv) = voxel(b.start[0] as i64 + i as i64, y, z);
            }
        });
    (img, seg)
}

/// The demo dataset of a given extent.
#[must_use]
pub fn dataset(extent: [u64; 3]) -> Dataset {
    Dataset {
        name: DATASET.into(),
        voxel_size: [4.0, 4.0, 40.0],
        extent,
        offset: [0, 0, 0],
        // Four levels (factors 1, 2, 4, 8 in x and y) so viewers can zoom out.
        levels: 4,
        scaling: Scaling::Anisotropic,
        description: "synthetic EM-like volume with a matching segmentation (neurocube demo)"
            .into(),
        synapse_table: None,
        soma_table: None,
    }
}

fn channel(name: &str, kind: ChannelType, dtype: DType) -> Channel {
    Channel {
        name: name.into(),
        kind,
        dtype,
        chunk_size: [128, 128, 16],
        compression: Compression::BloscLz4,
        description: String::new(),
    }
}

fn named<T>(r: std::result::Result<T, NameError>) -> Result<T> {
    r.map_err(|e| ServiceError::Internal {
        during: "naming the demo",
        reason: e.to_string(),
    })
}

/// Create the demo dataset (channels `image` uint8 and `segmentation`
/// uint32) and fill it, reporting `(voxels done, voxels total)`. A completed
/// demo of the same extent is left as it is.
pub async fn create(
    services: &Services,
    extent: [u64; 3],
    progress: impl Fn(u64, u64),
) -> Result<bool> {
    let ds = named(DatasetName::parse(DATASET))?;
    let (image, segmentation) = (
        named(ChannelName::parse("image"))?,
        named(ChannelName::parse("segmentation"))?,
    );
    let marker = keys::demo_complete(extent);
    services.catalog.create_dataset(dataset(extent)).await?;
    services
        .catalog
        .create_channel(&ds, channel("image", ChannelType::Image, DType::Uint8))
        .await?;
    services
        .catalog
        .create_channel(
            &ds,
            channel("segmentation", ChannelType::Segmentation, DType::Uint32),
        )
        .await?;
    let total: u64 = extent.iter().product();
    if services
        .store
        .get_many(Table::Meta, std::slice::from_ref(&marker))
        .await?[0]
        .is_some()
    {
        progress(total, total);
        return Ok(false);
    }
    let step = [512u64, 512, 16];
    let mut done = 0;
    for z in (0..extent[2]).step_by(step[2] as usize) {
        for y in (0..extent[1]).step_by(step[1] as usize) {
            for x in (0..extent[0]).step_by(step[0] as usize) {
                let b = Box3::new(
                    [x, y, z],
                    [
                        (x + step[0]).min(extent[0]),
                        (y + step[1]).min(extent[1]),
                        (z + step[2]).min(extent[2]),
                    ],
                )?;
                let (img, seg) = tokio::task::spawn_blocking(move || generate(&b)).await?;
                let seg: Vec<u8> = seg.iter().flat_map(|v| v.to_le_bytes()).collect();
                let t = services.volumes.target(&ds, &image, 0, b).await?;
                services.volumes.write(t, Bytes::from(img)).await?;
                let t = services.volumes.target(&ds, &segmentation, 0, b).await?;
                services.volumes.write(t, Bytes::from(seg)).await?;
                done += b.voxels();
                progress(done, total);
            }
        }
    }
    // Compute the coarser levels before calling the demo complete.
    for ch in [&image, &segmentation] {
        let (job, _) = services.pyramid.start_downsample(&ds, ch).await?;
        let done = services.jobs.run_to_end(&job.id, |_| {}).await?;
        if done.state != crate::jobs::JobState::Done {
            return Err(ServiceError::Internal {
                during: "downsampling the demo",
                reason: format!("demo/{ch} ended {}: {:?}", done.state.name(), done.errors),
            });
        }
    }
    services
        .store
        .put_many(Table::Meta, vec![(marker, Bytes::from_static(b"1"))])
        .await?;
    Ok(true)
}

/// Annotation tables of the demo, as seed 000's notebook names them.
pub const SYNAPSE_TABLE: &str = "synapses";
/// Nuclei, one per neuron.
pub const NUCLEUS_TABLE: &str = "nucleus_detection_v0";
/// Proofreading status of the proofread neurons.
pub const PROOFREADING_TABLE: &str = "proofreading_status_and_strategy";
/// Manual cell types (a reference table on the nuclei).
pub const MANUAL_TYPES_TABLE: &str = "allen_v1_column_types_slanted_ref";
/// Automated cell types (a reference table on the nuclei).
pub const AUTO_TYPES_TABLE: &str = "aibs_metamodel_celltypes_v661";

/// Rows per insert of the demo's uploads.
const UPLOAD: usize = 100_000;

/// What the annotation demo made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationDemo {
    /// Neurons (segments).
    pub neurons: usize,
    /// Proofread neurons.
    pub proofread: usize,
    /// Synapses.
    pub synapses: u64,
    /// Versions materialized.
    pub versions: Vec<u32>,
}

fn table_spec(
    schema: &str,
    reference: Option<&str>,
    description: &str,
) -> Result<crate::annotations::TableSpec> {
    Ok(crate::annotations::TableSpec {
        schema: schema.into(),
        fields: None,
        reference: false,
        reference_table: reference
            .map(neurocube_core::TableName::parse)
            .transpose()
            .map_err(|e| ServiceError::Internal {
                during: "naming the demo tables",
                reason: e.to_string(),
            })?,
        voxel_resolution: [4.0, 4.0, 40.0],
        description: description.into(),
        owner: "demo".into(),
        segmentation: if reference.is_some() {
            None
        } else {
            Some(named(ChannelName::parse("segmentation"))?)
        },
    })
}

/// Fill the demo dataset (made by [`create`] with the same extent) with a
/// MICrONS-like synapse table of `n` synapses on its segmentation, nuclei,
/// proofreading status and two cell-type reference tables, and
/// materialize two versions (the second after the last tenth of the
/// synapses). Reports `(synapses written, n)`. Done once per extent and `n`.
pub async fn create_annotations(
    services: &Services,
    extent: [u64; 3],
    n: u64,
    progress: impl Fn(u64, u64),
) -> Result<AnnotationDemo> {
    use crate::annotations::{Incoming, VersionStatus};
    use neurocube_core::TableName;
    use neurocube_core::annotation::Value;

    let ds = named(DatasetName::parse(DATASET))?;
    let tname = |s: &str| {
        TableName::parse(s).map_err(|e| ServiceError::Internal {
            during: "naming the demo tables",
            reason: e.to_string(),
        })
    };
    let ann = &services.annotations;
    let neurons = synapses::neurons(extent);
    let proofread = neurons.iter().filter(|n| n.proofread).count();
    let marker = keys::demo_complete_annotations(extent, n);
    if services
        .store
        .get_many(Table::Meta, std::slice::from_ref(&marker))
        .await?[0]
        .is_some()
    {
        progress(n, n);
        let versions = ann.versions(&ds).await?.iter().map(|v| v.version).collect();
        return Ok(AnnotationDemo {
            neurons: neurons.len(),
            proofread,
            synapses: n,
            versions,
        });
    }
    for (name, schema, reference, what) in [
        (
            SYNAPSE_TABLE,
            "synapse",
            None,
            "synthetic synapses with heavy-tailed degrees",
        ),
        (NUCLEUS_TABLE, "nucleus", None, "one nucleus per neuron"),
        (
            PROOFREADING_TABLE,
            "proofreading_status_and_strategy",
            None,
            "proofread neurons",
        ),
        (
            MANUAL_TYPES_TABLE,
            "cell_type_reference",
            Some(NUCLEUS_TABLE),
            "manual cell types",
        ),
        (
            AUTO_TYPES_TABLE,
            "cell_type_reference",
            Some(NUCLEUS_TABLE),
            "automated cell types",
        ),
    ] {
        ann.create_table(
            &ds,
            &tname(name)?,
            table_spec(schema, reference, what)?,
            "demo",
        )
        .await?;
    }
    let row = |values: Vec<Value>| Incoming { id: None, values };
    // Nuclei: id i + 1 is neuron i's.
    let nuc = ann.table(&ds, &tname(NUCLEUS_TABLE)?).await?;
    let nuclei: Vec<Incoming> = neurons
        .iter()
        .map(|nr| {
            let vol = 150.0 + (nr.root_id % 200) as f64;
            row(vec![
                Value::Pos(nr.soma),
                Value::Null,
                Value::Null,
                Value::Float(vol),
                Value::Null,
                Value::Null,
            ])
        })
        .collect();
    let nuc_ids = ann.insert(&nuc, nuclei).await?;
    // Proofreading status: the proofread neurons, with the notebook's strategies.
    let pr = ann.table(&ds, &tname(PROOFREADING_TABLE)?).await?;
    let total_w: u32 = synapses::STRATEGIES.iter().map(|s| s.1).sum();
    let status: Vec<Incoming> = neurons
        .iter()
        .zip(&nuc_ids)
        .filter(|(nr, _)| nr.proofread)
        .map(|(nr, nid)| {
            let mut t = (nr.root_id % u64::from(total_w)) as u32;
            let strategy = synapses::STRATEGIES
                .iter()
                .find(|s| {
                    let hit = t < s.1;
                    t = t.saturating_sub(s.1);
                    hit
                })
                .map_or("axon_partially_extended", |s| s.0);
            row(vec![
                Value::Pos(nr.soma),
                Value::Null,
                Value::Null,
                Value::Int(*nid as i64),
                Value::Bool(true),
                Value::Bool(true),
                Value::Str("dendrite_extended".into()),
                Value::Str(strategy.into()),
            ])
        })
        .collect();
    ann.insert(&pr, status).await?;
    // Cell types: automated for every neuron, manual for about a thousand.
    for (name, every) in [(AUTO_TYPES_TABLE, 1u64), (MANUAL_TYPES_TABLE, 0)] {
        let t = ann.table(&ds, &tname(name)?).await?;
        let manual_cap = 1000.min(neurons.len());
        let rows: Vec<Incoming> = neurons
            .iter()
            .zip(&nuc_ids)
            .filter(|(nr, _)| every == 1 || nr.proofread || nr.root_id % 7 == 0)
            .take(if every == 1 { usize::MAX } else { manual_cap })
            .map(|(nr, nid)| {
                row(vec![
                    Value::Id(*nid),
                    Value::Str(nr.class.into()),
                    Value::Str(nr.cell_type.into()),
                ])
            })
            .collect();
        ann.insert(&t, rows).await?;
    }
    // Synapses, a batch at a time; the first version after nine tenths.
    let syn = ann.table(&ds, &tname(SYNAPSE_TABLE)?).await?;
    let all = synapses::synapses(&neurons, extent, n, 0);
    let first = (n * 9 / 10) as usize;
    let mut versions = Vec::new();
    let mut done = 0u64;
    for (part, range) in [(0, 0..first), (1, first..all.len())] {
        for chunk in all[range].chunks(UPLOAD) {
            let rows: Vec<Incoming> = chunk
                .iter()
                .map(|s| {
                    row(vec![
                        Value::Pos(s.pre),
                        Value::Null,
                        Value::Null,
                        Value::Pos(s.post),
                        Value::Null,
                        Value::Null,
                        Value::Pos(s.ctr),
                        Value::Float(s.size),
                    ])
                })
                .collect();
            ann.insert(&syn, rows).await?;
            done += chunk.len() as u64;
            progress(done, n);
        }
        let (v, job) = ann
            .materialize(&ds, crate::jobs::now_ms() as i64, None)
            .await?;
        let end = services.jobs.run_to_end(&job.id, |_| {}).await?;
        let rec = ann.version(&ds, v.version).await?;
        if rec.status != VersionStatus::Available {
            return Err(ServiceError::Internal {
                during: "materializing the demo",
                reason: format!(
                    "version {} ended {}: {:?}",
                    v.version,
                    end.state.name(),
                    end.errors
                ),
            });
        }
        versions.push(v.version);
        let _ = part;
    }
    services
        .store
        .put_many(Table::Meta, vec![(marker, Bytes::from_static(b"1"))])
        .await?;
    Ok(AnnotationDemo {
        neurons: neurons.len(),
        proofread,
        synapses: n,
        versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_consistent() {
        let b = Box3::new([100, 200, 3], [164, 232, 5]).unwrap();
        let (i1, s1) = generate(&b);
        let (i2, s2) = generate(&b);
        assert_eq!((i1.clone(), s1.clone()), (i2, s2));
        // Membranes (label 0) are dark, cells bright, and there are several cells.
        for (i, s) in i1.iter().zip(&s1) {
            if *s == 0 {
                assert!(*i < 90)
            } else {
                assert!(*i > 80)
            }
        }
        let mut labels = s1.clone();
        labels.sort_unstable();
        labels.dedup();
        assert!(labels.len() >= 3, "{labels:?}");
    }

    /// The benches measure on this volume, so it must compress as EM does:
    /// Blosc lz4 + shuffle about 1.3x, zstd about 2.4x, on stored chunks.
    #[test]
    fn compresses_like_em() {
        use neurocube_core::blosc::{Blosc, Compressor};
        let (img, _) = generate(&Box3::new([0, 0, 0], [256, 256, 16]).unwrap());
        let chunks: Vec<Vec<u8>> = [(0, 0), (0, 128), (128, 0), (128, 128)]
            .iter()
            .map(|&(y0, x0)| {
                let mut c = Vec::with_capacity(128 * 128 * 16);
                for z in 0..16 {
                    for y in y0..y0 + 128 {
                        let row = (z * 256 + y) * 256 + x0;
                        c.extend_from_slice(&img[row..row + 128]);
                    }
                }
                c
            })
            .collect();
        let ratio = |comp| {
            let codec = Blosc::new(comp, 5, 1).unwrap();
            let packed: usize = chunks
                .iter()
                .map(|c| codec.compress(c).unwrap().len())
                .sum();
            (chunks.len() * 128 * 128 * 16) as f64 / packed as f64
        };
        let (lz4, zstd) = (ratio(Compressor::Lz4), ratio(Compressor::Zstd));
        println!("demo volume: Blosc lz4 {lz4:.2}x, zstd {zstd:.2}x");
        assert!((1.2..1.45).contains(&lz4), "lz4 ratio {lz4:.2}");
        assert!((2.1..2.8).contains(&zstd), "zstd ratio {zstd:.2}");
        // Still every gray level somewhere, as a viewer shows.
        let mut seen = [false; 256];
        img.iter().for_each(|&v| seen[v as usize] = true);
        let levels = seen.iter().filter(|&&s| s).count();
        assert!(levels > 120, "{levels} gray levels");
    }
}
