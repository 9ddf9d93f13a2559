"""Neuroglancer precomputed, read by the real clients: CloudVolume and
TensorStore over HTTP get exactly the voxels the cutout API returns, at
every level, for aligned and unaligned boxes, images and segmentation."""
import gzip
import io
import time
import uuid

import compressed_segmentation as cseg
import numpy as np
import pytest
import requests
import tensorstore as ts
from cloudvolume import CloudVolume

EXTENT = (300, 200, 40)
OFFSET = (10, 20, 5)
CHUNK = (64, 64, 8)


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def em_like(shape, seed):
    """Quantized gray levels, dark membranes and noise (z, y, x)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    cells = ((x // 23 + y // 17 + z // 5) % 7) * 24 + 60
    membrane = ((x % 23) < 2) | ((y % 17) < 2)
    v = np.where(membrane, 20, cells) + rng.integers(0, 30, shape)
    return (v // 4 * 4).clip(0, 255).astype(np.uint8)


def labels(shape, dtype):
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    base = (x // 37) + 11 * (y // 29) + 101 * (z // 9) + 1
    big = np.uint64(1) << np.uint64(40) if dtype == np.uint64 else 0
    v = base.astype(np.uint64) * np.uint64(7919) + np.uint64(big)
    v[(x % 37) < 1] = 0  # background seams
    return v.astype(dtype)


def wait_job(server, job):
    deadline = time.time() + 120
    while time.time() < deadline:
        j = requests.get(f"{server}/v1/jobs/{job}").json()
        if j["state"] == "done":
            return
        assert j["state"] not in ("failed", "cancelled"), j
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish")


@pytest.fixture(scope="module")
def volume(server):
    ds = "pc" + uuid.uuid4().hex[:8]
    r = requests.put(f"{server}/v1/datasets/{ds}", json={
        "voxel_size": [4, 4, 40], "extent": list(EXTENT), "offset": list(OFFSET), "levels": 3})
    assert r.status_code == 201, r.text
    shape = (EXTENT[2], EXTENT[1], EXTENT[0])
    data = {"em": em_like(shape, 3), "seg": labels(shape, np.uint64), "seg32": labels(shape, np.uint32)}
    for ch, arr in data.items():
        kind = "image" if ch == "em" else "segmentation"
        r = requests.put(f"{server}/v1/datasets/{ds}/channels/{ch}", json={
            "type": kind, "dtype": str(arr.dtype), "chunk_size": list(CHUNK)})
        assert r.status_code == 201, r.text
        box = "/".join(f"{o},{o + n}" for o, n in zip(OFFSET, EXTENT))
        r = requests.put(f"{server}/{ds}/{ch}/npy/0/{box}/", data=npy_bytes(arr))
        assert r.status_code == 201, r.text
        r = requests.post(f"{server}/v1/datasets/{ds}/channels/{ch}/downsample")
        assert r.status_code == 202, r.text
        wait_job(server, r.json()["id"])
    return ds


def cutout(server, ds, ch, level, lo, hi):
    box = "/".join(f"{a},{b}" for a, b in zip(lo, hi))
    r = requests.get(f"{server}/{ds}/{ch}/npy/{level}/{box}/")
    assert r.status_code == 200, r.text
    return np.load(io.BytesIO(r.content)).transpose(2, 1, 0)  # (x, y, z)


def level_bounds(server, ds, level):
    info = requests.get(f"{server}/v1/datasets/{ds}").json()["level_info"][level]
    lo = info["offset"]
    return lo, [a + b for a, b in zip(lo, info["extent"])]


def boxes(lo, hi):
    """The whole level, a box on the chunk grid, and an unaligned one."""
    yield lo, hi
    yield [lo[0], lo[1], lo[2]], [min(lo[0] + 64, hi[0]), min(lo[1] + 64, hi[1]), min(lo[2] + 8, hi[2])]
    mid = [min(lo[i] + 13, hi[i] - 1) for i in range(3)]
    yield mid, [min(mid[0] + 77, hi[0]), min(mid[1] + 50, hi[1]), min(mid[2] + 11, hi[2])]


@pytest.mark.parametrize("ch", ["em", "seg", "seg32"])
def test_cloudvolume_reads_exactly_what_the_cutout_api_holds(server, volume, ch):
    for mip in range(3):
        cv = CloudVolume(f"precomputed://{server}/precomputed/{volume}/{ch}", mip=mip,
                         progress=False, cache=False, fill_missing=False)
        lo, hi = level_bounds(server, volume, mip)
        assert list(cv.bounds.minpt) == lo and list(cv.bounds.maxpt) == hi
        for a, b in boxes(lo, hi):
            got = cv[a[0]:b[0], a[1]:b[1], a[2]:b[2]][..., 0]
            want = cutout(server, volume, ch, mip, a, b)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want, err_msg=f"{ch} mip {mip} {a}-{b}")


@pytest.mark.parametrize("ch", ["em", "seg"])
def test_tensorstore_reads_exactly_what_the_cutout_api_holds(server, volume, ch):
    for mip in range(3):
        store = ts.open({
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "http", "base_url": f"{server}/precomputed/{volume}/{ch}/"},
            "scale_index": mip,
        }, read=True).result()
        lo, hi = level_bounds(server, volume, mip)
        assert list(store.domain.inclusive_min[:3]) == lo
        assert list(store.domain.exclusive_max[:3]) == hi
        for a, b in boxes(lo, hi):
            got = store[a[0]:b[0], a[1]:b[1], a[2]:b[2], 0].read().result()
            np.testing.assert_array_equal(got, cutout(server, volume, ch, mip, a, b))


def test_segmentation_chunks_decode_with_the_reference_codec(server, volume):
    info = requests.get(f"{server}/precomputed/{volume}/seg/info").json()
    s = info["scales"][0]
    assert info["type"] == "segmentation" and info["data_type"] == "uint64"
    assert s["encoding"] == "compressed_segmentation" and s["compressed_segmentation_block_size"] == [8, 8, 8]
    assert s["key"] == "4_4_40" and s["voxel_offset"] == list(OFFSET) and s["size"] == list(EXTENT)
    # The last chunk along x is cut at the level's bound.
    x0 = OFFSET[0] + 64 * 4
    name = f"{x0}-{OFFSET[0] + EXTENT[0]}_{OFFSET[1]}-{OFFSET[1] + 64}_{OFFSET[2]}-{OFFSET[2] + 8}"
    r = requests.get(f"{server}/precomputed/{volume}/seg/4_4_40/{name}", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    size = (OFFSET[0] + EXTENT[0] - x0, 64, 8)
    got = cseg.decompress(r.content, size, np.uint64, (8, 8, 8), order="F")
    want = cutout(server, volume, "seg", 0, [x0, OFFSET[1], OFFSET[2]], [OFFSET[0] + EXTENT[0], OFFSET[1] + 64, OFFSET[2] + 8])
    np.testing.assert_array_equal(np.asarray(got).reshape(size, order="F"), want)
    assert len(r.content) < want.nbytes / 20, f"{len(r.content)} bytes for {want.nbytes}"
    # The ETag revalidates.
    r2 = requests.get(f"{server}/precomputed/{volume}/seg/4_4_40/{name}", headers={"If-None-Match": r.headers["ETag"]})
    assert r2.status_code == 304


def test_jpeg_scales_for_images(server, volume):
    cv = CloudVolume(f"precomputed://{server}/precomputed/{volume}/em/jpeg", mip=0, progress=False, cache=False)
    assert cv.info["scales"][0]["encoding"] == "jpeg"
    lo, hi = level_bounds(server, volume, 0)
    got = cv[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][..., 0].astype(np.int16)
    want = cutout(server, volume, "em", 0, lo, hi).astype(np.int16)
    assert np.abs(got - want).mean() < 6, np.abs(got - want).mean()


def test_bad_precomputed_requests_get_a_4xx_with_a_message(server, volume):
    base = f"{server}/precomputed/{volume}"
    for path, status, words in [
        ("seg/4_4_40/0-64_0-64", 400, "x0-x1_y0-y1_z0-z1"),
        ("seg/4_4_40/11-75_20-84_5-13", 400, "not a cell"),
        ("seg/4_4_40/10-74_20-84_5-12", 400, "not a cell"),
        ("seg/5_5_40/10-74_20-84_5-13", 404, "4_4_40, 8_8_40, 16_16_40"),
        ("seg/jpeg/info", 400, "jpeg is for uint8 image"),
        ("nope/info", 404, "channel 'nope'"),
    ]:
        r = requests.get(f"{base}/{path}")
        assert r.status_code == status, (path, r.text)
        assert words in r.json()["message"], (path, r.json())
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    r = requests.options(f"{base}/em/info", headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    info = requests.get(f"{base}/em/info", headers={"Accept-Encoding": "gzip"}, stream=True)
    assert info.headers["Content-Encoding"] == "gzip"
    assert b"neuroglancer_multiscale_volume" in gzip.decompress(info.raw.read())
