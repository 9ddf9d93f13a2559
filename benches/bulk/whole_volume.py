"""Whole-volume downloads (issue 15): one 2048x2048x128 uint8 cutout (512
MiB) of an EM-like volume as npy, raw and Blosc, read by curl into
/dev/null (no client cost), medians of --rounds. Prints MB/s of voxels and
each format's ratio to npy in the same run.

python3 benches/bulk/whole_volume.py [--bin target/release/neurocube] [--rounds 5] [--noise]

--noise writes white noise instead (the incompressible extra row).
"""
import argparse
import io
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from server import neurocube  # noqa: E402
from emdata import em_like, white_noise  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--bin", default="target/release/neurocube")
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--noise", action="store_true")
a = p.parse_args()

X, Y, Z = 2048, 2048, 128
with neurocube(a.bin, "nc-bulk-bench-") as (base, work):
    assert requests.put(f"{base}/v1/datasets/bulk", json={"voxel_size": [4, 4, 40], "extent": [X, Y, Z]}).status_code == 201
    r = requests.put(f"{base}/v1/datasets/bulk/channels/em", json={"type": "image", "dtype": "uint8", "chunk_size": [128, 128, 16]})
    assert r.status_code == 201, r.text
    for z0 in range(0, Z, 64):
        vol = white_noise((64, Y, X), seed=z0) if a.noise else em_like((64, Y, X), seed=z0 + 1)
        for y0 in range(0, Y, 1024):
            for x0 in range(0, X, 1024):
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(vol[:, y0:y0 + 1024, x0:x0 + 1024]))
                url = f"{base}/bulk/em/npy/0/{x0},{x0 + 1024}/{y0},{y0 + 1024}/{z0},{z0 + 64}/"
                assert requests.put(url, data=buf.getvalue()).status_code == 201
    print(f"volume: {X}x{Y}x{Z} uint8, {'white noise' if a.noise else 'EM-like'}; load average {os.getloadavg()[0]:.2f}")

    def fetch(fmt):
        url = f"{base}/bulk/em/{fmt}/0/0,{X}/0,{Y}/0,{Z}/"
        t = time.perf_counter()
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", url], check=True, capture_output=True, text=True)
        return time.perf_counter() - t, int(out.stdout)

    fetch("npy")  # warm the store's caches as the rounds find them
    times = {f: [] for f in ("npy", "raw", "blosc")}
    sizes = {}
    for _ in range(a.rounds):
        for f in times:  # interleaved, so load changes hit every format alike
            secs, size = fetch(f)
            times[f].append(secs)
            sizes[f] = size
    npy = statistics.median(times["npy"])
    print("| format | body MiB | median s | MB/s of voxels | / npy |")
    print("|---|---|---|---|---|")
    for f, ts in times.items():
        m = statistics.median(ts)
        print(f"| {f} | {sizes[f] / 2**20:.0f} | {m:.3f} | {X * Y * Z / m / 1e6:.0f} | {npy / m:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
