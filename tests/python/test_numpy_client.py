"""What a Python user does: numpy arrays in and out, Blosc decoded by the
`blosc` package exactly as `blosc.decompress` users expect."""
import io
import uuid

import blosc
import numpy as np
import requests


def make(server, dtype="uint16", extent=(300, 200, 40)):
    ds = "py" + uuid.uuid4().hex[:8]
    r = requests.put(f"{server}/v1/datasets/{ds}", json={"voxel_size": [4, 4, 40], "extent": list(extent)})
    assert r.status_code == 201, r.text
    r = requests.put(f"{server}/v1/datasets/{ds}/channels/c", json={"type": "image", "dtype": dtype, "chunk_size": [64, 64, 8]})
    assert r.status_code == 201, r.text
    return ds


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_npy_put_blosc_get(server):
    ds = make(server)
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65535, size=(33, 70, 100), dtype=np.uint16)  # (z, y, x)
    url = f"{server}/{ds}/c/{{}}/0/10,110/20,90/3,36/"
    r = requests.put(url.format("npy"), data=npy_bytes(arr))
    assert r.status_code == 201, r.text

    r = requests.get(url.format("blosc"))
    assert r.status_code == 200
    assert r.headers["X-Neurocube-Dtype"] == "uint16"
    shape = tuple(int(v) for v in r.headers["X-Neurocube-Shape"].split(","))
    got = np.frombuffer(blosc.decompress(r.content), dtype=r.headers["X-Neurocube-Dtype"]).reshape(shape)
    np.testing.assert_array_equal(got, arr)

    got = np.load(io.BytesIO(requests.get(url.format("npy")).content))
    assert got.dtype == np.uint16 and got.shape == (33, 70, 100)
    np.testing.assert_array_equal(got, arr)


def test_large_blosc_get_is_one_frame(server):
    """Boxes over 8 MiB are compressed in 4 MiB parts joined into one c-blosc
    frame: `blosc.decompress` reads it whole, for every element size, on
    compressible and incompressible voxels, aligned or not."""
    rng = np.random.default_rng(5)
    for dtype, extent in [("uint8", (720, 600, 24)), ("uint16", (610, 500, 20)), ("uint64", (300, 280, 20))]:
        ds = make(server, dtype=dtype, extent=extent)
        X, Y, Z = extent
        arr = np.empty((Z, Y, X), dtype)
        arr[: Z // 2] = rng.integers(0, 200, size=(Z // 2, Y, X)).astype(dtype)  # noise
        arr[Z // 2 :] = (np.arange(Y * X).reshape(Y, X) // 37 % 50).astype(dtype)  # smooth
        whole = f"{server}/{ds}/c/{{}}/0/0,{X}/0,{Y}/0,{Z}/"
        assert requests.put(whole.format("npy"), data=npy_bytes(arr)).status_code == 201
        for (x0, x1, y0, y1, z0, z1) in [(0, X, 0, Y, 0, Z), (3, X - 5, 1, Y - 2, 1, Z)]:
            url = f"{server}/{ds}/c/blosc/0/{x0},{x1}/{y0},{y1}/{z0},{z1}/"
            r = requests.get(url)
            assert r.status_code == 200, r.text
            assert int(r.headers["Content-Length"]) == len(r.content)
            got = np.frombuffer(blosc.decompress(r.content), dtype).reshape(z1 - z0, y1 - y0, x1 - x0)
            np.testing.assert_array_equal(got, arr[z0:z1, y0:y1, x0:x1], f"{dtype} {url}")
            assert got.nbytes > 8 << 20
            if (x0, z0) == (0, 0):  # the smooth half compresses
                assert len(r.content) < 0.8 * got.nbytes


def test_blosc_put_from_python(server):
    ds = make(server, dtype="uint8")
    arr = (np.arange(40 * 50 * 60, dtype=np.uint32) * 2654435761 >> 24).astype(np.uint8).reshape(40, 50, 60)
    body = blosc.compress(arr.tobytes(), typesize=1, cname="lz4", shuffle=blosc.SHUFFLE)
    url = f"{server}/{ds}/c/{{}}/0/0,60/0,50/0,40/"
    assert requests.put(url.format("blosc"), data=body).status_code == 201
    raw = requests.get(url.format("raw"))
    np.testing.assert_array_equal(np.frombuffer(raw.content, np.uint8).reshape(40, 50, 60), arr)
    # Frames of every compressor Python's blosc offers decode too.
    assert {"blosclz", "lz4", "lz4hc", "zlib", "zstd"} <= set(blosc.compressor_list())
    for i, cname in enumerate(blosc.compressor_list()):
        want = arr[::-1] if i % 2 == 0 else arr
        body = blosc.compress(want.tobytes(), typesize=1, cname=cname)
        r = requests.put(url.format("blosc"), data=body)
        assert r.status_code == 201, (cname, r.text)
        np.testing.assert_array_equal(np.load(io.BytesIO(requests.get(url.format("npy")).content)), want, cname)


def test_errors_are_json(server):
    ds = make(server, dtype="uint8")
    r = requests.put(f"{server}/{ds}/c/npy/0/0,10/0,10/0,10/", data=npy_bytes(np.zeros((10, 10, 10), np.float32)))
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "invalid_request"
    assert "npy array is float32 but channel 'c' is uint8" in body["message"]
