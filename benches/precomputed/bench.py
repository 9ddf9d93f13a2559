"""Precomputed reads (issue 14): CloudVolume and TensorStore reading a
1024x1024x64 box of an EM-like volume over HTTP from neurocube, against
the same client reading the same volume from local precomputed files, in
one run. Prints a table of medians and the ratios.

python3 benches/precomputed/bench.py [--bin target/release/neurocube] [--rounds 5]

The volume is 2048x2048x64 uint8 (quantized gray levels, dark membranes,
organelles and noise), in 128x128x16 chunks on both sides. neurocube runs as
its own process on the embedded store (fsync); the local copy is written
by CloudVolume with no compression (raw chunk files, the same bytes
neurocube sends), so the rows compare transport, not codecs.
"""
import argparse
import io
import os
import statistics
import sys
import time

import numpy as np
import requests
import tensorstore as ts
from cloudvolume import CloudVolume

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from server import neurocube  # noqa: E402
from emdata import em_like  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--bin", default="target/release/neurocube")
p.add_argument("--rounds", type=int, default=5)
a = p.parse_args()

X, Y, Z = 2048, 2048, 64
CHUNK = (128, 128, 16)


def median_secs(fn):
    times = []
    for _ in range(a.rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


with neurocube(a.bin, "nc-precomputed-bench-") as (base, work):
    vol = em_like((Z, Y, X))
    r = requests.put(f"{base}/v1/datasets/b", json={"voxel_size": [4, 4, 40], "extent": [X, Y, Z], "levels": 1})
    assert r.status_code == 201, r.text
    r = requests.put(f"{base}/v1/datasets/b/channels/em", json={"type": "image", "dtype": "uint8", "chunk_size": list(CHUNK)})
    assert r.status_code == 201, r.text
    for y0 in range(0, Y, 1024):
        for x0 in range(0, X, 1024):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(vol[:, y0:y0 + 1024, x0:x0 + 1024]))
            r = requests.put(f"{base}/b/em/npy/0/{x0},{x0 + 1024}/{y0},{y0 + 1024}/0,{Z}/", data=buf.getvalue())
            assert r.status_code == 201, r.text

    local = f"file://{work}/local"
    info = CloudVolume.create_new_info(1, "image", "uint8", "raw", [4, 4, 40], [0, 0, 0], [X, Y, Z], chunk_size=CHUNK)
    lv = CloudVolume(local, info=info, compress=False, progress=False)
    lv.commit_info()
    lv[:, :, :] = vol.transpose(2, 1, 0)[..., np.newaxis]

    remote = f"precomputed://{base}/precomputed/b/em"
    boxes = {
        "aligned": (slice(512, 1536), slice(512, 1536), slice(0, 64)),
        "unaligned": (slice(500, 1524), slice(530, 1554), slice(0, 64)),
    }
    want = {k: vol.transpose(2, 1, 0)[b] for k, b in boxes.items()}
    rows = []
    for name, b in boxes.items():
        cv_http = CloudVolume(remote, progress=False, cache=False)
        cv_file = CloudVolume(local, progress=False, cache=False)
        assert np.array_equal(cv_http[b][..., 0], want[name]) and np.array_equal(cv_file[b][..., 0], want[name])
        h = median_secs(lambda: cv_http[b])
        f = median_secs(lambda: cv_file[b])
        rows.append((f"CloudVolume {name} 1024x1024x64", h, f, 1.0))
        ts_http = ts.open({"driver": "neuroglancer_precomputed",
                           "kvstore": {"driver": "http", "base_url": f"{base}/precomputed/b/em/"}}).result()
        ts_file = ts.open({"driver": "neuroglancer_precomputed",
                           "kvstore": {"driver": "file", "path": f"{work}/local/"}}).result()
        tb = (b[0], b[1], b[2], 0)
        assert np.array_equal(ts_http[tb].read().result(), want[name])
        h = median_secs(lambda: ts_http[tb].read().result())
        f = median_secs(lambda: ts_file[tb].read().result())
        rows.append((f"TensorStore {name} 1024x1024x64", h, f, 0.8))
    mb = 1024 * 1024 * 64 / 1e6
    print(f"{'read':<38} {'neurocube HTTP':>16} {'local files':>14} {'ratio':>7} {'goal':>6}")
    for name, h, f, goal in rows:
        print(f"{name:<38} {mb / h:>10.0f} MB/s {mb / f:>8.0f} MB/s {f / h:>7.2f} {goal:>6.1f}")
