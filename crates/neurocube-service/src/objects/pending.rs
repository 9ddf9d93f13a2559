//! Label writes acknowledged but not yet in their chunks: per chunk, the
//! patches in the order they were made. Reads apply them over the stored
//! chunk (`Volumes` asks [`PendingLabels::overlay`] before it reads the
//! store), so a client always reads its own writes; the flusher seals what
//! is pending, writes each touched chunk once, then forgets it.
//!
//! Writes are grouped into epochs: each logged write belongs to the epoch
//! open when it was made, and its log entry is stored under that epoch
//! (`keys::label_log`). Sealing closes the epoch; once its chunks are
//! stored, the epoch's log partition is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use neurocube_core::{ChannelName, ChunkIndex, DatasetName, morton};
use tokio::sync::{Notify, watch};

use crate::error::{Result, ServiceError};

/// Writers are paused when no label write came for this long and none is
/// waiting for its commit.
const QUIET: Duration = Duration::from_millis(50);

/// A pending patch: the write it came from, its label, and its voxels.
#[derive(Clone, Debug)]
pub struct Patch {
    /// The write (unique in this process).
    pub seq: u64,
    /// The label written (0 clears).
    pub label: u64,
    /// Runs of voxel offsets in the chunk, C order, as (first, length)
    /// ([`neurocube_core::labels::runs`]).
    pub runs: Runs,
}

/// Runs of voxel offsets, shared between the pending buffer and readers.
pub type Runs = Arc<[(u32, u32)]>;

/// A chunk: channel uid, level, Morton code.
pub type ChunkRef = (u64, u8, u64);

/// The names a channel's patches were written under (for the flush).
#[derive(Clone, Debug)]
pub struct ChannelNames {
    /// Dataset.
    pub dataset: DatasetName,
    /// Channel.
    pub channel: ChannelName,
}

/// Chunks sealed for a flush: their patches and their channels' names.
#[derive(Debug, Default)]
pub struct Sealed {
    /// The epoch sealed.
    pub epoch: u64,
    /// Per chunk, its patches in order.
    pub chunks: Vec<(ChunkRef, Vec<Patch>)>,
    /// Names of every channel in `chunks`.
    pub names: HashMap<u64, ChannelNames>,
}

#[derive(Default)]
struct State {
    epoch: u64,
    next_seq: u64,
    live: HashMap<ChunkRef, Vec<Patch>>,
    flushing: HashMap<ChunkRef, Vec<Patch>>,
    /// Chunks the flush under way has stored, whose log entries are not
    /// retired yet (the log's start has not moved past their epoch): a
    /// crash now would replay them, so a cutout write over them waits.
    retiring: HashSet<ChunkRef>,
    /// Chunks pending per (uid, level), live and flushing.
    channels: HashMap<(u64, u8), usize>,
    names: HashMap<u64, ChannelNames>,
    bytes: usize,
    /// Writes not yet durable (or failed), per epoch.
    inflight: BTreeMap<u64, usize>,
}

fn patch_bytes(p: &Patch) -> usize {
    64 + 8 * p.runs.len()
}

/// The pending label writes of this process.
pub struct PendingLabels {
    state: Mutex<State>,
    max_bytes: usize,
    /// Woken when a write is added (the flusher's timer starts) or a flush
    /// is asked for.
    pub(crate) wake: Notify,
    /// Woken when an epoch's last in-flight write is done.
    settled: Notify,
    /// Set when a flush is asked for (a cutout write over pending chunks).
    pub(crate) urgent: std::sync::atomic::AtomicBool,
    /// Writes added so far (the flusher watches it to see writers pause).
    adds: std::sync::atomic::AtomicU64,
    /// The last epoch whose chunks are all stored.
    flushed: watch::Sender<Option<u64>>,
}

impl std::fmt::Debug for PendingLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLabels")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl PendingLabels {
    /// An empty buffer holding at most `max_bytes` of patches.
    #[must_use]
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            max_bytes,
            wake: Notify::new(),
            settled: Notify::new(),
            urgent: std::sync::atomic::AtomicBool::new(false),
            adds: std::sync::atomic::AtomicU64::new(0),
            flushed: watch::channel(None).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes added so far.
    #[must_use]
    pub fn adds(&self) -> u64 {
        self.adds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes added whose group commit has not answered yet.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.lock().inflight.values().sum()
    }

    /// Bytes of patches held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Chunks with pending patches (or stored, with their log entries not
    /// retired yet).
    #[must_use]
    pub fn chunks(&self) -> usize {
        let s = self.lock();
        s.live.len() + s.flushing.len() + s.retiring.len()
    }

    /// Whether any of `idxs` has label writes whose log entries are not
    /// retired: pending, being flushed, or stored by a flush that has not
    /// moved the log's start yet. A cutout write over such a chunk first
    /// waits for the flush ([`PendingLabels::flush_now`]): were it written
    /// in between and the server killed, the replay of the log at the next
    /// start would put the older labels back over it.
    #[must_use]
    pub fn unretired(&self, uid: u64, level: u8, idxs: &[ChunkIndex]) -> bool {
        let s = self.lock();
        if !s.channels.contains_key(&(uid, level)) && s.retiring.is_empty() {
            return false;
        }
        idxs.iter().any(|i| {
            let r = (uid, level, morton::encode(*i));
            s.live.contains_key(&r) || s.flushing.contains_key(&r) || s.retiring.contains(&r)
        })
    }

    /// The open epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Start at `epoch` (after the log was replayed).
    pub fn set_epoch(&self, epoch: u64) {
        self.lock().epoch = epoch;
    }

    /// The patches pending on each of `idxs` (flushing ones first), or
    /// `None` for every chunk when nothing of the channel's level is
    /// pending (the common case costs one map lookup).
    #[must_use]
    pub fn overlay(&self, uid: u64, level: u8, idxs: &[ChunkIndex]) -> Option<Vec<Vec<Patch>>> {
        let s = self.lock();
        if !s.channels.contains_key(&(uid, level)) {
            return None;
        }
        let out: Vec<Vec<Patch>> = idxs
            .iter()
            .map(|i| {
                let r = (uid, level, morton::encode(*i));
                let mut v = s.flushing.get(&r).cloned().unwrap_or_default();
                if let Some(l) = s.live.get(&r) {
                    v.extend(l.iter().cloned());
                }
                v
            })
            .collect();
        out.iter().any(|v| !v.is_empty()).then_some(out)
    }

    /// Add the patches of one write (after it was checked, before it is
    /// logged). Returns its epoch and sequence number; the caller must call
    /// [`PendingLabels::done`] with them once the log write returns.
    pub fn add(
        &self,
        names: &ChannelNames,
        uid: u64,
        level: u8,
        chunks: Vec<(u64, u64, Runs)>,
    ) -> Result<(u64, u64)> {
        let size: usize = chunks.iter().map(|c| 64 + 8 * c.2.len()).sum();
        let s = self.lock();
        if s.bytes > 0 && s.bytes + size > self.max_bytes {
            return Err(ServiceError::Overloaded {
                resource: "the pending label writes (bytes)",
                limit: self.max_bytes as u64,
                setting: "objects.max_pending_bytes",
                retry_after: Duration::from_secs(1),
            });
        }
        Ok(self.add_locked(s, names, uid, level, chunks))
    }

    /// Add a write whatever the bound (a replayed, acknowledged write).
    pub fn add_unbounded(
        &self,
        names: &ChannelNames,
        uid: u64,
        level: u8,
        chunks: Vec<(u64, u64, Runs)>,
    ) -> (u64, u64) {
        let s = self.lock();
        self.add_locked(s, names, uid, level, chunks)
    }

    fn add_locked(
        &self,
        mut s: std::sync::MutexGuard<'_, State>,
        names: &ChannelNames,
        uid: u64,
        level: u8,
        chunks: Vec<(u64, u64, Runs)>,
    ) -> (u64, u64) {
        let seq = s.next_seq;
        s.next_seq += 1;
        let epoch = s.epoch;
        *s.inflight.entry(epoch).or_default() += 1;
        s.names.entry(uid).or_insert_with(|| names.clone());
        for (code, label, runs) in chunks {
            let r = (uid, level, code);
            let fresh = !s.live.contains_key(&r) && !s.flushing.contains_key(&r);
            if fresh {
                *s.channels.entry((uid, level)).or_default() += 1;
            }
            let p = Patch { seq, label, runs };
            s.bytes += patch_bytes(&p);
            s.live.entry(r).or_default().push(p);
        }
        drop(s);
        self.adds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
        (epoch, seq)
    }

    /// A write's log entry was stored (`ok`) or failed: in the second case
    /// its patches are withdrawn.
    pub fn done(&self, epoch: u64, seq: u64, ok: bool) {
        let mut s = self.lock();
        if let Some(n) = s.inflight.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                s.inflight.remove(&epoch);
            }
        }
        if !ok {
            let st = &mut *s;
            let mut freed = 0;
            let mut emptied = Vec::new();
            for map in [&mut st.live, &mut st.flushing] {
                for (r, v) in map.iter_mut() {
                    v.retain(|p| {
                        let keep = p.seq != seq;
                        if !keep {
                            freed += patch_bytes(p);
                        }
                        keep
                    });
                    if v.is_empty() {
                        emptied.push(*r);
                    }
                }
                map.retain(|_, v| !v.is_empty());
            }
            st.bytes -= freed;
            for r in emptied {
                if !st.live.contains_key(&r) && !st.flushing.contains_key(&r) {
                    forget_chunk(&mut st.channels, r);
                }
            }
        }
        drop(s);
        self.settled.notify_waiters();
    }

    /// Close the open epoch: its patches move to the flushing set (reads
    /// still apply them) and later writes go to the next epoch. Returns the
    /// epoch closed (`None` if nothing is pending: a flush that failed
    /// leaves its chunks in the flushing set, and they count). Once its
    /// writes have settled, [`PendingLabels::sealed`] lists what to store.
    pub fn seal(&self) -> Option<u64> {
        let mut s = self.lock();
        if s.live.is_empty() && s.flushing.is_empty() && s.retiring.is_empty() {
            return None;
        }
        let live = std::mem::take(&mut s.live);
        let epoch = s.epoch;
        s.epoch += 1;
        for (r, v) in live {
            s.flushing.entry(r).or_default().extend(v);
        }
        Some(epoch)
    }

    /// What a sealed epoch holds, after its writes have settled (so the
    /// patches of a write whose log commit failed are gone).
    #[must_use]
    pub fn sealed(&self, epoch: u64) -> Sealed {
        let s = self.lock();
        let mut chunks: Vec<(ChunkRef, Vec<Patch>)> =
            s.flushing.iter().map(|(r, v)| (*r, v.clone())).collect();
        chunks.sort_unstable_by_key(|(r, _)| *r);
        let names = chunks
            .iter()
            .filter_map(|((uid, _, _), _)| s.names.get(uid).map(|n| (*uid, n.clone())))
            .collect();
        Sealed {
            epoch,
            chunks,
            names,
        }
    }

    /// Wait until every write of `epoch` has been logged or has failed.
    pub async fn settle(&self, epoch: u64) {
        loop {
            let notified = self.settled.notified();
            if !self.lock().inflight.contains_key(&epoch) {
                return;
            }
            notified.await;
        }
    }

    /// A sealed chunk is stored: forget its patches (reads find them in
    /// the store), but remember the chunk until its epoch is retired.
    pub fn stored(&self, r: ChunkRef) {
        let mut s = self.lock();
        if let Some(v) = s.flushing.remove(&r) {
            s.retiring.insert(r);
            let freed: usize = v.iter().map(patch_bytes).sum();
            s.bytes -= freed;
            if !s.live.contains_key(&r) {
                forget_chunk(&mut s.channels, r);
            }
        }
    }

    /// Every chunk of a sealed epoch is stored (or was given up), and the
    /// log's start has moved past it.
    pub fn epoch_flushed(&self, epoch: u64) {
        let mut s = self.lock();
        s.flushing.clear();
        s.retiring.clear();
        let live_uids: std::collections::HashSet<u64> = s.live.keys().map(|r| r.0).collect();
        s.names.retain(|uid, _| live_uids.contains(uid));
        s.bytes = s
            .live
            .values()
            .flat_map(|v| v.iter().map(patch_bytes))
            .sum();
        let mut counts: HashMap<(u64, u8), usize> = HashMap::new();
        for r in s.live.keys() {
            *counts.entry((r.0, r.1)).or_default() += 1;
        }
        s.channels = counts;
        drop(s);
        self.flushed.send_replace(Some(epoch));
    }

    /// Wait until a flush is due: something is pending, then writes were
    /// gathered for `interval`; then as soon as writers pause (a storm is
    /// absorbed in memory and flushed behind it), and at most `max_delay`
    /// after the first write; at once when asked to or when `at_bytes` are
    /// pending.
    pub async fn until_flush_due(&self, interval: Duration, max_delay: Duration, at_bytes: usize) {
        loop {
            let woken = self.wake.notified();
            if self.chunks() > 0 {
                break;
            }
            woken.await;
        }
        let first = tokio::time::Instant::now();
        let interval_end = first + interval;
        let latest = first + max_delay.max(interval);
        loop {
            if self.urgent.load(std::sync::atomic::Ordering::SeqCst) || self.bytes() >= at_bytes {
                return;
            }
            let now = tokio::time::Instant::now();
            if now >= latest {
                return;
            }
            let adds = self.adds();
            let until = if now < interval_end {
                interval_end
            } else {
                (now + QUIET).min(latest)
            };
            let woken = self.wake.notified();
            // Woken by a write, or by an urgent request: look again. Writes
            // still in their group commit are writers held up by the store
            // (a memtable rotation stalls them for up to ~0.2 s), not a
            // pause: flushing then would put the flush in the storm.
            if tokio::time::timeout_at(until, woken).await.is_err()
                && until != interval_end
                && self.adds() == adds
                && self.in_flight() == 0
            {
                return;
            }
        }
    }

    /// Ask the flusher to store everything pending now, and wait until it
    /// has (at most `timeout`, then 503).
    pub async fn flush_now(&self, timeout: Duration) -> Result<()> {
        let target = {
            let s = self.lock();
            if s.live.is_empty() && s.flushing.is_empty() && s.retiring.is_empty() {
                return Ok(());
            }
            if s.live.is_empty() {
                s.epoch.saturating_sub(1)
            } else {
                s.epoch
            }
        };
        let mut rx = self.flushed.subscribe();
        self.urgent.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
        let wait = rx.wait_for(|f| f.is_some_and(|e| e >= target));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(ServiceError::Overloaded {
                resource: "the flush of pending label writes",
                limit: timeout.as_secs(),
                setting: "objects.flush_interval_ms",
                retry_after: Duration::from_secs(1),
            }),
        }
    }
}

fn forget_chunk(channels: &mut HashMap<(u64, u8), usize>, r: ChunkRef) {
    if let Some(n) = channels.get_mut(&(r.0, r.1)) {
        *n -= 1;
        if *n == 0 {
            channels.remove(&(r.0, r.1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ChannelNames {
        ChannelNames {
            dataset: DatasetName::parse("d").unwrap(),
            channel: ChannelName::parse("a").unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_is_due_when_writers_pause_not_while_a_commit_is_held_up() {
        use tokio::time::{Instant, sleep};
        let ms = Duration::from_millis;
        let p = Arc::new(PendingLabels::new(1 << 20));
        let code = morton::encode([0, 0, 0]);
        let add = |label| {
            p.add(
                &names(),
                9,
                0,
                vec![(code, label, Arc::from(vec![(1u32, 1u32)]))],
            )
            .unwrap()
        };
        let due = |p: &Arc<PendingLabels>| {
            let p = p.clone();
            tokio::spawn(async move {
                p.until_flush_due(ms(100), ms(10_000), 1 << 30).await;
                Instant::now()
            })
        };

        // A write acknowledged at once, then no more: due one interval and
        // one pause later.
        let t0 = Instant::now();
        let waiter = due(&p);
        let (e, s) = add(5);
        p.done(e, s, true);
        let at = waiter.await.unwrap() - t0;
        assert!(at >= ms(100) + QUIET && at <= ms(100) + 2 * QUIET, "{at:?}");

        // A write held in its group commit for 2 s (a stalled store) is not
        // a pause: the flush waits for it, then for a pause.
        let t0 = Instant::now();
        let waiter = due(&p);
        let (e, s) = add(6);
        sleep(ms(2_000)).await;
        assert!(!waiter.is_finished());
        p.done(e, s, true);
        let at = waiter.await.unwrap() - t0;
        assert!(at >= ms(2_000) && at <= ms(2_000) + 2 * QUIET, "{at:?}");

        // Writes held up for good: due at the longest delay.
        let t0 = Instant::now();
        let waiter = due(&p);
        let _held = add(7);
        let at = waiter.await.unwrap() - t0;
        assert_eq!(at, ms(10_000));

        // Asked for: due at once.
        let waiter = due(&p);
        p.urgent.store(true, std::sync::atomic::Ordering::SeqCst);
        p.wake.notify_one();
        let t0 = Instant::now();
        assert!(waiter.await.unwrap() - t0 <= QUIET);
    }

    #[test]
    fn overlays_follow_writes_seals_and_failures() {
        let p = PendingLabels::new(1 << 20);
        let idx = [1, 2, 3];
        let code = morton::encode(idx);
        assert!(p.overlay(9, 0, &[idx]).is_none());
        let (e, s1) = p
            .add(
                &names(),
                9,
                0,
                vec![(code, 5, Arc::from(vec![(1u32, 2u32)]))],
            )
            .unwrap();
        let (_, s2) = p
            .add(
                &names(),
                9,
                0,
                vec![(code, 6, Arc::from(vec![(2u32, 1u32)]))],
            )
            .unwrap();
        let ov = p.overlay(9, 0, &[idx, [0, 0, 0]]).unwrap();
        assert_eq!(ov[0].iter().map(|x| x.label).collect::<Vec<_>>(), [5, 6]);
        assert!(ov[1].is_empty());
        assert!(p.overlay(9, 1, &[idx]).is_none());
        p.done(e, s1, true);
        // A failed write is withdrawn.
        p.done(e, s2, false);
        let ov = p.overlay(9, 0, &[idx]).unwrap();
        assert_eq!(ov[0].len(), 1);
        // Sealed patches stay visible until their chunk is stored.
        assert_eq!(p.seal(), Some(e));
        let sealed = p.sealed(e);
        assert_eq!(sealed.chunks.len(), 1);
        assert_eq!(p.epoch(), e + 1);
        assert_eq!(p.overlay(9, 0, &[idx]).unwrap()[0].len(), 1);
        assert!(p.unretired(9, 0, &[idx]));
        p.stored(sealed.chunks[0].0);
        assert!(p.overlay(9, 0, &[idx]).is_none());
        // Stored, but until the log's start moves past the epoch a crash
        // would replay it: cutout writes over it still wait.
        assert!(p.unretired(9, 0, &[idx]));
        assert!(!p.unretired(9, 0, &[[0, 0, 0]]));
        assert!(!p.unretired(9, 1, &[idx]));
        assert_eq!(p.chunks(), 1);
        p.epoch_flushed(sealed.epoch);
        assert!(!p.unretired(9, 0, &[idx]));
        assert_eq!(p.bytes(), 0);
        assert!(p.seal().is_none());
    }

    #[test]
    fn a_write_whose_log_commit_fails_after_the_seal_is_not_flushed() {
        let p = PendingLabels::new(1 << 20);
        let (e, ok) = p
            .add(&names(), 3, 0, vec![(7, 1, Arc::from(vec![(0u32, 1u32)]))])
            .unwrap();
        let (_, bad) = p
            .add(&names(), 3, 0, vec![(8, 2, Arc::from(vec![(0u32, 1u32)]))])
            .unwrap();
        assert_eq!(p.seal(), Some(e));
        p.done(e, ok, true);
        p.done(e, bad, false);
        let sealed = p.sealed(e);
        let labels: Vec<u64> = sealed
            .chunks
            .iter()
            .flat_map(|(_, v)| v.iter().map(|x| x.label))
            .collect();
        assert_eq!(labels, [1]);
    }

    #[test]
    fn the_buffer_is_bounded() {
        let p = PendingLabels::new(200);
        let big: Runs = Arc::from(vec![(0u32, 1u32); 20]);
        p.add(&names(), 1, 0, vec![(0, 1, big.clone())]).unwrap();
        let e = p.add(&names(), 1, 0, vec![(1, 1, big)]).unwrap_err();
        assert!(matches!(e, ServiceError::Overloaded { .. }), "{e}");
    }
}
