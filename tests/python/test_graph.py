"""The connectivity graph read back by the tools analysts use: GraphML
with networkx, the npz adjacency matrix with scipy.sparse.load_npz, the
edge list with pandas; each checked against pandas' own groupby of the
synapses we uploaded (heavy-tailed partners, as in MICrONS)."""
import io
import time

import networkx as nx
import numpy as np
import pandas as pd
import requests
import scipy.sparse

from test_annotations import make_table


def uploaded(server):
    ds, df = make_table(server, rows=3000, seed=11)
    r = requests.post(f"{server}/v1/datasets/{ds}/tables/syn/rows", data=df.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    # pandas' answer: synapses and summed size per (pre, post), no autapses.
    want = (
        df[df.pre_pt_root_id != df.post_pt_root_id]
        .groupby(["pre_pt_root_id", "post_pt_root_id"])
        .agg(syn_count=("size", "size"), size_sum=("size", "sum"))
        .reset_index()
    )
    return ds, want


def materialize(server, ds):
    r = requests.post(f"{server}/v1/datasets/{ds}/versions", json={})
    assert r.status_code == 202, r.text
    v = r.json()["version"]
    for _ in range(300):
        if requests.get(f"{server}/v1/datasets/{ds}/versions/{v}").json()["status"] == "available":
            return v
        time.sleep(0.1)
    raise AssertionError("version did not become available")


def edges_of(g):
    return {(int(a), int(b)): (d["syn_count"], d["size_sum"]) for a, b, d in g.edges(data=True)}


def test_graphml_reads_in_networkx_and_matches_pandas(server):
    ds, want = uploaded(server)
    expected = {(int(r.pre_pt_root_id), int(r.post_pt_root_id)): (int(r.syn_count), float(r.size_sum)) for r in want.itertuples()}
    # Live rows, then the same graph from a version's edge index.
    for query in ["", f"version={materialize(server, ds)}"]:
        r = requests.get(f"{server}/v1/datasets/{ds}/graph?format=graphml&{query}")
        assert r.status_code == 200, r.text
        g = nx.read_graphml(io.BytesIO(r.content))
        assert g.is_directed()
        assert edges_of(g) == expected
        # Degrees as networkx counts them.
        for node, data in g.nodes(data=True):
            assert data["out_degree"] == g.out_degree(node)
            assert data["in_degree"] == g.in_degree(node)
            assert data["out_synapses"] == sum(d["syn_count"] for _, _, d in g.out_edges(node, data=True))


def test_npz_loads_with_scipy_in_its_node_order(server):
    ds, want = uploaded(server)
    materialize(server, ds)
    r = requests.get(f"{server}/v1/datasets/{ds}/graph?format=npz&min_synapses=2")
    assert r.status_code == 200, r.text
    m = scipy.sparse.load_npz(io.BytesIO(r.content))
    ids = np.load(io.BytesIO(r.content))["node_ids"]
    assert m.shape == (len(ids), len(ids))
    strong = want[want.syn_count >= 2]
    assert list(ids) == sorted(set(strong.pre_pt_root_id) | set(strong.post_pt_root_id))
    index = {int(i): k for k, i in enumerate(ids)}
    dense = np.zeros(m.shape, dtype=np.int64)
    for row in strong.itertuples():
        dense[index[int(row.pre_pt_root_id)], index[int(row.post_pt_root_id)]] = row.syn_count
    np.testing.assert_array_equal(m.toarray(), dense)
    # The CSV edge list reads straight into pandas and says the same.
    csv = pd.read_csv(io.StringIO(requests.get(f"{server}/v1/datasets/{ds}/graph?format=csv&min_synapses=2").text))
    assert list(csv.columns) == ["pre_pt_root_id", "post_pt_root_id", "syn_count", "size_sum"]
    pd.testing.assert_frame_equal(
        csv.reset_index(drop=True),
        strong.reset_index(drop=True).astype({"syn_count": "int64"}),
        check_dtype=False,
    )
