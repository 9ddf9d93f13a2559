"""Annotation tables from Python: upload a DataFrame (CSV, Arrow, JSON),
query it back as Arrow (pyarrow), CSV and JSON lines (pandas), and check
every CAVE filter against the same filter applied by pandas to the rows we
sent."""
import io
import json
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import requests


def make_table(server, rows=400, seed=3):
    ds = "ann" + uuid.uuid4().hex[:8]
    r = requests.put(f"{server}/v1/datasets/{ds}", json={"voxel_size": [4, 4, 40], "extent": [512, 512, 64]})
    assert r.status_code == 201, r.text
    r = requests.put(
        f"{server}/v1/datasets/{ds}/tables/syn",
        json={"schema": "synapse", "voxel_resolution": [4, 4, 40]},
    )
    assert r.status_code == 201, r.text
    rng = np.random.default_rng(seed)
    n = rows
    df = pd.DataFrame(
        {
            "pre_pt_position_x": rng.integers(0, 512, n),
            "pre_pt_position_y": rng.integers(0, 512, n),
            "pre_pt_position_z": rng.integers(0, 64, n),
            "post_pt_position_x": rng.integers(0, 512, n),
            "post_pt_position_y": rng.integers(0, 512, n),
            "post_pt_position_z": rng.integers(0, 64, n),
            # Heavy-tailed partners: a few segments make most synapses.
            "pre_pt_root_id": (rng.zipf(1.6, n) % 40 + 864691135000000000).astype(np.int64),
            "post_pt_root_id": (rng.zipf(1.6, n) % 40 + 864691135000000000).astype(np.int64),
            "size": rng.integers(1, 5000, n).astype(float),
        }
    )
    return ds, df


def query(server, ds, body, fmt="arrow"):
    r = requests.post(f"{server}/v1/datasets/{ds}/tables/syn/query?format={fmt}", json=body)
    assert r.status_code == 200, r.text
    return r


def as_frame(r):
    return ipc.open_stream(io.BytesIO(r.content)).read_all().to_pandas()


def test_uploads_and_queries_read_back_with_pyarrow_and_pandas(server):
    ds, df = make_table(server)
    third = len(df) // 3
    # CSV from pandas, Arrow from pyarrow, JSON records: the same table.
    parts = [df.iloc[:third], df.iloc[third : 2 * third], df.iloc[2 * third :]]
    r = requests.post(
        f"{server}/v1/datasets/{ds}/tables/syn/rows",
        data=parts[0].to_csv(index=False),
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 201, r.text
    sink = io.BytesIO()
    table = pa.Table.from_pandas(parts[1], preserve_index=False)
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    r = requests.post(
        f"{server}/v1/datasets/{ds}/tables/syn/rows",
        data=sink.getvalue(),
        headers={"Content-Type": "application/vnd.apache.arrow.stream"},
    )
    assert r.status_code == 201, r.text
    r = requests.post(f"{server}/v1/datasets/{ds}/tables/syn/rows", json=json.loads(parts[2].to_json(orient="records")))
    assert r.status_code == 201, r.text
    assert requests.get(f"{server}/v1/datasets/{ds}/tables/syn/count").json() == {"count": len(df)}

    got = as_frame(query(server, ds, {"split_positions": True}))
    assert list(got["id"]) == list(range(1, len(df) + 1))
    for col in df.columns:
        np.testing.assert_array_equal(got[col].to_numpy(), df[col].to_numpy(), err_msg=col)
    assert got["valid"].all()
    assert str(got["created"].dtype).startswith("datetime64[us, UTC]")

    # CSV and JSON lines give the same rows.
    csv = pd.read_csv(io.StringIO(query(server, ds, {"split_positions": True}, "csv").text))
    np.testing.assert_array_equal(csv["pre_pt_root_id"].to_numpy(), df["pre_pt_root_id"].to_numpy())
    np.testing.assert_array_equal(csv["size"].to_numpy(), df["size"].to_numpy())
    jl = pd.read_json(io.StringIO(query(server, ds, {}, "jsonl").text), lines=True, dtype={"pre_pt_root_id": "int64"})
    assert [list(p) for p in jl["pre_pt_position"]] == df[["pre_pt_position_x", "pre_pt_position_y", "pre_pt_position_z"]].values.tolist()

    # Positions rescaled to 1 nm, as CAVE's desired_resolution.
    scaled = as_frame(query(server, ds, {"desired_resolution": [1, 1, 1], "split_positions": True}))
    np.testing.assert_allclose(scaled["pre_pt_position_z"], df["pre_pt_position_z"] * 40.0)


def test_every_filter_agrees_with_pandas(server):
    ds, df = make_table(server, rows=600, seed=5)
    r = requests.post(f"{server}/v1/datasets/{ds}/tables/syn/rows", data=df.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    df = df.assign(id=np.arange(1, len(df) + 1))
    roots = sorted(df["pre_pt_root_id"].unique().tolist())[:5]
    posts = sorted(df["post_pt_root_id"].unique().tolist())[:7]
    lo, hi = [100, 50, 10], [300, 400, 40]
    cases = [
        ({"filter_in_dict": {"pre_pt_root_id": roots}}, df["pre_pt_root_id"].isin(roots)),
        ({"filter_in_dict": {"pre_pt_root_id": roots, "post_pt_root_id": posts}}, df["pre_pt_root_id"].isin(roots) & df["post_pt_root_id"].isin(posts)),
        ({"filter_notin_dict": {"post_pt_root_id": posts}}, ~df["post_pt_root_id"].isin(posts)),
        ({"filter_out_dict": {"pre_pt_root_id": roots}}, ~df["pre_pt_root_id"].isin(roots)),
        ({"filter_equal_dict": {"post_pt_root_id": posts[0]}}, df["post_pt_root_id"] == posts[0]),
        ({"filter_greater_dict": {"size": 4000}}, df["size"] > 4000),
        ({"filter_less_dict": {"size": 200}}, df["size"] < 200),
        ({"filter_greater_equal_dict": {"size": 1000}, "filter_less_equal_dict": {"size": 1100}}, df["size"].between(1000, 1100)),
        (
            {"filter_spatial_dict": {"pre_pt_position": [lo, hi]}},
            df["pre_pt_position_x"].between(lo[0], hi[0]) & df["pre_pt_position_y"].between(lo[1], hi[1]) & df["pre_pt_position_z"].between(lo[2], hi[2]),
        ),
        (
            {"filter_spatial_dict": {"post_pt_position": [lo, hi]}, "filter_in_dict": {"pre_pt_root_id": roots}},
            df["pre_pt_root_id"].isin(roots) & df["post_pt_position_x"].between(lo[0], hi[0]) & df["post_pt_position_y"].between(lo[1], hi[1]) & df["post_pt_position_z"].between(lo[2], hi[2]),
        ),
    ]
    for body, mask in cases:
        got = as_frame(query(server, ds, body))
        assert sorted(got["id"].tolist()) == df.loc[mask, "id"].tolist(), body
    # synapse_query, as CAVE's client calls it: pre and post ANDed.
    r = requests.post(f"{server}/v1/datasets/{ds}/synapse_query?format=arrow", json={"pre_ids": roots[0], "post_ids": posts})
    got = as_frame(r)
    want = df[(df["pre_pt_root_id"] == roots[0]) & df["post_pt_root_id"].isin(posts)]
    assert sorted(got["id"].tolist()) == want["id"].tolist()


def test_bad_rows_give_422_with_their_index(server):
    ds, df = make_table(server, rows=5)
    bad = df.copy()
    bad.loc[3, "pre_pt_position_z"] = 9999
    r = requests.post(f"{server}/v1/datasets/{ds}/tables/syn/rows", data=bad.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert r.status_code == 422
    body = r.json()
    assert (body["row"], body["column"]) == (3, "pre_pt_position")
    assert "lies outside dataset" in body["message"]
    assert requests.get(f"{server}/v1/datasets/{ds}/tables/syn/count").json() == {"count": 0}
