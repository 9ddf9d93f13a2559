"""The Python client against the real server: exact voxels through
parallel chunk-aligned cutouts and uploads, a resumed upload, tiles, tables
from DataFrames, CAVE-style queries, versions, graphs, and typed errors."""
import io
import json
import uuid

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import requests

from neurocube import BadRequest, Client, NotFound, Unprocessable
from neurocube.volume import blocks


def em_like(shape, seed=0):
    """Quantized gray levels with dark membranes and noise, like EM."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    cells = ((x // 23 + y // 17 + z // 5) % 7 * 30 + 40).astype(np.int16)
    membrane = ((x % 23 == 0) | (y % 17 == 0)) * -35
    noise = rng.integers(-6, 7, shape)
    return np.clip(cells + membrane + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def volume(server):
    nc = Client(server, workers=4)
    ds = "py" + uuid.uuid4().hex[:8]
    nc.create_dataset(ds, [4, 4, 40], [300, 260, 40])
    nc.create_channel(ds, "em", "uint8", chunk_size=[64, 64, 8])
    return nc, ds


def test_the_constructor_makes_no_request():
    # Seed 001's RecursionError came from a client that fetched while built.
    nc = Client("http://127.0.0.1:9", token="nct_" + "0" * 64)
    assert nc.url == "http://127.0.0.1:9" and "9" in repr(nc)


def test_blocks_cover_the_box_once_on_the_chunk_grid():
    box = ((10, 290), (5, 250), (3, 37))
    parts = blocks(box, (64, 64, 8), 1, target_bytes=64 * 64 * 8 * 4)
    seen = np.zeros((34, 245, 280), dtype=np.uint8)
    for (x0, x1), (y0, y1), (z0, z1) in parts:
        seen[z0 - 3:z1 - 3, y0 - 5:y1 - 5, x0 - 10:x1 - 10] += 1
        # Inner block edges fall on the chunk grid.
        for a, lo, c in ((x0, 10, 64), (y0, 5, 64), (z0, 3, 8)):
            assert a == lo or a % c == 0
    assert (seen == 1).all()
    # The box's 5x4x5 chunks are shared out evenly (z first, then y, then
    # x): none of the blocks is a thin sliver at an unaligned edge.
    def chunks(p, c=(64, 64, 8)):
        return int(np.prod([-(-hi // s) - lo // s for (lo, hi), s in zip(p, c)]))
    counts = [chunks(p) for p in parts]
    assert sum(counts) == 5 * 4 * 5 and len(parts) == 40
    assert sorted(set(counts)) == [2, 3], counts
    # An unaligned 9x9x4-chunk box in blocks of about 27 chunks: 12 of them,
    # 27 chunks each (cut in z, then y), whole rows of the box.
    parts = blocks(((1000, 2024), (1100, 2124), (0, 64)), (128, 128, 16), 1, 27 << 18)
    assert len(parts) == 12 and {chunks(p, (128, 128, 16)) for p in parts} == {27}
    assert all(p[0] == (1000, 2024) for p in parts)


def test_upload_and_cutout_round_trip_exactly_in_parallel_blocks(volume):
    nc, ds = volume
    arr = em_like((33, 200, 250), seed=1)  # (z, y, x)
    written = nc.upload(ds, "em", 0, arr, offset=(17, 30, 4), block_bytes=64 * 64 * 8 * 2, progress=False)
    assert written == arr.nbytes
    for method in ("chunks", "raw"):
        got = nc.cutout(ds, "em", 0, ((17, 267), (30, 230), (4, 37)), block_bytes=64 * 64 * 8 * 2,
                        method=method)
        assert got.dtype == np.uint8 and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
    # Around it: never-written chunks read as zeros through the chunk stream.
    whole = nc.cutout(ds, "em", 0, ((0, 300), (0, 260), (0, 40)), method="chunks")
    np.testing.assert_array_equal(whole, nc.cutout(ds, "em", 0, ((0, 300), (0, 260), (0, 40)), method="raw"))
    assert whole[0].max() == 0 and whole[4:37, 30:230, 17:267].min() == arr.min()
    # An unaligned box inside, against the server's own npy answer.
    inner = nc.cutout(ds, "em", 0, ((20, 201), (31, 99), (5, 30)), block_bytes=4096)
    raw = requests.get(f"{nc.url}/{ds}/em/npy/0/20,201/31,99/5,30/")
    np.testing.assert_array_equal(inner, np.load(io.BytesIO(raw.content)))
    np.testing.assert_array_equal(inner, arr[1:26, 1:69, 3:184])


def test_the_compiled_and_the_python_decoder_give_the_same_voxels(server):
    # The installed package has its compiled part; Client(native=False)
    # decodes the same chunk streams with python-blosc.
    native, python = Client(server, workers=3), Client(server, workers=3, native=False)
    assert native._transport is not None and python._transport is None
    ds = "nv" + uuid.uuid4().hex[:8]
    native.create_dataset(ds, [4, 4, 40], [200, 150, 30])
    for dtype in ("uint16", "uint64"):
        native.create_channel(ds, dtype, dtype, kind="segmentation", chunk_size=[32, 32, 8])
        rng = np.random.default_rng(7)
        arr = rng.integers(0, np.iinfo(dtype).max, (19, 90, 130), dtype=dtype)
        native.upload(ds, dtype, 0, arr, offset=(40, 20, 5), progress=False)
        # Unaligned, across the written part's edges (never-written chunks are zeros).
        box = ((13, 187), (9, 131), (1, 29))
        want = np.zeros((28, 122, 174), dtype)
        want[4:23, 11:101, 27:157] = arr
        for nc in (native, python):
            got = nc.cutout(ds, dtype, 0, box, method="chunks", block_bytes=32 * 32 * 8 * 8 * 2)
            assert got.dtype == np.dtype(dtype) and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    # The server's refusal comes back typed, with its message, on both paths.
    for nc in (native, python):
        with pytest.raises(BadRequest) as e:
            nc.cutout(ds, "uint16", 0, ((0, 8), (0, 8), (0, 31)), method="chunks")
        assert e.value.status == 400, e.value.message
        assert "outside" in e.value.message or "extent" in e.value.message, e.value.message
        assert "/uint16/chunks/0/0,8/0,8/" in e.value.url and e.value.url.endswith(",31/")
    native.close()
    python.close()


def test_the_compiled_transport_sends_the_token(tmp_path):
    import re
    import subprocess

    from conftest import binary, serving

    from neurocube import Unauthorized

    made = subprocess.run([binary(), "token", "create", "--user", "boss", "--admin",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, check=True)
    token = re.search(r"nct_[0-9a-f]{64}", made.stdout + made.stderr).group(0)
    with serving(tmp_path, {"NEUROCUBE__AUTH__MODE": "tokens"}) as url:
        nc = Client(url, token=token)
        assert nc._transport is not None
        nc.create_dataset("tk", [4, 4, 40], [64, 64, 8])
        nc.create_channel("tk", "em", "uint8", chunk_size=[32, 32, 8])
        arr = em_like((8, 64, 64), seed=9)
        nc.upload("tk", "em", 0, arr, progress=False)
        np.testing.assert_array_equal(nc.cutout("tk", "em", 0, ((0, 64), (0, 64), (0, 8)), method="chunks"), arr)
        # The same stream with a token the server does not know, and with
        # none (the dataset is not public: anonymous callers do not see it).
        for bad, error in (("nct_" + "0" * 64, Unauthorized), (None, NotFound)):
            other = Client(url, token=bad)
            with pytest.raises(error) as e:
                other._chunks_into("/tk/em/chunks/0/0,64/0,64/0,8/", np.zeros((8, 64, 64), np.uint8),
                                   (0, 0, 0), ((0, 64), (0, 64), (0, 8)), (32, 32, 8))
            assert e.value.message, e.value
        nc.close()


def test_a_kept_connection_closed_by_the_server_is_replaced_once():
    # A server that closes its first connection when the second request
    # comes on it (as a server's idle timeout does, racing the client):
    # the GET is sent again on a new connection; a POST is not.
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    connections = []

    def serve():
        for plan in ([ok, None], [ok], [ok, None], [ok]):
            conn, _ = listener.accept()
            connections.append(conn)
            for answer in plan:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                if answer is None:
                    conn.close()
                    break
                conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    url = "http://127.0.0.1:%d" % listener.getsockname()[1]
    nc = Client(url, retries=0)
    assert nc.get_json("/a") == {} and nc.get_json("/b") == {}
    assert len(connections) == 2, "the second GET went again on a new connection"
    # The same for a POST: it is not sent twice.
    nc._local = threading.local()
    assert nc.request("POST", "/c", json_body={}).json() == {}
    with pytest.raises(requests.ConnectionError):
        nc.request("POST", "/d", json_body={})
    assert nc.get_json("/e") == {}
    t.join(5)
    listener.close()


def test_the_workers_and_their_connections_last_until_close(volume):
    import threading

    nc, ds = volume
    arr = em_like((16, 128, 128), seed=2)
    nc.upload(ds, "em", 0, arr, progress=False)

    def workers():
        return {t.ident for t in threading.enumerate() if t.name.startswith("neurocube")}

    box = ((0, 128), (0, 128), (0, 16))
    np.testing.assert_array_equal(nc.cutout(ds, "em", 0, box, block_bytes=4096), arr)
    first = workers()
    assert 1 <= len(first) <= 4
    np.testing.assert_array_equal(nc.cutout(ds, "em", 0, box, block_bytes=4096, method="raw"), arr)
    assert workers() == first, "the second cutout ran on the same worker threads"
    nc.close()
    assert not workers() & first
    # A closed client starts new workers when it is used again.
    with nc:
        np.testing.assert_array_equal(nc.cutout(ds, "em", 0, box, block_bytes=4096), arr)
    assert not workers()


def test_an_interrupted_upload_resumes_from_its_journal(volume, tmp_path):
    nc, ds = volume
    first = em_like((16, 128, 128), seed=2)
    second = 255 - first
    journal = str(tmp_path / "upload.journal")
    chunk_bytes = 64 * 64 * 8
    nc.upload(ds, "em", 0, first, block_bytes=chunk_bytes, progress=False)
    parts = blocks(((0, 128), (0, 128), (0, 16)), (64, 64, 8), 1, chunk_bytes)
    assert len(parts) == 8
    # As if an upload of `second` had been killed after its first 5 blocks
    # were acknowledged: only the other 3 are sent again.
    with open(journal, "w") as f:
        for p in parts[:5]:
            f.write(json.dumps(p) + "\n")
    written = nc.upload(ds, "em", 0, second, journal=journal, block_bytes=chunk_bytes, progress=False)
    assert written == 3 * chunk_bytes
    got = nc.cutout(ds, "em", 0, ((0, 128), (0, 128), (0, 16)))
    for i, ((x0, x1), (y0, y1), (z0, z1)) in enumerate(parts):
        want = first if i < 5 else second
        np.testing.assert_array_equal(got[z0:z1, y0:y1, x0:x1], want[z0:z1, y0:y1, x0:x1])
    import os
    assert not os.path.exists(journal), "a finished upload removes its journal"


def test_tiles_decode_to_the_voxels(volume):
    nc, ds = volume
    arr = em_like((8, 260, 300), seed=3)
    nc.upload(ds, "em", 0, arr, progress=False)
    tile = nc.tile(ds, "em", 0, 5, 0, 0, size=256)
    assert tile.shape[:2] == (256, 256)
    np.testing.assert_array_equal(tile[:, :] if tile.ndim == 2 else tile[..., 0], arr[5, :256, :256])


def test_errors_are_typed_and_carry_the_message(volume):
    nc, ds = volume
    with pytest.raises(NotFound) as e:
        nc.cutout("nosuchdataset", "em", 0, ((0, 8), (0, 8), (0, 1)))
    assert e.value.status == 404 and e.value.error == "unknown_dataset"
    assert "nosuchdataset" in e.value.message
    with pytest.raises(BadRequest) as e:
        nc.cutout(ds, "em", 0, ((0, 8), (0, 8), (0, 400)))
    assert "outside" in e.value.message or "extent" in e.value.message, e.value.message
    with pytest.raises(ValueError, match="inverted"):
        nc.cutout(ds, "em", 0, ((8, 0), (0, 8), (0, 1)))
    with pytest.raises(ValueError, match="holds uint8"):
        nc.upload(ds, "em", 0, np.zeros((1, 8, 8), np.uint16))


@pytest.fixture(scope="module")
def annotated(server):
    """A segmentation of 32-voxel blocks, a synapse table on it, uploaded
    from a DataFrame, and version 1."""
    nc = Client(server)
    ds = "tb" + uuid.uuid4().hex[:8]
    nc.create_dataset(ds, [4, 4, 40], [256, 256, 16])
    nc.create_channel(ds, "seg", "uint32", kind="segmentation", chunk_size=[64, 64, 8])
    z, y, x = np.indices((16, 256, 256))
    seg = (1 + x // 32 + 8 * (y // 32) + 64 * (z // 8)).astype(np.uint32)
    nc.upload(ds, "seg", 0, seg, progress=False)
    nc.create_table(ds, "syn", "synapse", [4, 4, 40], segmentation="seg")
    rng = np.random.default_rng(5)
    n = 3000
    # Heavy-tailed: a few segments make most synapses.
    pre = np.minimum(rng.zipf(1.5, n), 60) - 1
    post = rng.integers(0, 64, n)
    df = pd.DataFrame({
        "pre_pt_position": [[int(p % 8) * 32 + 3, int(p // 8) * 32 + 4, 2] for p in pre],
        "post_pt_position": [[int(q % 8) * 32 + 9, int(q // 8) * 32 + 11, 5] for q in post],
        "size": rng.integers(10, 900, n).astype(float),
    })
    ids = nc.upload_table(ds, "syn", df, batch_rows=700, progress=False)
    df["id"] = ids
    df["pre_pt_root_id"] = pre + 1
    df["post_pt_root_id"] = post + 1
    nc.create_version(ds, progress=False)
    return nc, ds, df


def test_tables_from_a_dataframe_and_cave_style_queries(annotated):
    nc, ds, df = annotated
    assert len(df.id) == 3000 and df.id.is_unique
    assert nc.count(ds, "syn") == 3000
    assert [v["version"] for v in nc.versions(ds)] == [1]
    hubs = df.pre_pt_root_id.value_counts().index[:3].tolist()
    got = nc.query_table(ds, "syn", filter_in_dict={"pre_pt_root_id": pd.Series(hubs)},
                         filter_greater_dict={"size": 300}, desired_resolution=[1, 1, 1],
                         split_positions=True)
    want = df[df.pre_pt_root_id.isin(hubs) & (df["size"] > 300)]
    assert sorted(got.id) == sorted(want.id)
    assert got.attrs["dataframe_resolution"] == [1.0, 1.0, 1.0] and got.attrs["version"] == "1"
    row = got.set_index("id").loc[want.id.iloc[0]]
    p = want.pre_pt_position.iloc[0]
    assert (row.pre_pt_position_x, row.pre_pt_position_z) == (p[0] * 4.0, p[2] * 40.0)
    syn = nc.synapse_query(ds, pre_ids=hubs[0], post_ids=list(range(1, 33)))
    want = df[(df.pre_pt_root_id == hubs[0]) & (df.post_pt_root_id <= 32)]
    assert sorted(syn.id) == sorted(want.id)
    assert nc.query_table(ds, "syn", limit=7, select_columns=["id"]).shape == (7, 1)
    with pytest.raises(Unprocessable) as e:
        nc.upload_table(ds, "syn", pd.DataFrame({"pre_pt_position": [[1, 2, 3], [1, 2, 99999]],
                                                 "post_pt_position": [[1, 2, 3], [1, 2, 3]]}))
    assert e.value.body.get("row") == 1 and "pre_pt_position" in e.value.message
    assert nc.count(ds, "syn") == 3000, "nothing of a refused batch is written"

    # The dataset names its synapse table for CAVE clients and the defaults.
    d = nc.update_dataset(ds, synapse_table="syn", description="3,000 synapses")
    assert (d["synapse_table"], d["description"]) == ("syn", "3,000 synapses")
    assert nc.dataset(ds)["synapse_table"] == "syn"
    with pytest.raises(BadRequest) as e:
        nc.update_dataset(ds, soma_table="syn")
    assert e.value.error == "invalid_field" and "synapse schema" in e.value.message
    assert "synapse_table" not in nc.update_dataset(ds, synapse_table=None)
    with pytest.raises(ValueError, match="not \\['extent'\\]"):
        nc.update_dataset(ds, extent=[1, 1, 1])


def test_graphs_as_dataframes_and_networkx(annotated):
    nc, ds, df = annotated
    edges = nc.graph(ds, min_synapses=2)
    want = (df[df.pre_pt_root_id != df.post_pt_root_id]
            .groupby(["pre_pt_root_id", "post_pt_root_id"])
            .agg(syn_count=("id", "size"), size_sum=("size", "sum")).reset_index())
    want = want[want.syn_count >= 2]
    got = edges.sort_values(["pre_pt_root_id", "post_pt_root_id"]).reset_index(drop=True)
    want = want.sort_values(["pre_pt_root_id", "post_pt_root_id"]).reset_index(drop=True)
    assert got.pre_pt_root_id.tolist() == want.pre_pt_root_id.tolist()
    assert got.syn_count.tolist() == want.syn_count.tolist()
    np.testing.assert_allclose(got.size_sum.to_numpy(), want.size_sum.to_numpy())
    g = nc.graph(ds, as_="networkx", ids=[1, 2, 3, 4])
    assert isinstance(g, nx.DiGraph)
    sub = df[df.pre_pt_root_id.isin([1, 2, 3, 4]) & df.post_pt_root_id.isin([1, 2, 3, 4])
             & (df.pre_pt_root_id != df.post_pt_root_id)]
    assert set(g.edges()) == set(zip(sub.pre_pt_root_id, sub.post_pt_root_id))
    stats = nc.graph_stats(ds)
    assert stats["edges"] == len(df[df.pre_pt_root_id != df.post_pt_root_id]
                                 .groupby(["pre_pt_root_id", "post_pt_root_id"]))


def test_objects_round_trip_with_voxels_masks_conflicts_and_ids(server):
    from neurocube import Conflict

    nc = Client(server)
    ds = "ob" + uuid.uuid4().hex[:8]
    nc.create_dataset(ds, [4, 4, 40], [256, 256, 32])
    nc.create_channel(ds, "anno", "uint64", kind="segmentation", chunk_size=[64, 64, 16])
    nc.create_table(ds, "syn", "ramon_synapse", [4, 4, 40], segmentation="anno")
    # Two synapses: a 4x4x2 block as an array, three voxels as a list.
    block = np.array([(x, y, z) for z in (3, 4) for y in range(10, 14) for x in range(20, 24)])
    ids = nc.create_objects(ds, "syn", [
        {"author": "detector", "confidence": 0.9, "weight": 2.5, "voxels": block},
        {"author": "alice", "voxels": [(100, 100, 5), (101, 100, 5), (100, 101, 5)]},
    ], batch=1)
    assert len(ids) == 2 and ids[0] != ids[1]
    row = nc.object(ds, "syn", ids[0])
    assert row["author"] == "detector" and row["voxel_count"] == 32
    got = nc.object_voxels(ds, "syn", ids[0])
    # z, y, x order.
    order = np.lexsort((block[:, 0], block[:, 1], block[:, 2]))
    assert np.array_equal(got, block[order])
    bb = nc.object_bounding_box(ds, "syn", ids[1])
    assert bb["bbcorner"] == [100, 100, 5] and bb["bbdim"] == [2, 2, 1]
    # The cutout masked to the object: its id where it is, 0 elsewhere.
    cut = nc.object_cutout(ds, "syn", ids[1])
    assert cut.shape == (1, 2, 2) and cut.dtype == np.uint64
    assert cut.tolist() == [[[ids[1], ids[1]], [ids[1], 0]]]
    assert nc.ids(ds, "anno", 0, ((0, 256), (0, 256), (0, 32))).tolist() == sorted(ids)
    # A mask over the first object's voxel (20, 10, 3) and a free one:
    # preserve keeps the other object's voxel, exception refuses all.
    mask = np.zeros((1, 1, 2), dtype=np.uint64)
    mask[...] = ids[1]
    r = nc.put_object_voxels(ds, "syn", ids[1], mask=mask, offset=(19, 10, 3), conflict="preserve")
    assert r["voxels_preserved"] == 1
    with pytest.raises(Conflict) as e:
        nc.put_object_voxels(ds, "syn", ids[1], [(21, 10, 3)], conflict="exception")
    assert e.value.status == 409 and e.value.error == "label_conflict"
    assert nc.object(ds, "syn", ids[1])["voxel_count"] == 4
    # A bad voxel list is refused before anything is sent.
    with pytest.raises(ValueError):
        nc.create_objects(ds, "syn", [{"voxels": [[1.5, 2, 3]]}])
    # Deleting clears the voxels.
    assert nc.delete_object(ds, "syn", ids[0]) == 32
    assert nc.ids(ds, "anno", 0, ((0, 256), (0, 256), (0, 32))).tolist() == [ids[1]]
