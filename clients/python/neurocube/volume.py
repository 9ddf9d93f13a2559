"""Volumes: cutouts into numpy arrays and uploads from them, split into
blocks aligned to the channel's chunk grid and moved in parallel, with a
progress bar for large boxes; uploads resume from a journal; tiles.

Boxes are ``((x0, x1), (y0, y1), (z0, z1))`` in voxels of the level, end
exclusive; arrays are C-ordered ``(z, y, x)``, as the server's cutouts."""
from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import errors

Box = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]

#: Boxes at least this large show a progress bar unless told otherwise.
PROGRESS_BYTES = 64 << 20


def _box(box: Sequence[Sequence[int]]) -> Box:
    try:
        (x0, x1), (y0, y1), (z0, z1) = ((int(a), int(b)) for a, b in box)
    except (TypeError, ValueError):
        raise ValueError(f"a box is ((x0, x1), (y0, y1), (z0, z1)), not {box!r}") from None
    if not (x0 < x1 and y0 < y1 and z0 < z1) or min(x0, y0, z0) < 0:
        raise ValueError(f"box {box!r} is empty, inverted or negative")
    return ((x0, x1), (y0, y1), (z0, z1))


def _split(n: int, k: int) -> List[int]:
    """`n` chunks cut into `k` runs as equal as they go: the runs' starts,
    then `n`."""
    return [i * n // k for i in range(k)] + [n]


def blocks(box: Box, chunk: Sequence[int], itemsize: int,
           target_bytes: int = 32 << 20) -> List[Box]:
    """The box cut by a grid of blocks of whole chunks (but at the box's
    edges), so every request reads or writes whole stored chunks. The box's
    chunks are shared out evenly: about one block per `target_bytes` of
    them, cut along z first, then y, then x, so blocks stay whole planes
    (contiguous in the answer) where they can and are of about one size
    (an unaligned box does not leave thin blocks at its edges)."""
    c = [int(v) for v in chunk]
    first = [lo // s for (lo, _), s in zip(box, c)]
    n = [-(-hi // s) - f for (_, hi), s, f in zip(box, c, first)]
    chunk_bytes = c[0] * c[1] * c[2] * itemsize
    want = max(1, round(n[0] * n[1] * n[2] * chunk_bytes / max(1, target_bytes)))
    k = [1, 1, 1]
    for axis in (2, 1, 0):
        k[axis] = max(1, min(n[axis], -(-want // (k[0] * k[1] * k[2]))))
    cuts = []
    for axis in range(3):
        lo, hi = box[axis]
        edges = [(first[axis] + i) * c[axis] for i in _split(n[axis], k[axis])]
        edges[0], edges[-1] = lo, hi
        cuts.append(list(zip(edges[:-1], edges[1:])))
    return [(x, y, z) for z in cuts[2] for y in cuts[1] for x in cuts[0]]


def _url(ds: str, ch: str, fmt: str, level: int, b: Box) -> str:
    (x0, x1), (y0, y1), (z0, z1) = b
    return f"/{ds}/{ch}/{fmt}/{level}/{x0},{x1}/{y0},{y1}/{z0},{z1}/"


def _bar(total: int, nbytes: int, progress: Optional[bool], desc: str):
    from tqdm.auto import tqdm

    show = progress if progress is not None else nbytes >= PROGRESS_BYTES
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not show)


class VolumeMixin:
    """Cutouts, uploads and tiles (mixed into `Client`)."""

    def _geometry(self, ds: str, ch: str) -> Tuple[np.dtype, List[int]]:
        c = self.channel(ds, ch)
        return np.dtype(c["dtype"]), list(c["chunk_size"])

    def cutout(self, ds: str, ch: str, level: int, box: Sequence[Sequence[int]], *,
               progress: Optional[bool] = None, block_bytes: int = 32 << 20,
               method: str = "auto") -> np.ndarray:
        """The voxels of a box as a ``(z, y, x)`` array of the channel's dtype,
        read in chunk-aligned blocks by `workers` parallel requests. With
        ``"chunks"`` (what ``"auto"`` picks when the compiled part or the
        `blosc` package is there) the server sends its stored Blosc chunks
        as they are (docs/chunks.md) and they are decoded here, by the
        compiled part with the GIL released when it is built (the client's
        `native`), else by python-blosc; with ``"raw"`` it sends
        decoded voxels, read from the socket straight into the array. A
        progress bar shows for boxes of 64 MiB or more (`progress` forces
        it on or off)."""
        b = _box(box)
        dtype, chunk = self._geometry(ds, ch)
        if method == "auto":
            method = "chunks" if self._transport is not None or _blosc() is not None else "raw"
        if method not in ("chunks", "raw"):
            raise ValueError(f"method={method!r}: use 'auto', 'chunks' or 'raw'")
        (x0, x1), (y0, y1), (z0, z1) = b
        shape = (z1 - z0, y1 - y0, x1 - x0)
        # Chunks never written are not sent: they must read as zeros.
        out = np.zeros(shape, dtype=dtype) if method == "chunks" else np.empty(shape, dtype=dtype)
        # At least two blocks per worker, so every worker has work.
        target = min(block_bytes, max(4 << 20, out.nbytes // (2 * self.workers)))
        parts = blocks(b, chunk, dtype.itemsize, target)
        if method == "chunks":
            def fetch_chunks(p: Box) -> int:
                path = _url(ds, ch, "chunks", level, p)
                if self._transport is not None:
                    self._chunks_into(path, out, (x0, y0, z0), p, chunk)
                else:
                    r = self.request("GET", path, stream=True)
                    read_chunk_stream(r, out, (x0, y0, z0), p, dtype, chunk)
                return _nbytes(p, dtype)

            with _bar(out.nbytes, out.nbytes, progress, f"{ds}/{ch} cutout") as bar:
                self._each(fetch_chunks, parts, bar)
            return out

        def fetch(p: Box) -> int:
            (a0, a1), (b0, b1), (c0, c1) = p
            view = out[c0 - z0:c1 - z0, b0 - y0:b1 - y0, a0 - x0:a1 - x0]
            # Straight into the answer when the block is contiguous in it.
            tmp = view if view.flags.c_contiguous else np.empty(view.shape, dtype)
            r = self.request("GET", _url(ds, ch, "raw", level, p), stream=True)
            n = self.read_into(r, tmp)
            if tmp is not view:
                view[...] = tmp
            return n

        with _bar(out.nbytes, out.nbytes, progress, f"{ds}/{ch} cutout") as bar:
            self._each(fetch, parts, bar)
        return out

    def _chunks_into(self, path: str, out: np.ndarray, origin: Sequence[int], p: Box,
                     chunk: Sequence[int]) -> int:
        """One block's chunk stream, fetched and decoded into `out` by the
        compiled transport with the GIL released (retried and raised as
        `request` does); returns the records read."""
        from .client import RETRIED, _back_off

        url = f"{self.url}{path}"
        headers = [("Authorization", f"Bearer {self.token}")] if self.token else []
        flat = out.reshape(-1).view(np.uint8)  # the array's own memory, as bytes
        geometry = (out.shape, out.dtype.itemsize, tuple(origin), p, tuple(chunk))
        for attempt in range(self.retries + 1):
            status, retry_after, body, records = self._transport.chunks_into(
                url, headers, flat, *geometry)
            if status == 200:
                return records
            if status in RETRIED and attempt < self.retries:
                _back_off(retry_after, attempt)
                continue
            raise errors.from_status(status, body or b"", url)
        raise AssertionError("unreachable")

    def upload(self, ds: str, ch: str, level: int, array: np.ndarray,
               offset: Sequence[int] = (0, 0, 0), *, journal: Optional[str] = None,
               progress: Optional[bool] = None, block_bytes: int = 32 << 20) -> int:
        """Write a ``(z, y, x)`` array with its first voxel at `offset`
        (x, y, z), in chunk-aligned blocks sent as npy by `workers` parallel
        requests. With `journal` (a file path) the blocks written are
        recorded as they are acknowledged, and a second call with the same
        journal resumes after an interruption; the journal is removed when
        the upload is complete. Returns the bytes written."""
        array = np.ascontiguousarray(array)
        if array.ndim != 3:
            raise ValueError(f"upload takes a 3-D (z, y, x) array, not shape {array.shape}")
        dtype, chunk = self._geometry(ds, ch)
        if array.dtype != dtype:
            raise ValueError(f"channel {ds}/{ch} holds {dtype}, the array is {array.dtype}")
        ox, oy, oz = (int(v) for v in offset)
        nz, ny, nx = array.shape
        b = _box(((ox, ox + nx), (oy, oy + ny), (oz, oz + nz)))
        parts = blocks(b, chunk, dtype.itemsize, block_bytes)
        done = set()
        if journal and os.path.exists(journal):
            with open(journal) as f:
                done = {tuple(map(tuple, json.loads(line))) for line in f if line.strip()}
        todo = [p for p in parts if p not in done]
        log = open(journal, "a") if journal else None

        def send(p: Box) -> int:
            (a0, a1), (b0, b1), (c0, c1) = p
            part = array[c0 - oz:c1 - oz, b0 - oy:b1 - oy, a0 - ox:a1 - ox]
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(part))
            self.request("PUT", _url(ds, ch, "npy", level, p), data=buf.getvalue(),
                         headers={"Content-Type": "application/octet-stream"})
            if log is not None:
                log.write(json.dumps(p) + "\n")
                log.flush()
            return part.nbytes

        try:
            with _bar(sum(_nbytes(p, dtype) for p in todo), array.nbytes, progress,
                      f"{ds}/{ch} upload") as bar:
                written = sum(self._each(send, todo, bar))
        finally:
            if log is not None:
                log.close()
        if journal and os.path.exists(journal):
            os.remove(journal)
        return written

    def _each(self, fn, parts: list, bar) -> Iterator[int]:
        """Run `fn` over `parts` on `workers` threads, advancing the bar;
        the first error is raised (the other requests are let finish)."""
        results = []
        if self.workers == 1 or len(parts) == 1:
            for p in parts:
                n = fn(p)
                bar.update(n)
                results.append(n)
            return results
        for n in self._pool().map(fn, parts):
            bar.update(n)
            results.append(n)
        return results

    def _pool(self) -> ThreadPoolExecutor:
        """The client's worker threads, kept between calls: each keeps its
        session, so its connection to the server stays open (a new pool per
        call opened new connections every time)."""
        with self._pool_lock:
            if self._workers_pool is None:
                self._workers_pool = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="neurocube")
            return self._workers_pool

    def tile(self, ds: str, ch: str, level: int, slice_index: int, row: int, col: int, *,
             plane: str = "xy", size: int = 512, fmt: str = "png") -> np.ndarray:
        """One cached tile of the tile service as an array (rows, columns),
        decoded with Pillow: ``plane`` xy, xz or yz; ``size`` 256, 512 or 1024."""
        from PIL import Image

        r = self.request("GET", f"/v1/tiles/{ds}/{ch}/{plane}/{size}/{level}/{slice_index}/{row}/{col}.{fmt}")
        return np.asarray(Image.open(io.BytesIO(r.content)))

    def downsample(self, ds: str, ch: str, *, wait: bool = True, progress: Optional[bool] = None):
        """Recompute a channel's stale coarser levels (a job); wait for it."""
        j = self.request("POST", f"/v1/datasets/{ds}/channels/{ch}/downsample", json_body={}).json()
        return self.wait_for_job(j["id"], progress=progress) if wait else j


_BLOSC_THREADS_SET = False


def _blosc():
    """python-blosc, set to decode on the calling thread only: the client
    decodes chunks on its own worker threads, and Blosc's internal threads
    on top of them made decoding three times slower (BENCHMARKS.md)."""
    global _BLOSC_THREADS_SET
    try:
        import blosc
    except ImportError:
        return None
    if not _BLOSC_THREADS_SET:
        blosc.set_nthreads(1)
        # python-blosc holds the GIL while it decodes unless told otherwise;
        # released, one worker decodes while the others read their sockets.
        blosc.set_releasegil(True)
        _BLOSC_THREADS_SET = True
    return blosc


def read_chunk_stream(r, out: np.ndarray, origin: Sequence[int], box: Box, dtype: np.dtype,
                      chunk: Sequence[int]) -> int:
    """Decode a chunk stream (docs/chunks.md, version 1) into `out`, whose
    voxel (0, 0, 0) is `origin` (x, y, z), keeping the part of each chunk
    inside `box`; returns the records read. A stream cut short, or of
    another version, raises ValueError."""
    import struct

    blosc = _blosc()
    if blosc is None:
        raise ImportError("decoding chunk streams needs the blosc package: pip install blosc")
    fp = getattr(r.raw, "_fp", None) or r.raw

    def read(n: int) -> bytes:
        b = fp.read(n)
        if len(b) != n:
            raise ValueError(f"{r.url}: the chunk stream was cut short")
        return b

    try:
        if read(8) != b"NCCHUNKS":
            raise ValueError(f"{r.url}: not a chunk stream")
        version, n = struct.unpack("<II", read(8))
        if version != 1:
            raise ValueError(f"{r.url}: chunk stream version {version}; this client reads version 1")
        read(n)  # the JSON header: the request already says what it holds
        cx, cy, cz = (int(c) for c in chunk)
        scratch = np.empty((cz, cy, cx), dtype=dtype)
        ox, oy, oz = origin
        (bx0, bx1), (by0, by1), (bz0, bz1) = box
        records = 0
        while True:
            x, y, z, length = struct.unpack("<IIII", read(16))
            if x == y == z == 0xFFFFFFFF:
                if length != records:
                    raise ValueError(f"{r.url}: trailer counts {length} chunks, {records} came")
                return records
            blosc.decompress_ptr(read(length), scratch.ctypes.data)
            records += 1
            gx, gy, gz = x * cx, y * cy, z * cz
            ax0, ax1 = max(gx, bx0), min(gx + cx, bx1)
            ay0, ay1 = max(gy, by0), min(gy + cy, by1)
            az0, az1 = max(gz, bz0), min(gz + cz, bz1)
            if ax0 >= ax1 or ay0 >= ay1 or az0 >= az1:
                continue
            out[az0 - oz:az1 - oz, ay0 - oy:ay1 - oy, ax0 - ox:ax1 - ox] = \
                scratch[az0 - gz:az1 - gz, ay0 - gy:ay1 - gy, ax0 - gx:ax1 - gx]
    finally:
        r.close()


def _nbytes(p: Box, dtype: np.dtype) -> int:
    (a0, a1), (b0, b1), (c0, c1) = p
    return (a1 - a0) * (b1 - b0) * (c1 - c0) * dtype.itemsize
