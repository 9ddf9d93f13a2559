"""The peer users would pick instead of a server: TensorStore reading and
writing the same volume as zarr v2 with Blosc lz4 + shuffle in 128x128x16
chunks on local disk, in process. Prints one JSON object.

python3 benches/peer/tensorstore_peer.py VOLUME.u8 --dir ZARR_DIR [--rounds 5]
(VOLUME.u8: 16 blocks of 1024x1024x64 uint8 in C order, as written by the e2e bench)
"""
import argparse
import importlib.metadata
import json
import shutil
import statistics
import time

import numpy as np
import tensorstore as ts

p = argparse.ArgumentParser()
p.add_argument("volume")
p.add_argument("--dir", required=True)
p.add_argument("--rounds", type=int, default=5)
a = p.parse_args()

EXTENT = (64, 4096, 4096)  # z, y, x
CUT = (64, 1024, 1024)
raw = np.memmap(a.volume, dtype=np.uint8, mode="r")
blocks = []
for i, (y, x) in enumerate((y, x) for y in range(0, 4096, 1024) for x in range(0, 4096, 1024)):
    blocks.append(((y, x), np.asarray(raw[i * 64 * 1024 * 1024:(i + 1) * 64 * 1024 * 1024]).reshape(CUT)))

shutil.rmtree(a.dir, ignore_errors=True)
store = ts.open({
    "driver": "zarr",
    "kvstore": {"driver": "file", "path": a.dir},
    "metadata": {
        "shape": list(EXTENT), "chunks": [16, 128, 128], "dtype": "|u1",
        "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
    },
    "create": True, "delete_existing": True,
}).result()

total = 64 * 4096 * 4096
writes = []
for _ in range(min(a.rounds, 3)):
    t = time.perf_counter()
    for (y, x), arr in blocks:
        store[:, y:y + 1024, x:x + 1024].write(arr).result()
    writes.append(total / (time.perf_counter() - t) / 1e9)

reads = []
for r in range(a.rounds + 1):
    t = time.perf_counter()
    for (y, x), arr in blocks:
        got = store[:, y:y + 1024, x:x + 1024].read().result()
    if r > 0:  # the first round warms the page cache
        reads.append(total / (time.perf_counter() - t) / 1e9)
assert np.array_equal(got, blocks[-1][1])
print(json.dumps({"tensorstore": importlib.metadata.version("tensorstore"), "write_gbs": statistics.median(writes), "read_gbs": statistics.median(reads),
                  "write_runs": writes, "read_runs": reads}))
