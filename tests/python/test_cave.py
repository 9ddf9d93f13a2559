"""caveclient 8.x, unchanged, against a neurocube server: seed 000's
MICrONS synaptic-connectivity notebook cell by cell, and the calls seeds 001
and 004 make, on `neurocube demo --synapses N` served with access tokens.
Every answer is checked against the rows loaded, read back through
neurocube's own /v1 API and filtered with pandas."""
import datetime
import io
import os
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import requests
from caveclient import CAVEclient
from serverproc import running

SYN = "synapses"
PROOF = "proofreading_status_and_strategy"
MANUAL = "allen_v1_column_types_slanted_ref"
NUCLEI = "nucleus_detection_v0"
RES = np.array([4.0, 4.0, 40.0])


def run(args, env=None):
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def cave(tmp_path_factory):
    """The demo (20,000 synapses, two versions) served in token mode; a
    reader's token for caveclient, an admin's for the ground truth."""
    binary = os.environ.get("NEUROCUBE_BIN", "target/debug/neurocube")
    data = str(tmp_path_factory.mktemp("cave"))
    run([binary, "demo", "--no-serve", "--data-dir", data, "--size", "512x512x32", "--synapses", "20000"])
    token = lambda *a: re.search(r"nct_[0-9a-f]{64}", run([binary, "token", "create", "--data-dir", data, *a])).group(0)
    admin = token("--user", "boss", "--admin")
    reader = token("--user", "ana")
    with running(data, {"NEUROCUBE__AUTH__MODE": "tokens"}, any_store=False) as url:
        r = requests.put(
            f"{url}/v1/datasets/demo/permissions",
            json={"public": False, "grants": [{"user": "ana", "role": "read"}]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 200, r.text
        yield url, reader, admin


@pytest.fixture(scope="module")
def client(cave):
    url, reader, _ = cave
    return CAVEclient("demo", server_address=url, auth_token=reader)


def truth(cave, table, version):
    """Every row of a table in a version, through /v1 (JSON lines)."""
    url, _, admin = cave
    r = requests.post(
        f"{url}/v1/datasets/demo/tables/{table}/query?format=jsonl",
        json={"version": version, "merge_reference": False},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 200, r.text
    return pd.read_json(io.StringIO(r.text), lines=True, dtype=False)


def test_versions_and_their_timestamps(client, cave):
    url, _, admin = cave
    listed = requests.get(f"{url}/v1/datasets/demo/versions", headers={"Authorization": f"Bearer {admin}"}).json()
    assert sorted(client.materialize.get_versions()) == [1, 2]
    for v in listed["versions"]:
        ts = client.materialize.get_timestamp(v["version"])
        want = datetime.datetime.fromisoformat(v["time_stamp"].replace("Z", "+00:00"))
        assert ts == want
    client.version = 2
    assert client.materialize.version == 2


def test_synapse_query_and_the_notebooks_limited_query(client, cave):
    client.version = 2
    syn = truth(cave, SYN, 2)
    hub = int(syn.pre_pt_root_id.value_counts().index[0])
    df = client.materialize.synapse_query(pre_ids=hub)
    want = syn[syn.pre_pt_root_id == hub]
    assert len(df) == len(want) > 10
    assert sorted(df.id) == sorted(want.id)
    got = df.set_index("id").loc[want.id]
    # Positions come back packed as [x, y, z] in the table's voxels.
    assert [list(p) for p in got.pre_pt_position] == list(want.pre_pt_position)
    assert list(got.post_pt_root_id) == list(want.post_pt_root_id)
    assert got.superceded_id.isna().all() and got.valid.all()
    # pre and post together are an AND.
    post = int(want.post_pt_root_id.iloc[0])
    both = client.materialize.synapse_query(pre_ids=hub, post_ids=post)
    assert sorted(both.id) == sorted(want[want.post_pt_root_id == post].id)

    name = client.info.get_datastack_info()["synapse_table"]
    assert name == SYN
    ten = client.materialize.query_table(name, limit=10, desired_resolution=[1, 1, 1], split_positions=True)
    assert list(ten.columns) == [
        "id", "created", "superceded_id", "valid",
        "pre_pt_position_x", "pre_pt_position_y", "pre_pt_position_z", "pre_pt_supervoxel_id", "pre_pt_root_id",
        "post_pt_position_x", "post_pt_position_y", "post_pt_position_z", "post_pt_supervoxel_id", "post_pt_root_id",
        "ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z", "size",
    ]
    assert len(ten) == 10
    # Rescaled to 1 nm voxels on the server, once.
    rows = syn.set_index("id").loc[ten.id]
    for axis, k in zip("xyz", range(3)):
        want_nm = np.array([p[k] for p in rows.pre_pt_position]) * RES[k]
        assert np.array_equal(ten[f"pre_pt_position_{axis}"].to_numpy(), want_nm)
    assert ten.attrs["dataframe_resolution"] == [1.0, 1.0, 1.0]


def test_the_proofread_subgraph_cells(client, cave):
    client.version = 2
    proof = client.materialize.tables.proofreading_status_and_strategy(status_axon="t").query(
        desired_resolution=[1, 1, 1], split_positions=True
    )
    want = truth(cave, PROOF, 2)
    want = want[want.status_axon]
    assert len(proof) == len(want) > 5
    assert sorted(proof.pt_root_id) == sorted(want.pt_root_id)
    assert proof.strategy_axon.value_counts().to_dict() == want.strategy_axon.value_counts().to_dict()
    sub = client.materialize.query_table(
        SYN, desired_resolution=[1, 1, 1], split_positions=True,
        filter_in_dict={"pre_pt_root_id": proof["pt_root_id"], "post_pt_root_id": proof["pt_root_id"]},
    )
    sub = sub[sub.pre_pt_root_id != sub.post_pt_root_id]
    syn = truth(cave, SYN, 2)
    ids = set(want.pt_root_id)
    exp = syn[syn.pre_pt_root_id.isin(ids) & syn.post_pt_root_id.isin(ids) & (syn.pre_pt_root_id != syn.post_pt_root_id)]
    assert len(sub) == len(exp) > 0
    assert sorted(sub.id) == sorted(exp.id)
    # The notebook's binarized matrix.
    mat = sub.pivot_table(index="pre_pt_root_id", columns="post_pt_root_id", values="size",
                          aggfunc=lambda x: float(np.sum(x) > 0)).fillna(0)
    assert mat.to_numpy().sum() == exp.groupby(["pre_pt_root_id", "post_pt_root_id"]).ngroups


def test_reference_tables_come_merged_with_their_target(client, cave):
    client.version = 2
    ct = client.materialize.query_table(MANUAL, desired_resolution=[1, 1, 1], split_positions=True)
    assert ct.shape[1] == 21, list(ct.columns)
    assert list(ct.columns[:9]) == ["id", "created", "valid", "target_id", "classification_system",
                                    "cell_type", "id_ref", "created_ref", "valid_ref"]
    ref = truth(cave, MANUAL, 2)
    nuc = truth(cave, NUCLEI, 2).set_index("id")
    assert len(ct) == len(ref) > 0
    assert (ct.target_id == ct.id_ref).all()
    for _, row in ct.iterrows():
        n = nuc.loc[row.target_id]
        assert row.pt_root_id == n.pt_root_id
        assert row.pt_position_x == n.pt_position[0] * 4.0
        assert row.pt_position_z == n.pt_position[2] * 40.0
        assert row.volume == n.volume
    # The notebook's clean-up works on the columns it expects.
    ct = ct.rename(columns={"target_id": "nucleus_id"}).drop_duplicates("pt_root_id", keep=False)
    assert ct.nucleus_id.notna().all()
    # Through the table manager, filtered on the reference's column.
    bc_type = ref.cell_type.value_counts().index[-1]
    got = client.materialize.tables.allen_v1_column_types_slanted_ref(cell_type=bc_type).query()
    assert len(got) == (ref.cell_type == bc_type).sum()
    assert set(got.cell_type) == {bc_type}
    # ... and on a column of its target table.
    root = int(got.pt_root_id.iloc[0])
    one = client.materialize.tables.allen_v1_column_types_slanted_ref(pt_root_id=root).query()
    assert set(one.pt_root_id) == {root}


def test_tables_metadata_counts_columns_and_an_older_version(client, cave):
    client.version = 2
    assert sorted(client.materialize.get_tables()) == sorted(
        ["aibs_metamodel_celltypes_v661", MANUAL, NUCLEI, PROOF, SYN])
    meta = client.materialize.get_table_metadata(MANUAL)
    assert meta["reference_table"] == NUCLEI
    assert meta["voxel_resolution"] == [4.0, 4.0, 40.0]
    assert meta["schema"] == "cell_type_reference"
    assert client.materialize.get_annotation_count(SYN) == 20000
    assert client.materialize.get_annotation_count(SYN, version=1) == 18000
    two = client.materialize.query_table(SYN, select_columns=["id", "pre_pt_root_id"], limit=5)
    assert list(two.columns) == ["id", "pre_pt_root_id"] and len(two) == 5
    old = client.materialize.query_table(SYN, materialization_version=1, select_columns=["id"])
    assert len(old) == 18000 and old.id.max() <= 18000
    sample = client.materialize.query_table(SYN, random_sample=2000, select_columns=["id"])
    assert 1000 < len(sample) < 3000 and sample.id.is_unique


def test_a_live_query_at_a_timestamp(client, cave):
    client.version = 2
    syn = truth(cave, SYN, 2)
    hub = int(syn.pre_pt_root_id.value_counts().index[0])
    now = datetime.datetime.now(datetime.timezone.utc)
    live = client.materialize.live_query(SYN, now, filter_equal_dict={"pre_pt_root_id": hub})
    assert sorted(live.id) == sorted(syn[syn.pre_pt_root_id == hub].id)
    # At version 1's own timestamp: a plain query of version 1.
    t1 = client.materialize.get_timestamp(1)
    early = client.materialize.live_query(SYN, t1, filter_equal_dict={"pre_pt_root_id": hub})
    assert sorted(early.id) == sorted(syn[(syn.pre_pt_root_id == hub) & (syn.id <= 18000)].id)


def test_errors_reach_the_user_as_messages(client, cave):
    url, reader, _ = cave
    client.version = 2
    with pytest.raises(requests.HTTPError, match=r"table .{1,3}nonesuch.{1,3} does not exist"):
        client.materialize.query_table("nonesuch")
    with pytest.raises(requests.HTTPError, match=r"no column .{1,3}colour"):
        client.materialize.query_table(SYN, filter_equal_dict={"colour": 1})
    # A bad token is refused with a message, not a redirect.
    bad = requests.get(f"{url}/info/api/v2/datastack/full/demo",
                       headers={"Authorization": "Bearer nct_" + "0" * 64}, allow_redirects=False)
    assert bad.status_code == 401 and "token" in bad.json()["message"]
    # The token also works as caveclient's cookie.
    r = requests.get(f"{url}/materialize/api/v3/datastack/demo/versions", cookies={"middle_auth_token": reader})
    assert r.status_code == 200 and r.json() == [1, 2]
