//! Bulk ingestion into the embedded engine: sorted runs, and the group
//! ingestion that gathers concurrent uploads into one run.
//!
//! Every ingestion adds a run to level 0, and compaction then merges level
//! 0 into the level below it by rewriting that level. With four uploads of
//! 100,000 synapses each ingesting its own run, compaction of the index
//! table bounded a 10M-row upload (the uploads waited for room in level 0
//! for a third of their time; BENCHMARKS.md). Gathered, the runs are
//! larger and fewer, and each merge rewrites the level below for more new
//! entries. The gathering regulates itself: uploads that arrive while one
//! run is written or waits for room join the next one.

use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::StoreError;

/// An ingestion waits while its table has this many runs in level 0. fjall
/// slows the journal's writers to a table from 20 runs on and halts them
/// at 30; only one ingestion runs at a time per table, so level 0 stays
/// below that. Lower is worse for a bulk upload: compaction then merges
/// fewer runs at once and rewrites the level below more often
/// (BENCHMARKS.md).
const MAX_L0_RUNS: usize = 28;

/// The longest an ingestion waits for compaction before it writes anyway.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The first 40 bytes of a key as big-endian integers (zero-padded): they
/// order as the bytes do, up to ties.
type Words = (u128, u128, u64);

/// An entry of a sorted run.
pub(super) type Entry = (Words, Vec<u8>, Bytes);

fn words(k: &[u8]) -> Words {
    fn word<const N: usize>(k: &[u8], at: usize) -> [u8; N] {
        let mut w = [0u8; N];
        if let Some(part) = k.get(at..) {
            let n = part.len().min(N);
            w[..n].copy_from_slice(&part[..n]);
        }
        w
    }
    (
        u128::from_be_bytes(word(k, 0)),
        u128::from_be_bytes(word(k, 16)),
        u64::from_be_bytes(word(k, 32)),
    )
}

/// Keys in byte order, of equal keys the last given (as in a batch). The
/// sort compares each key's first 40 bytes as integers and whole keys only
/// on a tie: sorting the 300,000 index entries of a 100,000-row upload by
/// `memcmp` was 17% of the request threads' CPU (perf, BENCHMARKS.md).
pub(super) fn sorted_run(items: Vec<(Vec<u8>, Bytes)>) -> Vec<Entry> {
    let mut items: Vec<(Words, Vec<u8>, Bytes)> =
        items.into_iter().map(|(k, v)| (words(&k), k, v)).collect();
    let mut order: Vec<(Words, usize)> = items.iter().enumerate().map(|(i, e)| (e.0, i)).collect();
    // Zero padding makes a key and its extension by zero bytes tie on the
    // words; the whole keys then decide, and then the order given.
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| items[a.1].1.cmp(&items[b.1].1))
            .then(a.1.cmp(&b.1))
    });
    let mut sorted = Vec::with_capacity(items.len());
    for (n, &(w, i)) in order.iter().enumerate() {
        let superseded = order
            .get(n + 1)
            .is_some_and(|&(nw, next)| nw == w && items[next].1 == items[i].1);
        if !superseded {
            sorted.push(std::mem::take(&mut items[i]));
        }
    }
    sorted
}

/// A run's next entry in a k-way merge: smallest key first, and of equal
/// keys the earlier run first (so that the later run's comes last and wins).
struct Head {
    entry: Entry,
    run: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap pops the greatest: reverse.
        (other.entry.0, &other.entry.1, other.run).cmp(&(self.entry.0, &self.entry.1, self.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Head {}

/// Sorted runs, in the order they were given, merged into one; of equal
/// keys the later run's wins.
pub(super) fn merge_runs(mut runs: Vec<Vec<Entry>>) -> Vec<(Vec<u8>, Bytes)> {
    if runs.len() == 1 {
        return runs
            .pop()
            .into_iter()
            .flatten()
            .map(|(_, k, v)| (k, v))
            .collect();
    }
    let total = runs.iter().map(Vec::len).sum();
    let mut iters: Vec<_> = runs.into_iter().map(Vec::into_iter).collect();
    let mut heap = BinaryHeap::with_capacity(iters.len());
    for (run, it) in iters.iter_mut().enumerate() {
        if let Some(entry) = it.next() {
            heap.push(Head { entry, run });
        }
    }
    let mut out: Vec<(Vec<u8>, Bytes)> = Vec::with_capacity(total);
    let mut last: Option<Words> = None;
    while let Some(Head { entry, run }) = heap.pop() {
        if let Some(next) = iters[run].next() {
            heap.push(Head { entry: next, run });
        }
        let (w, k, v) = entry;
        match out.last_mut() {
            Some(prev) if last == Some(w) && prev.0 == k => prev.1 = v,
            _ => out.push((k, v)),
        }
        last = Some(w);
    }
    out
}

/// The ingestions of one table: one is written at a time, and the runs
/// that arrive meanwhile are gathered into the next.
#[derive(Default)]
pub(super) struct IngestQueue {
    state: Mutex<QueueState>,
    done: Condvar,
}

#[derive(Default)]
struct QueueState {
    /// Runs waiting for the next ingestion, in arrival order.
    pending: Vec<Vec<Entry>>,
    /// The number of the next ingestion (the one `pending` goes into).
    next: u64,
    /// Ingestions below this number are finished.
    finished: u64,
    /// Whether a caller is writing (or waiting to write) an ingestion.
    leading: bool,
    /// The recent ingestions that failed, and why.
    failed: Vec<(u64, String)>,
}

impl IngestQueue {
    /// Ingests a sorted run with the runs of concurrent callers: returns
    /// when the ingestion holding it is durable (or has failed). `room`
    /// gives level 0's run count; `write` writes merged entries as one
    /// run.
    pub(super) fn ingest(
        &self,
        run: Vec<Entry>,
        room: impl Fn() -> usize,
        write: impl Fn(Vec<(Vec<u8>, Bytes)>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        let mine = st.next;
        st.pending.push(run);
        loop {
            if st.finished > mine {
                return match st.failed.iter().find(|(n, _)| *n == mine) {
                    Some((_, why)) => Err(StoreError::Engine {
                        backend: super::BACKEND,
                        op: "ingest a run shared with other uploads",
                        source: why.clone().into(),
                    }),
                    None => Ok(()),
                };
            }
            if st.leading {
                self.done.wait(&mut st);
                continue;
            }
            st.leading = true;
            drop(st);
            // Wait (bounded) for room in level 0; uploads arriving
            // meanwhile join this ingestion.
            let waited = Instant::now();
            while room() >= MAX_L0_RUNS && waited.elapsed() < MAX_WAIT {
                std::thread::sleep(Duration::from_millis(10));
            }
            let (number, runs) = {
                let mut st = self.state.lock();
                st.next += 1;
                (st.next - 1, std::mem::take(&mut st.pending))
            };
            // A panic in the write must not leave `leading` set: every
            // later ingestion of the table would wait for good.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(merge_runs(runs))))
                    .unwrap_or_else(|_| {
                        Err(StoreError::Engine {
                            backend: super::BACKEND,
                            op: "ingest",
                            source: "the ingestion panicked".into(),
                        })
                    });
            st = self.state.lock();
            st.finished = number + 1;
            st.leading = false;
            if let Err(e) = &result {
                st.failed.push((number, e.to_string()));
                let excess = st.failed.len().saturating_sub(64);
                st.failed.drain(..excess);
            }
            self.done.notify_all();
            // The leader's own run is always in the ingestion it leads: it
            // was pending, and no one else was leading.
            debug_assert_eq!(number, mine);
            return result;
        }
    }
}

/// One queue per table.
pub(super) type IngestQueues = HashMap<crate::Table, IngestQueue>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The plain way: sort by whole keys, then the order given; keep the
    /// last of equal keys.
    fn reference(items: &[(Vec<u8>, Bytes)]) -> Vec<(Vec<u8>, Bytes)> {
        let mut v: Vec<(usize, &(Vec<u8>, Bytes))> = items.iter().enumerate().collect();
        v.sort_by(|a, b| a.1.0.cmp(&b.1.0).then(a.0.cmp(&b.0)));
        let mut out: Vec<(Vec<u8>, Bytes)> = Vec::new();
        for (_, (k, val)) in v {
            match out.last_mut() {
                Some(last) if last.0 == *k => last.1 = val.clone(),
                _ => out.push((k.clone(), val.clone())),
            }
        }
        out
    }

    /// Keys of 0 to 60 bytes of zeros and ones with a tail of 0–2, so that
    /// ties on the first 40 bytes, prefixes and zero extensions occur.
    fn random_items(next: &mut impl FnMut() -> u64, tag: &str) -> Vec<(Vec<u8>, Bytes)> {
        let n = (next() % 300) as usize;
        (0..n)
            .map(|i| {
                let len = match next() % 4 {
                    0 => (next() % 8) as usize,
                    1 => 33,
                    2 => 40 + (next() % 2) as usize,
                    _ => (next() % 61) as usize,
                };
                let shared = u8::from(next().is_multiple_of(2));
                let key = (0..len)
                    .map(|j| if j < 32 { shared } else { (next() % 3) as u8 })
                    .collect();
                (key, Bytes::from(format!("{tag}/{i}")))
            })
            .collect()
    }

    fn xorshift() -> impl FnMut() -> u64 {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    fn plain(run: Vec<Entry>) -> Vec<(Vec<u8>, Bytes)> {
        run.into_iter().map(|(_, k, v)| (k, v)).collect()
    }

    #[test]
    fn a_run_is_in_byte_order_and_the_last_of_equal_keys_wins() {
        let mut next = xorshift();
        for round in 0..200 {
            let items = random_items(&mut next, &round.to_string());
            assert_eq!(
                plain(sorted_run(items.clone())),
                reference(&items),
                "round {round}"
            );
        }
    }

    #[test]
    fn merged_runs_equal_one_sort_of_all_and_the_later_run_wins() {
        let mut next = xorshift();
        for round in 0..100 {
            let runs: Vec<Vec<(Vec<u8>, Bytes)>> = (0..(next() % 5) as usize)
                .map(|r| random_items(&mut next, &format!("{round}/{r}")))
                .collect();
            let all: Vec<(Vec<u8>, Bytes)> = runs.iter().flatten().cloned().collect();
            let merged = merge_runs(runs.into_iter().map(sorted_run).collect());
            assert_eq!(merged, reference(&all), "round {round}");
        }
    }

    #[test]
    fn a_panicking_ingestion_fails_its_callers_and_the_next_one_runs() {
        let queue = IngestQueue::default();
        let panicked = queue.ingest(
            sorted_run(vec![(vec![1], Bytes::new())]),
            || 0,
            |_| panic!("a bug in the engine"),
        );
        assert!(
            panicked.unwrap_err().to_string().contains("panicked"),
            "the caller learns of the panic"
        );
        let next = queue.ingest(sorted_run(vec![(vec![2], Bytes::new())]), || 0, |_| Ok(()));
        assert!(next.is_ok());
    }

    #[test]
    fn concurrent_ingestions_are_gathered_and_each_caller_sees_its_own_outcome() {
        let queue = Arc::new(IngestQueue::default());
        let written = Arc::new(Mutex::new(Vec::<Vec<(Vec<u8>, Bytes)>>::new()));
        let callers: Vec<_> = (0..8u8)
            .map(|c| {
                let (queue, written) = (queue.clone(), written.clone());
                std::thread::spawn(move || {
                    let run = sorted_run(vec![(vec![c], Bytes::from(vec![c]))]);
                    queue.ingest(
                        run,
                        || 0,
                        |entries| {
                            // Slow enough that the others pile up behind.
                            std::thread::sleep(Duration::from_millis(50));
                            let fail = entries.iter().any(|(k, _)| k == &[7]);
                            written.lock().push(entries);
                            if fail {
                                Err(StoreError::Unavailable {
                                    backend: "test",
                                    reason: "disk full".into(),
                                })
                            } else {
                                Ok(())
                            }
                        },
                    )
                })
            })
            .collect();
        let outcomes: Vec<_> = callers.into_iter().map(|h| h.join().unwrap()).collect();
        let written = written.lock();
        // Every key written once, each run in order; fewer runs than
        // callers.
        let mut keys: Vec<u8> = written.iter().flatten().map(|(k, _)| k[0]).collect();
        assert!(
            written
                .iter()
                .all(|r| r.windows(2).all(|w| w[0].0 < w[1].0))
        );
        assert!(written.len() < 8, "{} runs for 8 callers", written.len());
        keys.sort_unstable();
        assert_eq!(keys, (0..8).collect::<Vec<u8>>());
        // The callers whose keys went with key 7 got its error; the others
        // did not.
        let failed_run: Vec<u8> = written
            .iter()
            .find(|r| r.iter().any(|(k, _)| k == &[7]))
            .unwrap()
            .iter()
            .map(|(k, _)| k[0])
            .collect();
        for (c, outcome) in outcomes.iter().enumerate() {
            assert_eq!(
                outcome.is_err(),
                failed_run.contains(&(c as u8)),
                "caller {c}: {outcome:?}"
            );
        }
    }
}
