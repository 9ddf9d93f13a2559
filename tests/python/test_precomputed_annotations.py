"""A synapse table as Neuroglancer precomputed annotations, read back with
Neuroglancer's own reader (`neuroglancer.read_precomputed_annotations`)
over HTTP: every synapse as a line from pre to post with its size, one by
id, and the synapses of a segment through the root-id relationships, all
equal to what was uploaded."""
import io
import time

import numpy as np
import pyarrow.ipc as ipc
import pytest
import requests
from neuroglancer.read_precomputed_annotations import AnnotationReader

from test_annotations import make_table


@pytest.fixture(scope="module")
def table(server):
    ds, df = make_table(server, rows=1500, seed=21)
    r = requests.post(f"{server}/v1/datasets/{ds}/tables/syn/rows", data=df.to_csv(index=False),
                      headers={"Content-Type": "text/csv"})
    assert r.status_code in (200, 201, 202), r.text
    deadline = time.time() + 30
    while time.time() < deadline:
        if requests.get(f"{server}/v1/datasets/{ds}/tables/syn/count").json()["count"] == len(df):
            break
        time.sleep(0.1)
    rows = requests.post(f"{server}/v1/datasets/{ds}/tables/syn/query?format=arrow",
                         json={"split_positions": True}).content
    stored = ipc.open_stream(io.BytesIO(rows)).read_all().to_pandas()
    return ds, stored


def line_of(a):
    return tuple(np.asarray(a.point_a, np.float32)) + tuple(np.asarray(a.point_b, np.float32))


def test_every_synapse_is_a_line_with_its_size(server, table):
    ds, stored = table
    reader = AnnotationReader(f"{server}/precomputed/{ds}/annotations/syn/")
    assert reader.annotation_type == "line"
    assert [p.id for p in reader.properties] == ["size"]
    assert sorted(reader.relationships) == ["post_pt_root_id", "pre_pt_root_id"]
    got = list(reader.get_within_spatial_bounds())
    assert len(got) == len(stored)
    want = {int(r.id): r for r in stored.itertuples()}
    for a in got:
        r = want[int(a.id)]
        assert line_of(a) == (r.pre_pt_position_x, r.pre_pt_position_y, r.pre_pt_position_z,
                              r.post_pt_position_x, r.post_pt_position_y, r.post_pt_position_z)
        assert a.props[0] == pytest.approx(r.size)


def test_by_id_and_by_segment(server, table):
    ds, stored = table
    reader = AnnotationReader(f"{server}/precomputed/{ds}/annotations/syn/")
    r = stored.iloc[17]
    one = reader.by_id[int(r.id)]
    assert line_of(one)[:3] == (r.pre_pt_position_x, r.pre_pt_position_y, r.pre_pt_position_z)
    assert [list(s) for s in one.segments] == [[r.pre_pt_root_id], [r.post_pt_root_id]]
    root = int(stored.post_pt_root_id.value_counts().index[0])  # the busiest partner
    got = reader.relationships["post_pt_root_id"][root]
    assert sorted(int(a.id) for a in got) == sorted(stored.id[stored.post_pt_root_id == root].astype(int))
    assert reader.relationships["pre_pt_root_id"][12345] == []
    bad = requests.get(f"{server}/precomputed/{ds}/annotations/syn/by_id/999999999")
    assert bad.status_code == 404
    bad = requests.get(f"{server}/precomputed/{ds}/annotations/syn/rel_size/3")
    assert bad.status_code == 404 and "rel_pre_pt_root_id" in bad.json()["message"]


def test_a_large_table_has_a_multi_level_index_holding_each_synapse_once(server):
    ds, df = make_table(server, rows=30000, seed=5)
    r = requests.post(f"{server}/v1/datasets/{ds}/tables/syn/rows", data=df.to_csv(index=False),
                      headers={"Content-Type": "text/csv"})
    assert r.status_code in (200, 201, 202), r.text
    deadline = time.time() + 60
    while requests.get(f"{server}/v1/datasets/{ds}/tables/syn/count").json()["count"] < len(df):
        assert time.time() < deadline
        time.sleep(0.1)
    reader = AnnotationReader(f"{server}/precomputed/{ds}/annotations/syn/")
    levels = reader.metadata["spatial"]
    assert [s["grid_shape"] for s in levels] == [[1, 1, 1], [2, 2, 2]]
    coarse = reader.spatial[0][(0, 0, 0)]
    assert 8000 < len(coarse) < 12000, len(coarse)  # an even sample of about the limit
    ids = [int(a.id) for a in reader.get_within_spatial_bounds()]
    assert len(ids) == len(set(ids)) == len(df)
