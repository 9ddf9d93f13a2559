"""The BOSS API as intern's BossRemote uses it (PyPI `intern`): metadata,
get_cutout and create_cutout round trips against the real server, equal to
what neurocube's own cutout API holds."""
import io
import uuid

import numpy as np
import pytest
import requests
from intern.remote.boss import BossRemote
from intern.resource.boss.resource import ChannelResource, CollectionResource, ExperimentResource
from requests import HTTPError


@pytest.fixture(scope="module")
def boss(server):
    ds = "boss" + uuid.uuid4().hex[:6]
    r = requests.put(f"{server}/v1/datasets/{ds}", json={
        "voxel_size": [4, 4, 40], "extent": [700, 600, 40], "offset": [100, 0, 10], "levels": 2})
    assert r.status_code == 201, r.text
    for ch, kind, dtype in [("em", "image", "uint8"), ("seg", "segmentation", "uint64")]:
        r = requests.put(f"{server}/v1/datasets/{ds}/channels/{ch}", json={"type": kind, "dtype": dtype})
        assert r.status_code == 201, r.text
    host = server.removeprefix("http://")
    return ds, BossRemote({"protocol": "http", "host": host, "token": "anything"})


def npy(server, ds, ch, level, x, y, z):
    r = requests.get(f"{server}/{ds}/{ch}/npy/{level}/{x[0]},{x[1]}/{y[0]},{y[1]}/{z[0]},{z[1]}/")
    assert r.status_code == 200, r.text
    return np.load(io.BytesIO(r.content))


def test_metadata_reads_as_boss_resources(server, boss):
    ds, rmt = boss
    coll = rmt.get_project(CollectionResource(ds))
    assert coll.name == ds
    exp = rmt.get_project(ExperimentResource("default", ds))
    assert exp.coord_frame == ds and exp.num_hierarchy_levels == 2
    frame = rmt.get_coordinate_frame(ds)
    assert (frame.x_start, frame.x_stop, frame.z_start, frame.z_stop) == (100, 800, 10, 50)
    assert (frame.x_voxel_size, frame.z_voxel_size, frame.voxel_unit) == (4, 40, "nanometers")
    chan = rmt.get_channel("seg", ds, "default")
    assert (chan.datatype, chan.type) == ("uint64", "annotation")
    assert sorted(rmt.list_channels(ds, "default")) == ["em", "seg"]
    assert ds in rmt.list_collections()


def test_create_cutout_then_get_cutout_round_trip(server, boss):
    ds, rmt = boss
    rng = np.random.default_rng(5)
    em = rmt.get_channel("em", ds, "default")
    x, y, z = [123, 611], [7, 519], [13, 29]
    data = (rng.integers(0, 64, (16, 512, 488)) * 4).astype(np.uint8)
    rmt.create_cutout(em, 0, x, y, z, data)
    got = rmt.get_cutout(em, 0, x, y, z, parallel=False)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(npy(server, ds, "em", 0, x, y, z), data)
    # A box larger than intern's request size is fetched in blocks.
    whole = rmt.get_cutout(em, 0, [100, 800], [0, 600], [10, 50], parallel=False, chunk_size=(256, 256, 16))
    np.testing.assert_array_equal(whole[3:19, 7:519, 23:511], data)

    seg = rmt.get_channel("seg", ds, "default")
    labels = (np.arange(8 * 40 * 50, dtype=np.uint64).reshape(8, 40, 50) // 7) + (np.uint64(1) << np.uint64(50))
    rmt.create_cutout(seg, 0, [200, 250], [100, 140], [20, 28], labels)
    np.testing.assert_array_equal(rmt.get_cutout(seg, 0, [200, 250], [100, 140], [20, 28], parallel=False), labels)


def test_bad_boss_requests_raise_with_the_servers_message(server, boss):
    ds, rmt = boss
    with pytest.raises(HTTPError) as e:
        rmt.get_channel("em", ds, "exp1")
    assert "one experiment, 'default'" in str(e.value)
    em = rmt.get_channel("em", ds, "default")
    with pytest.raises(HTTPError) as e:
        rmt.get_cutout(em, 0, [0, 10], [0, 10], [10, 11], parallel=False)
    assert "outside" in str(e.value)
    r = requests.get(f"{server}/v1/cutout/{ds}/default/em/0/100-110/0:10/10:11/")
    assert r.status_code == 400 and "x0:x1" in r.json()["message"]
    r = requests.get(f"{server}/v1/cutout/{ds}/default/em/0/100:110/0:10/10:11/",
                     headers={"Accept": "application/blosc-python"})
    assert r.status_code == 400 and "application/blosc" in r.json()["message"]
    r = requests.get(f"{server}/v1/cutout/{ds}/default/em/0/100:110/0:10/10:11/",
                     headers={"Accept": "application/npygz"})
    assert r.status_code == 400 and "application/npygz is not served" in r.json()["message"]
