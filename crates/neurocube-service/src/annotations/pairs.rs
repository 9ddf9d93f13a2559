//! The pair plan's ranges: which stretches of a pre's synapses, sorted by
//! the partner's root id, to read for a set of partners.

/// Out-of-set rows a pair run may read through rather than start a new range:
/// on the embedded engine a range seek costs about as much as reading a few
/// dozen index entries.
const PAIR_GAP: u64 = 32;

/// Runs of a pre's partners, `(first, last)` root ids, that cover every
/// partner in `partners` and skip no more than [`PAIR_GAP`] synapses to
/// others between two in-set partners. `edges` are (partner root id, synapse
/// count) in root-id order, possibly with repeats of a partner.
pub(super) fn pair_runs(
    edges: impl Iterator<Item = (u64, u64)>,
    partners: &std::collections::HashSet<u64>,
) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut skipped = 0u64;
    let mut open = false;
    for (q, n) in edges {
        if partners.contains(&q) {
            match runs.last_mut() {
                Some(run) if open && skipped <= PAIR_GAP => run.1 = q,
                _ => runs.push((q, q)),
            }
            open = true;
            skipped = 0;
        } else if open {
            skipped = skipped.saturating_add(n);
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_runs_merge_across_small_gaps_and_split_at_large_ones() {
        let partners: std::collections::HashSet<u64> = [10, 20, 30, 90].into_iter().collect();
        // 10 and 20 are separated by 5 synapses to others, 20 and 30 by a
        // repeat of 20 only, 30 and 90 by 40 (> PAIR_GAP): two runs.
        let edges = [
            (5, 100),
            (10, 1),
            (11, 2),
            (12, 3),
            (20, 1),
            (20, 4),
            (30, 2),
            (40, 40),
            (90, 1),
            (95, 7),
        ];
        assert_eq!(
            pair_runs(edges.into_iter(), &partners),
            vec![(10, 30), (90, 90)]
        );
        assert_eq!(
            pair_runs([(1, 1), (2, 1)].into_iter(), &partners),
            Vec::<(u64, u64)>::new()
        );
    }
}
