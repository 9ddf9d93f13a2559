"""Annotation tables, versions, synapse queries and connectivity graphs.
Queries take CAVE's argument names (``filter_in_dict``, ``select_columns``,
``desired_resolution``, ``split_positions``...) and come back as pandas
DataFrames read from Arrow; uploads go in Arrow batches with a progress bar."""
from __future__ import annotations

import io
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

def _plain(v: Any) -> Any:
    """Values as JSON takes them: pandas Series, numpy arrays and numpy
    scalars become lists and Python numbers (ids stay exact integers)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (pd.Series, pd.Index)):
        return [_plain(x) for x in v.tolist()]
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (list, tuple, set)):
        return [_plain(x) for x in v]
    return v


def _time(t: Any) -> Any:
    """A timestamp as the server reads it: ISO text for datetimes."""
    return t.isoformat() if hasattr(t, "isoformat") else t


def _where_and_how(body: Dict[str, Any], timestamp: Any, desired_resolution, split_positions: bool) -> None:
    """The fields queries share: a timestamp, the positions' resolution and
    whether they are split into _x/_y/_z columns."""
    if timestamp is not None:
        body["timestamp"] = _time(timestamp)
    if desired_resolution is not None:
        body["desired_resolution"] = [float(v) for v in desired_resolution]
    if split_positions:
        body["split_positions"] = True


def _frame(content: bytes) -> pd.DataFrame:
    return ipc.open_stream(io.BytesIO(content)).read_all().to_pandas()


class TablesMixin:
    """Tables, queries, versions and graphs (mixed into `Client`)."""

    # -- tables --------------------------------------------------------------

    def tables(self, ds: str) -> List[Dict[str, Any]]:
        """The annotation tables of a dataset."""
        return self.get_json(f"/v1/datasets/{ds}/tables")["tables"]

    def table(self, ds: str, name: str) -> Dict[str, Any]:
        """A table: declaration, columns and row count."""
        return self.get_json(f"/v1/datasets/{ds}/tables/{name}")

    def schemas(self) -> List[Dict[str, Any]]:
        """The built-in schemas (CAVE's column names)."""
        return self.get_json("/v1/schemas")["schemas"]

    def create_table(self, ds: str, name: str, schema: str, voxel_resolution: Sequence[float], *,
                     segmentation: Optional[str] = None, reference_table: Optional[str] = None,
                     fields: Optional[List[Dict[str, Any]]] = None, description: str = "") -> Dict[str, Any]:
        """Declare a table: a built-in `schema` (``synapse``, ``nucleus``,
        ``cell_type_reference``...) or ``custom`` with `fields`; bound points
        take their root ids from the `segmentation` channel."""
        body: Dict[str, Any] = {"schema": schema, "voxel_resolution": list(voxel_resolution),
                                "description": description}
        if segmentation:
            body["segmentation"] = segmentation
        if reference_table:
            body["reference_table"] = reference_table
        if fields is not None:
            body["fields"] = fields
        return self.request("PUT", f"/v1/datasets/{ds}/tables/{name}", json_body=body).json()

    def delete_table(self, ds: str, name: str) -> None:
        """Delete a table."""
        self.request("DELETE", f"/v1/datasets/{ds}/tables/{name}")

    def upload_table(self, ds: str, name: str, df: pd.DataFrame, *, batch_rows: int = 50_000,
                     progress: Optional[bool] = None) -> List[int]:
        """Insert a DataFrame's rows, `batch_rows` at a time as Arrow IPC, with
        a progress bar for more than one batch. Positions are columns
        ``{point}_position`` of ``[x, y, z]`` or split ``_x``/``_y``/``_z``.
        Each batch is checked whole by the server (a bad row raises
        `Unprocessable` naming it, and nothing of that batch is written).
        Returns the new rows' ids, in order."""
        from tqdm.auto import tqdm

        ids: List[int] = []
        show = progress if progress is not None else len(df) > batch_rows
        with tqdm(total=len(df), unit="rows", desc=f"{ds}/{name}", disable=not show) as bar:
            for start in range(0, len(df), batch_rows):
                part = pa.Table.from_pandas(df.iloc[start:start + batch_rows], preserve_index=False)
                sink = io.BytesIO()
                with ipc.new_stream(sink, part.schema) as w:
                    w.write_table(part)
                r = self.request("POST", f"/v1/datasets/{ds}/tables/{name}/rows", data=sink.getvalue(),
                                 headers={"Content-Type": "application/vnd.apache.arrow.stream"})
                ids.extend(r.json()["ids"])
                bar.update(part.num_rows)
        return ids

    def delete_rows(self, ds: str, name: str, ids: Iterable[int]) -> int:
        """Mark rows deleted; returns how many were."""
        r = self.request("DELETE", f"/v1/datasets/{ds}/tables/{name}/rows", json_body={"ids": _plain(list(ids))})
        return r.json().get("deleted", 0)

    # -- queries -------------------------------------------------------------

    def query_table(self, ds: str, table: str, *, filter_in_dict=None, filter_out_dict=None,
                    filter_equal_dict=None, filter_greater_dict=None, filter_less_dict=None,
                    filter_greater_equal_dict=None, filter_less_equal_dict=None,
                    filter_spatial_dict=None, filter_regex_dict=None,
                    select_columns: Optional[List[str]] = None, limit: Optional[int] = None,
                    offset: Optional[int] = None, desired_resolution: Optional[Sequence[float]] = None,
                    split_positions: bool = False, version: Optional[int] = None,
                    timestamp: Any = None, merge_reference: bool = True) -> pd.DataFrame:
        """Rows of a table as a DataFrame, with CAVE's arguments: filters map
        a column to a value (a list for ``in``/``out``, ``[[x0,y0,z0],
        [x1,y1,z1]]`` for spatial); a `version` (default: the newest), or
        the live rows at a `timestamp` (a datetime, ISO text or seconds).
        Every matching row comes back (no row cap) unless `limit` is given.
        ``df.attrs`` holds the version, timestamp and resolution."""
        body: Dict[str, Any] = {}
        given = dict(filter_in_dict=filter_in_dict, filter_out_dict=filter_out_dict,
                     filter_equal_dict=filter_equal_dict, filter_greater_dict=filter_greater_dict,
                     filter_less_dict=filter_less_dict, filter_greater_equal_dict=filter_greater_equal_dict,
                     filter_less_equal_dict=filter_less_equal_dict, filter_spatial_dict=filter_spatial_dict,
                     filter_regex_dict=filter_regex_dict)
        for k, v in given.items():
            if v:
                body[k] = _plain(v)
        for k, v in (("select_columns", select_columns), ("limit", limit), ("offset", offset),
                     ("version", version)):
            if v is not None:
                body[k] = _plain(v)
        _where_and_how(body, timestamp, desired_resolution, split_positions)
        if not merge_reference:
            body["merge_reference"] = False
        r = self.request("POST", f"/v1/datasets/{ds}/tables/{table}/query", params={"format": "arrow"},
                         json_body=body)
        return self._attrs(_frame(r.content), r)

    def synapse_query(self, ds: str, pre_ids=None, post_ids=None, bounding_box=None, *,
                      table: Optional[str] = None, version: Optional[int] = None, timestamp: Any = None,
                      select_columns: Optional[List[str]] = None, limit: Optional[int] = None,
                      desired_resolution: Optional[Sequence[float]] = None,
                      split_positions: bool = False) -> pd.DataFrame:
        """CAVE's `synapse_query`: synapses out of `pre_ids` and/or into
        `post_ids` (both: an AND), in a box on the post point."""
        body: Dict[str, Any] = {}
        for k, v in (("pre_ids", pre_ids), ("post_ids", post_ids), ("bounding_box", bounding_box),
                     ("table", table), ("version", version), ("select_columns", select_columns),
                     ("limit", limit)):
            if v is not None:
                body[k] = _plain(v)
        _where_and_how(body, timestamp, desired_resolution, split_positions)
        r = self.request("POST", f"/v1/datasets/{ds}/synapse_query", params={"format": "arrow"},
                         json_body=body)
        return self._attrs(_frame(r.content), r)

    @staticmethod
    def _attrs(df: pd.DataFrame, r) -> pd.DataFrame:
        h = r.headers
        if "dataframe_resolution" in h:
            df.attrs["dataframe_resolution"] = [float(v) for v in h["dataframe_resolution"].split(",")]
        df.attrs["version"] = h.get("X-Neurocube-Version")
        df.attrs["timestamp"] = h.get("X-Neurocube-Timestamp")
        return df

    def count(self, ds: str, table: str, *, version: Optional[int] = None, timestamp: Any = None) -> int:
        """Rows valid now, in a version, or at a timestamp."""
        params: Dict[str, Any] = {}
        if version is not None:
            params["version"] = version
        if timestamp is not None:
            params["timestamp"] = _time(timestamp)
        return int(self.get_json(f"/v1/datasets/{ds}/tables/{table}/count", **params)["count"])

    # -- versions ------------------------------------------------------------

    def versions(self, ds: str) -> List[Dict[str, Any]]:
        """The materialized versions: number, time_stamp, valid, status."""
        return self.get_json(f"/v1/datasets/{ds}/versions")["versions"]

    def create_version(self, ds: str, *, timestamp: Any = None, expires_in_days: Optional[float] = None,
                       wait: bool = True, progress: Optional[bool] = None) -> Dict[str, Any]:
        """Materialize a version of every table (a job), and wait for it."""
        body: Dict[str, Any] = {}
        if timestamp is not None:
            body["timestamp"] = _time(timestamp)
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        v = self.request("POST", f"/v1/datasets/{ds}/versions", json_body=body).json()
        if wait:
            self.wait_for_job(v["job"], progress=progress)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                v = self.get_json(f"/v1/datasets/{ds}/versions/{v['version']}")
                if v.get("status") == "available":
                    break
                time.sleep(0.1)
        return v

    # -- graphs --------------------------------------------------------------

    def graph(self, ds: str, *, as_: str = "dataframe", **fields: Any):
        """The synapse graph: edges (pre, post, syn_count, size_sum) as a
        DataFrame, or with ``as_="networkx"`` a DiGraph carrying node
        attributes (cell type, proofreading) and degrees. `fields` are the
        endpoint's: ids, pre_ids, post_ids, bounding_box, select_table,
        select_column, select_values, min_synapses, autapses, version,
        timestamp, table, node_tables."""
        body = {k: _plain(v) for k, v in fields.items() if v is not None}
        if as_ == "dataframe":
            body["format"] = "arrow"
            r = self.request("POST", f"/v1/datasets/{ds}/graph", json_body=body)
            return _frame(r.content)
        if as_ == "networkx":
            import networkx as nx

            body["format"] = "graphml"
            r = self.request("POST", f"/v1/datasets/{ds}/graph", json_body=body)
            return nx.read_graphml(io.BytesIO(r.content), node_type=int)
        raise ValueError(f"as_={as_!r}: use 'dataframe' or 'networkx'")

    def graph_stats(self, ds: str, **fields: Any) -> Dict[str, Any]:
        """Node and edge counts, degree distributions, reciprocity."""
        body = {k: _plain(v) for k, v in fields.items() if v is not None}
        return self.request("POST", f"/v1/datasets/{ds}/graph/stats", json_body=body).json()

