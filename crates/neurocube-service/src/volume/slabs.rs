//! Reading a cutout slab by slab: the chunks of a slab fetched (pending
//! label writes applied), decoded in parallel and copied into the slab.

use super::*;

type Fetched = (Vec<ChunkIndex>, Vec<Option<Bytes>>);

/// Where reads come from: the store, with pending label writes on top.
#[derive(Clone)]
pub(super) struct Source {
    pub(super) store: Arc<dyn Store>,
    pub(super) metrics: Metrics,
    pub(super) labels: Arc<PendingLabels>,
}

impl Volumes {
    pub(super) fn source(&self) -> Source {
        Source {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// The chunks of a slab and their stored bytes, with pending label writes
/// applied (such chunks are decoded, patched and compressed again).
pub(super) async fn fetch_slab(src: &Source, t: &Arc<Target>, slab: Box3) -> Result<Fetched> {
    let idxs = t.grid().chunks_in(&slab);
    // Taken before the store is read (see `load_chunk`).
    let overlay = src.labels.overlay(t.rc.channel.uid, t.level.level, &idxs);
    let keys: Vec<Key> = idxs.iter().map(|i| t.key(*i)).collect();
    let started = Instant::now();
    let mut stored = src.store.get_many(Table::Chunks, &keys).await?;
    src.metrics
        .store_seconds
        .with_label_values(&["get_many"])
        .observe(started.elapsed().as_secs_f64());
    src.metrics.chunk_reads.inc_by(keys.len() as u64);
    if let Some(overlay) = overlay {
        let (tt, ii) = (t.clone(), idxs.clone());
        stored = tokio::task::spawn_blocking(move || {
            stored
                .into_par_iter()
                .zip(ii.into_par_iter().zip(overlay.into_par_iter()))
                .map(|(s, (idx, patches))| {
                    if patches.is_empty() {
                        Ok(s)
                    } else {
                        patched(&tt, idx, s.as_ref(), &patches)
                    }
                })
                .collect::<Result<Vec<_>>>()
        })
        .await??;
    }
    Ok((idxs, stored))
}

/// A chunk's stored frame with patches applied, compressed again (`None`:
/// all zero).
pub(super) fn patched(
    t: &Target,
    idx: ChunkIndex,
    stored: Option<&Bytes>,
    patches: &[Patch],
) -> Result<Option<Bytes>> {
    thread_local! {
        // One decoded chunk per thread, reused: a fresh one each time costs
        // more in page faults and zeroing than the patch itself (measured
        // on the label flush: a third of its time).
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|d| {
        d.resize(t.chunk_bytes(), 0);
        match stored {
            Some(b) => decode_chunk(t, idx, b, d)?,
            None => d.fill(0),
        }
        for p in patches {
            labels::apply_runs(d, t.dtype().size(), p.label, &p.runs);
        }
        compress_chunk(t, d)
    })
}

pub(super) async fn read_slab(src: Source, t: Arc<Target>, slab: Box3) -> Result<Bytes> {
    let (idxs, stored) = fetch_slab(&src, &t, slab).await?;
    let out = tokio::task::spawn_blocking(move || {
        let mut out = vec![0u8; slab.voxels() as usize * t.dtype().size()];
        assemble_into(&t, slab, &idxs, &stored, &mut out).map(|()| out)
    })
    .await??;
    Ok(Bytes::from(out))
}

/// Fill a slab one row of chunks (same y index) at a time: decode the row's
/// chunks in parallel, then copy them into the slab's z-planes in parallel.
/// Only one row of decoded chunks is alive at once, so a wide cutout costs
/// its output plus a little, not twice its size.
pub(super) fn assemble_into(
    t: &Target,
    slab: Box3,
    idxs: &[ChunkIndex],
    stored: &[Option<Bytes>],
    out: &mut [u8],
) -> Result<()> {
    let grid = t.grid();
    let elem = t.dtype().size();
    let shape = slab.shape();
    let plane = (shape[0] * shape[1]) as usize * elem;
    // `chunks_in` lists chunks x fastest, so each y index is one contiguous run.
    let mut start = 0;
    while start < idxs.len() {
        let y = idxs[start][1];
        let end = start + idxs[start..].iter().take_while(|i| i[1] == y).count();
        let decoded: Vec<(ChunkIndex, Vec<u8>)> = idxs[start..end]
            .par_iter()
            .zip(stored[start..end].par_iter())
            .filter_map(|(&idx, s)| {
                s.as_ref().map(|bytes| {
                    let mut d = vec![0u8; t.chunk_bytes()];
                    decode_chunk(t, idx, bytes, &mut d).map(|()| (idx, d))
                })
            })
            .collect::<Result<_>>()?;
        if !decoded.is_empty() {
            out.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
                let z = slab.start[2] + i as u64;
                let pb = Box3 {
                    start: [slab.start[0], slab.start[1], z],
                    end: [slab.end[0], slab.end[1], z + 1],
                };
                for (idx, d) in &decoded {
                    let cb = grid.chunk_box(*idx);
                    if let Some(region) = cb.overlap(&pb) {
                        copy_region(d, &cb, dst, &pb, &region, elem);
                    }
                }
            });
        }
        start = end;
    }
    Ok(())
}
