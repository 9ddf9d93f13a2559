//! A MICrONS-like connectome on the demo segmentation: every segment of the
//! demo is a neuron; synapses join a neuron to one of its neighbours, with
//! heavy-tailed (Pareto) out- and in-degrees; about 1,500 neurons (or a
//! fifth of them on small demos) are "proofread". Each synapse's points lie
//! inside its pre and post segments, so looking their root ids up in the
//! segmentation gives those neurons back. Synapses come in spatial order,
//! as a detection pipeline writes them (chunk by chunk).

use rayon::prelude::*;

use super::{CELL, label, seed, voxel};

/// A neuron: one segment of the demo.
#[derive(Clone, Debug, PartialEq)]
pub struct Neuron {
    /// Seed cell of its segment.
    pub cell: (i64, i64),
    /// Its root id (the segment's label).
    pub root_id: u64,
    /// Proofread (axon and dendrite).
    pub proofread: bool,
    /// Relative out-degree.
    pub w_out: f64,
    /// Relative in-degree.
    pub w_in: f64,
    /// Cell class and type (`aibs_coarse_excitatory`/`23P`, ...).
    pub class: &'static str,
    /// Cell type.
    pub cell_type: &'static str,
    /// Nucleus position (demo voxels).
    pub soma: [i64; 3],
}

/// A synapse in demo voxels (4 × 4 × 40 nm).
#[derive(Clone, Debug, PartialEq)]
pub struct SynapseRow {
    /// Presynaptic point.
    pub pre: [i64; 3],
    /// Postsynaptic point.
    pub post: [i64; 3],
    /// Cleft centre.
    pub ctr: [i64; 3],
    /// Cleft size (voxels).
    pub size: f64,
    /// The pre and post neurons (index into the neuron list).
    pub partners: (u32, u32),
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

const TYPES: [(&str, &str, f64); 11] = [
    ("aibs_coarse_excitatory", "23P", 0.22),
    ("aibs_coarse_excitatory", "4P", 0.17),
    ("aibs_coarse_excitatory", "5P-IT", 0.12),
    ("aibs_coarse_excitatory", "5P-ET", 0.04),
    ("aibs_coarse_excitatory", "5P-NP", 0.02),
    ("aibs_coarse_excitatory", "6P-IT", 0.14),
    ("aibs_coarse_excitatory", "6P-CT", 0.13),
    ("aibs_coarse_inhibitory", "BC", 0.07),
    ("aibs_coarse_inhibitory", "MC", 0.05),
    ("aibs_coarse_inhibitory", "BPC", 0.03),
    ("aibs_coarse_inhibitory", "NGC", 0.02),
];

/// The axon strategies of proofread neurons, in the seed notebook's proportions.
pub const STRATEGIES: [(&str, u32); 4] = [
    ("axon_partially_extended", 979),
    ("axon_column_truncated", 233),
    ("axon_interareal", 144),
    ("axon_fully_extended", 80),
];

/// Margin (voxels) kept between neurons' seeds and the volume's edge.
const MARGIN: i64 = 12;

/// Every neuron of a demo of this extent: the segments whose seed stays
/// inside the volume at every z.
#[must_use]
pub fn neurons(extent: [u64; 3]) -> Vec<Neuron> {
    let (ex, ey, ez) = (extent[0] as i64, extent[1] as i64, extent[2] as i64);
    let mut out = Vec::new();
    for gy in 0..ey / CELL + 1 {
        for gx in 0..ex / CELL + 1 {
            let inside = (0..ez).step_by(4).chain([ez - 1]).all(|z| {
                let (sx, sy) = seed(gx, gy, z);
                sx >= MARGIN as f64
                    && sy >= MARGIN as f64
                    && sx < (ex - MARGIN) as f64
                    && sy < (ey - MARGIN) as f64
            });
            if !inside {
                continue;
            }
            let h = mix(super::hash(gx, gy, 99));
            let pareto = |u: f64| (1.0 - u).max(1e-9).powf(-1.0 / 1.4);
            let t = unit(mix(h ^ 3));
            let mut acc = 0.0;
            let (class, cell_type) = TYPES
                .iter()
                .find(|(_, _, p)| {
                    acc += p;
                    t < acc
                })
                .map_or(("aibs_coarse_inhibitory", "NGC"), |(c, ty, _)| (*c, *ty));
            let z = ez / 2;
            let (sx, sy) = seed(gx, gy, z);
            out.push(Neuron {
                cell: (gx, gy),
                root_id: u64::from(label(gx, gy)),
                proofread: false,
                w_out: pareto(unit(h)),
                w_in: pareto(unit(mix(h ^ 1))),
                class,
                cell_type,
                soma: [sx.round() as i64, sy.round() as i64, z],
            });
        }
    }
    // About 1,500 proofread neurons (a fifth on small demos), chosen by
    // hash; their share of synapses is kept near what the seed notebook
    // saw (an induced subgraph of about 1.3% of all synapses).
    let want = 1500.min(out.len() / 5).max(1);
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by_key(|&i| mix(out[i].root_id ^ 0x5eed));
    let total: (f64, f64) = out
        .iter()
        .fold((0.0, 0.0), |a, n| (a.0 + n.w_out, a.1 + n.w_in));
    for &i in order.iter().take(want) {
        out[i].proofread = true;
    }
    let share = 0.115;
    let (po, pi): (f64, f64) = out
        .iter()
        .filter(|n| n.proofread)
        .fold((0.0, 0.0), |a, n| (a.0 + n.w_out, a.1 + n.w_in));
    if po > 0.0 && pi > 0.0 && want < out.len() {
        // Scale proofread weights so that they hold `share` of each total.
        let so = share * (total.0 - po) / ((1.0 - share) * po);
        let si = share * (total.1 - pi) / ((1.0 - share) * pi);
        for n in out.iter_mut().filter(|n| n.proofread) {
            n.w_out *= so;
            n.w_in *= si;
        }
    }
    out
}

/// A point inside a neuron's segment at depth `z`, jittered by `h`
/// (checked against the segmentation when `checked`).
fn point_in(n: &Neuron, z: i64, h: u64, checked: bool) -> [i64; 3] {
    let (sx, sy) = seed(n.cell.0, n.cell.1, z);
    if !checked {
        let dx = (unit(h) - 0.5) * 24.0;
        let dy = (unit(mix(h)) - 0.5) * 24.0;
        return [(sx + dx).round() as i64, (sy + dy).round() as i64, z];
    }
    for k in 0..6u64 {
        let hh = mix(h ^ k);
        let dx = (unit(hh) - 0.5) * 24.0;
        let dy = (unit(mix(hh)) - 0.5) * 24.0;
        let p = [(sx + dx).round() as i64, (sy + dy).round() as i64, z];
        if voxel(p[0], p[1], z).1 == label(n.cell.0, n.cell.1) {
            return p;
        }
    }
    [sx.round() as i64, sy.round() as i64, z]
}

/// Cumulative weights for sampling.
fn cumulative(w: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    w.map(|x| {
        acc += x;
        acc
    })
    .collect()
}

fn pick(cum: &[f64], u: f64) -> usize {
    let target = u * cum.last().copied().unwrap_or(0.0);
    cum.partition_point(|c| *c < target)
        .min(cum.len().saturating_sub(1))
}

/// `n` synapses among `neurons` of a demo of this extent, in spatial order
/// (by 128 × 128 × 16 block of the pre point).
#[must_use]
pub fn synapses(neurons: &[Neuron], extent: [u64; 3], n: u64, salt: u64) -> Vec<SynapseRow> {
    synapses_with(neurons, extent, n, salt, true)
}

/// As [`synapses`]; with `checked` false, points are only near their
/// segment's seed (no segmentation lookup: for tables whose root ids are
/// given, and fast to generate by the million).
#[must_use]
pub fn synapses_with(
    neurons: &[Neuron],
    extent: [u64; 3],
    n: u64,
    salt: u64,
    checked: bool,
) -> Vec<SynapseRow> {
    if neurons.len() < 2 {
        return Vec::new();
    }
    let out_cum = cumulative(neurons.iter().map(|x| x.w_out));
    let by_cell: std::collections::HashMap<(i64, i64), u32> = neurons
        .iter()
        .enumerate()
        .map(|(i, x)| (x.cell, i as u32))
        .collect();
    let ez = extent[2] as i64;
    let mut rows: Vec<SynapseRow> = (0..n)
        .into_par_iter()
        .map(|i| {
            let h = mix(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt);
            let a = pick(&out_cum, unit(h));
            let pre = &neurons[a];
            // The post neuron: a neighbour within 3 cells, by in-degree.
            let mut cand: Vec<(u32, f64)> = Vec::with_capacity(48);
            for dy in -3..=3i64 {
                for dx in -3..=3i64 {
                    if (dx, dy) == (0, 0) {
                        continue;
                    }
                    if let Some(&j) = by_cell.get(&(pre.cell.0 + dx, pre.cell.1 + dy)) {
                        let d = (dx * dx + dy * dy) as f64;
                        cand.push((j, neurons[j as usize].w_in / d));
                    }
                }
            }
            let b = if cand.is_empty() {
                ((a + 1) % neurons.len()) as u32
            } else {
                let cum = cumulative(cand.iter().map(|c| c.1));
                cand[pick(&cum, unit(mix(h ^ 2)))].0
            };
            let post_n = &neurons[b as usize];
            let z = (unit(mix(h ^ 4)) * ez as f64) as i64 % ez.max(1);
            let p_pre = point_in(pre, z, mix(h ^ 5), checked);
            let p_post = point_in(post_n, z, mix(h ^ 6), checked);
            let ctr = [(p_pre[0] + p_post[0]) / 2, (p_pre[1] + p_post[1]) / 2, z];
            // Sizes are log-normal-ish, as cleft volumes are.
            let size = (200.0 * (3.0 * unit(mix(h ^ 7))).exp()).round();
            SynapseRow {
                pre: p_pre,
                post: p_post,
                ctr,
                size,
                partners: (a as u32, b),
            }
        })
        .collect();
    rows.par_sort_by_key(|r| (r.pre[2] / 16, r.pre[1] / 128, r.pre[0] / 128));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_lie_in_their_neurons_and_degrees_are_heavy_tailed() {
        let extent = [1024, 1024, 32];
        let ns = neurons(extent);
        assert!(ns.len() > 300, "{}", ns.len());
        let proofread = ns.iter().filter(|n| n.proofread).count();
        assert_eq!(proofread, ns.len() / 5);
        let rows = synapses(&ns, extent, 20_000, 1);
        assert_eq!(rows.len(), 20_000);
        let mut inside = 0;
        for r in &rows {
            let (a, b) = (&ns[r.partners.0 as usize], &ns[r.partners.1 as usize]);
            inside += usize::from(u64::from(voxel(r.pre[0], r.pre[1], r.pre[2]).1) == a.root_id);
            inside += usize::from(u64::from(voxel(r.post[0], r.post[1], r.post[2]).1) == b.root_id);
            assert!(
                r.pre
                    .iter()
                    .zip(&extent)
                    .all(|(p, e)| *p >= 0 && (*p as u64) < *e)
            );
        }
        assert!(
            inside as f64 > 0.99 * 40_000.0,
            "{inside} of 40000 points in their segment"
        );
        // Heavy tail: the busiest tenth of neurons make over a third of synapses.
        let mut deg = vec![0u32; ns.len()];
        for r in &rows {
            deg[r.partners.0 as usize] += 1;
        }
        deg.sort_unstable_by(|a, b| b.cmp(a));
        let top: u32 = deg[..ns.len() / 10].iter().sum();
        assert!(f64::from(top) > 0.33 * 20_000.0, "top decile makes {top}");
        // Spatial order.
        assert!(
            rows.windows(2)
                .all(|w| (w[0].pre[2] / 16) <= (w[1].pre[2] / 16))
        );
    }
}
