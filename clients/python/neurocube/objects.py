"""Annotation objects (OCP's RAMON kinds, docs/objects.md): rows of an
object table whose id is their label in the table's annotation channel.
Objects are created with their voxels in NDJSON batches (each batch all or
nothing on the server), their voxels come back as ``(n, 3)`` arrays of
``(x, y, z)``, and a box's labels as an array of ids."""
from __future__ import annotations

import io
import json
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .volume import _box

#: Creations of at least this many objects show a progress bar unless told otherwise.
PROGRESS_OBJECTS = 10_000

CONFLICTS = ("overwrite", "preserve", "exception")


def _conflict(conflict: str) -> Dict[str, str]:
    if conflict not in CONFLICTS:
        raise ValueError(f"conflict={conflict!r}: use one of {', '.join(CONFLICTS)}")
    return {"conflict": conflict}


def _voxels(v: Any) -> List[List[int]]:
    """Voxels as the server reads them: a list of [x, y, z] integers."""
    a = np.asarray(v)
    if a.size == 0:
        return []
    if a.ndim != 2 or a.shape[1] != 3 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"voxels are an (n, 3) array of integer (x, y, z), not shape {a.shape} of {a.dtype}")
    return a.tolist()


def _object_line(o: Dict[str, Any]) -> str:
    from .tables import _plain

    body = {k: _plain(v) for k, v in o.items() if k != "voxels"}
    body["voxels"] = _voxels(o.get("voxels", []))
    return json.dumps(body, separators=(",", ":"))


class ObjectsMixin:
    """Annotation objects and the labels in a box (mixed into `Client`)."""

    def _objects(self, ds: str, table: str) -> str:
        return f"/v1/datasets/{ds}/tables/{table}/objects"

    def create_objects(self, ds: str, table: str, objects: Iterable[Dict[str, Any]], *,
                       conflict: str = "overwrite", batch: int = 1000,
                       progress: Optional[bool] = None) -> List[int]:
        """Create objects, each a dict of its columns (optionally its
        ``id``) and its ``voxels`` (an ``(n, 3)`` array or list of
        ``(x, y, z)``), `batch` per request; returns their ids in order. A
        batch the server refuses raises, and nothing of that batch is kept
        (earlier batches are)."""
        params = _conflict(conflict)
        objects = list(objects)
        ids: List[int] = []
        from tqdm.auto import tqdm

        show = progress if progress is not None else len(objects) >= PROGRESS_OBJECTS
        with tqdm(total=len(objects), unit="objects", desc=f"{ds}/{table}", disable=not show) as bar:
            for i in range(0, len(objects), max(1, int(batch))):
                part = objects[i:i + max(1, int(batch))]
                body = "\n".join(_object_line(o) for o in part).encode()
                r = self.request("POST", self._objects(ds, table), params=params, data=body,
                                 headers={"Content-Type": "application/x-ndjson"})
                ids.extend(int(v) for v in r.json()["ids"])
                bar.update(len(part))
        return ids

    def object(self, ds: str, table: str, id: int) -> Dict[str, Any]:
        """An object's row, with ``voxel_count`` and ``bounding_box``."""
        return self.get_json(f"{self._objects(ds, table)}/{int(id)}")

    def object_voxels(self, ds: str, table: str, id: int) -> np.ndarray:
        """An object's voxels, an ``(n, 3)`` int64 array of ``(x, y, z)``
        in z, y, x order."""
        v = self.get_json(f"{self._objects(ds, table)}/{int(id)}/voxels")["voxels"]
        return np.asarray(v, dtype=np.int64).reshape(-1, 3)

    def object_bounding_box(self, ds: str, table: str, id: int) -> Dict[str, Any]:
        """An object's bounding box (and OCP's ``bbcorner``/``bbdim``)."""
        return self.get_json(f"{self._objects(ds, table)}/{int(id)}/boundingbox")

    def put_object_voxels(self, ds: str, table: str, id: int, voxels: Any = None, *,
                          mask: Optional[np.ndarray] = None, offset: Sequence[int] = (0, 0, 0),
                          conflict: str = "overwrite") -> Dict[str, Any]:
        """Label more voxels of an object: a list of ``(x, y, z)``, or a
        dense ``(z, y, x)`` `mask` in the channel's dtype whose first voxel
        is at `offset` (x, y, z): voxels holding the object's id are its,
        0 are not. Returns the server's counts (``voxels_written``,
        ``voxels_preserved``)."""
        url = f"{self._objects(ds, table)}/{int(id)}/voxels"
        params = _conflict(conflict)
        if (voxels is None) == (mask is None):
            raise ValueError("give voxels or a mask, not both or neither")
        if voxels is not None:
            return self.request("PUT", url, params=params,
                                json_body={"voxels": _voxels(voxels)}).json()
        m = np.ascontiguousarray(mask)
        if m.ndim != 3:
            raise ValueError(f"a mask is a 3-D (z, y, x) array, not shape {m.shape}")
        ox, oy, oz = (int(v) for v in offset)
        nz, ny, nx = m.shape
        params.update(x=f"{ox},{ox + nx}", y=f"{oy},{oy + ny}", z=f"{oz},{oz + nz}")
        buf = io.BytesIO()
        np.save(buf, m)
        return self.request("PUT", url, params=params, data=buf.getvalue(),
                            headers={"Content-Type": "application/x-npy"}).json()

    def object_cutout(self, ds: str, table: str, id: int,
                      box: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
        """The object's labels over its bounding box (or `box`), every other
        label 0, as a ``(z, y, x)`` array."""
        params: Dict[str, Any] = {"format": "npy"}
        if box is not None:
            (x0, x1), (y0, y1), (z0, z1) = _box(box)
            params.update(x=f"{x0},{x1}", y=f"{y0},{y1}", z=f"{z0},{z1}")
        r = self.request("GET", f"{self._objects(ds, table)}/{int(id)}/cutout", params=params)
        return np.load(io.BytesIO(r.content))

    def delete_object(self, ds: str, table: str, id: int) -> int:
        """Clear an object's voxels and delete its row; returns the voxels
        cleared."""
        r = self.request("DELETE", f"{self._objects(ds, table)}/{int(id)}")
        return int(r.json()["voxels_cleared"])

    def ids(self, ds: str, ch: str, level: int, box: Sequence[Sequence[int]]) -> np.ndarray:
        """The labels present in a box of a segmentation channel, ascending,
        0 left out (uint64)."""
        (x0, x1), (y0, y1), (z0, z1) = _box(box)
        v = self.get_json(f"/{ds}/{ch}/ids/{int(level)}/{x0},{x1}/{y0},{y1}/{z0},{z1}/")["ids"]
        return np.asarray(v, dtype=np.uint64)
