"""Issue 13's benchmarks, in one run.

1. Seed 000's proofread-subgraph cell through caveclient 8.x, end to end
   (client included), on a demo made with `neurocube demo --no-serve
   --data-dir DIR --synapses 10000000`: the table manager's
   proofreading_status_and_strategy(status_axon='t') query, then
   query_table(synapses, filter_in_dict={pre: ids, post: ids}). The seed
   reports 2 min 23 s against the public service.
2. `neurocube.Client.cutout` of a 1024x1024x64 box (aligned and unaligned)
   and of a 1 GiB box (4096x4096x64), through the chunk stream (decoded in
   the client by its compiled part, and by python-blosc) and as raw voxels, against TensorStore reading the same
   EM-like volume from local zarr files (Blosc lz4 + shuffle, the same
   128x128x16 chunks) in process, in the same run.

python3 benches/cave/bench.py --demo DIR [--bin target/release/neurocube] [--rounds 5]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests
import tensorstore as ts

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from emdata import em_like  # noqa: E402
from server import settle  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--bin", default="target/release/neurocube")
p.add_argument("--demo", help="data directory of a demo with --synapses (part 1)")
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--skip-cutouts", action="store_true")
p.add_argument("--workers", type=int, default=4, help="Client workers")
p.add_argument("--block-mib", type=int, default=None, help="Client.cutout block size (default: the client's)")
a = p.parse_args()


def start(data_dir):
    proc = subprocess.Popen(
        [a.bin, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "NEUROCUBE__LOG__LEVEL": "warn", "NEUROCUBE__JOBS__AUTO_DOWNSAMPLE": "false"},
    )
    url = re.search(r"(http://\S+)", proc.stdout.readline()).group(1)
    for _ in range(300):
        try:
            if requests.get(url + "/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    return proc, url


def timed(fn, rounds):
    out, times = None, []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def fmt(times):
    return f"median {statistics.median(times):.3f} s (runs {', '.join(f'{t:.3f}' for t in times)})"


if a.demo:
    from caveclient import CAVEclient

    proc, url = start(a.demo)
    try:
        client = CAVEclient("demo", server_address=url, auth_token="bench")
        client.version = max(client.materialize.get_versions())
        n = client.materialize.get_annotation_count("synapses")

        def cell():
            proof = client.materialize.tables.proofreading_status_and_strategy(status_axon="t").query(
                desired_resolution=[1, 1, 1], split_positions=True)
            syn = client.materialize.query_table(
                "synapses", desired_resolution=[1, 1, 1], split_positions=True,
                filter_in_dict={"pre_pt_root_id": proof["pt_root_id"], "post_pt_root_id": proof["pt_root_id"]})
            syn = syn[syn["pre_pt_root_id"] != syn["post_pt_root_id"]]
            return len(proof), len(syn)

        (neurons, synapses), first = timed(cell, 1)
        _, times = timed(cell, a.rounds)
        print(f"seed 000 proofread subgraph via caveclient, {n:,} synapses, version {client.version}: "
              f"{neurons} proofread neurons, {synapses:,} synapses")
        print(f"  first call {first[0]:.3f} s; then {fmt(times)}")
    finally:
        proc.terminate()
        proc.wait()

if not a.skip_cutouts:
    from neurocube import Client

    Z, Y, X = 64, 4096, 4096
    work = tempfile.mkdtemp(prefix="nc-cave-bench-")
    vol = em_like((Z, Y, X))
    proc, url = start(f"{work}/data")
    try:
        nc = Client(url, workers=a.workers)
        assert nc._transport is not None, "the client's compiled part is not installed"
        py = Client(url, workers=a.workers, native=False)
        extra = {"block_bytes": a.block_mib << 20} if a.block_mib else {}
        nc.create_dataset("b", [4, 4, 40], [X, Y, Z])
        nc.create_channel("b", "em", "uint8", chunk_size=[128, 128, 16])
        t = time.perf_counter()
        nc.upload("b", "em", 0, vol, progress=False)
        up = vol.nbytes / (time.perf_counter() - t) / 1e6
        store = ts.open({
            "driver": "zarr", "kvstore": {"driver": "file", "path": f"{work}/zarr"},
            "metadata": {"shape": [Z, Y, X], "chunks": [16, 128, 128], "dtype": "|u1",
                         "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}},
            "create": True, "delete_existing": True,
        }).result()
        store.write(vol).result()
        # Reads start once the server is idle: the store flushes and
        # compacts the upload in the background for a while.
        print(f"\nthe server settled in {settle(proc.pid):.0f} s after the upload")
        boxes = {
            "1024x1024x64 aligned": ((1024, 2048), (1024, 2048), (0, 64)),
            "1024x1024x64 unaligned": ((1000, 2024), (1100, 2124), (0, 64)),
            "4096x4096x64 (1 GiB)": ((0, X), (0, Y), (0, Z)),
        }
        print(f"\nClient.upload of the 1 GiB EM-like volume: {up:.0f} MB/s")
        print("| box | chunk stream, compiled MB/s | chunk stream, python-blosc MB/s | raw MB/s | TensorStore local MB/s | compiled / TensorStore | python-blosc / TensorStore | raw / TensorStore |")
        print("|---|---|---|---|---|---|---|---|")
        for name, ((x0, x1), (y0, y1), (z0, z1)) in boxes.items():
            nbytes = (x1 - x0) * (y1 - y0) * (z1 - z0)
            want = vol[z0:z1, y0:y1, x0:x1]
            box = ((x0, x1), (y0, y1), (z0, z1))
            # The readers take turns round by round, so load on the shared
            # machine falls on all of them alike; the first round warms up.
            readers = {
                "compiled": lambda: nc.cutout("b", "em", 0, box, progress=False, method="chunks", **extra),
                "python-blosc": lambda: py.cutout("b", "em", 0, box, progress=False, method="chunks", **extra),
                "raw": lambda: nc.cutout("b", "em", 0, box, progress=False, method="raw", **extra),
                "tensorstore": lambda: store[z0:z1, y0:y1, x0:x1].read().result(),
            }
            times = {k: [] for k in readers}
            for r in range(a.rounds + 1):
                for k, fn in readers.items():
                    got, t = timed(fn, 1)
                    assert np.array_equal(got, want), k
                    if r:
                        times[k] += t
            mbs = {k: nbytes / statistics.median(t) / 1e6 for k, t in times.items()}
            ts_mbs = mbs["tensorstore"]
            print(f"| {name} | {mbs['compiled']:.0f} | {mbs['python-blosc']:.0f} | {mbs['raw']:.0f} | {ts_mbs:.0f} "
                  f"| {mbs['compiled'] / ts_mbs:.2f} | {mbs['python-blosc'] / ts_mbs:.2f} | {mbs['raw'] / ts_mbs:.2f} |")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
