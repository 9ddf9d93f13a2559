"""The client: one object holding the server's address, the token and a
connection pool per thread. Nothing is fetched while it is built (no
dataset lists, no table managers): every method makes its own requests."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, Iterable, Optional

import requests
from urllib3.util.retry import Retry

from . import errors
from .objects import ObjectsMixin
from .tables import TablesMixin
from .volume import VolumeMixin

#: Statuses retried before an error is raised: the server asks to come back.
RETRIED = (429, 502, 503, 504)


def _back_off(retry_after: Optional[str], attempt: int) -> None:
    """Wait as the server's ``Retry-After`` says, or exponentially."""
    try:
        delay = float(retry_after) if retry_after else 0.2 * 2 ** attempt
    except ValueError:
        delay = 0.2 * 2 ** attempt
    time.sleep(min(delay, 30.0))


def _native_transport(url: str, timeout: float):
    """The compiled transport for chunk-stream cutouts, or None when it is
    not built (a source checkout used without installing) or the URL is
    not plain http."""
    if not url.startswith("http://"):
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return _native.Transport(url, float(timeout))


class Client(VolumeMixin, TablesMixin, ObjectsMixin):
    """A neurocube server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8080``.
        token: an access token (``nct_...``), sent as a Bearer header; None
            for a server in open mode.
        workers: parallel requests of cutouts and uploads.
        retries: how often a 429/502/503/504 is retried (honouring
            ``Retry-After``) before it is raised.
        timeout: seconds to wait for each answer.
        native: decode chunk-stream cutouts with the compiled part
            (``neurocube._native``) when it is built and the URL is plain
            http; False keeps every request in Python.
    """

    def __init__(self, url: str, token: Optional[str] = None, *, workers: int = 4,
                 retries: int = 5, timeout: float = 300.0, native: bool = True):
        self.url = url.rstrip("/")
        self.token = token
        self.workers = max(1, int(workers))
        self.retries = max(0, int(retries))
        self.timeout = timeout
        self._local = threading.local()
        self._pool_lock = threading.Lock()
        self._workers_pool = None
        # Its own keep-alive connections, shared by the worker threads.
        self._transport = _native_transport(self.url, timeout) if native else None

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        """Stop the worker threads (their connections close with them)."""
        with self._pool_lock:
            pool, self._workers_pool = self._workers_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transport ---------------------------------------------------------

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            # A kept connection the server closes as it is reused (its idle
            # timeout is 5 s) fails with "Remote end closed connection":
            # idempotent requests are sent again once, on a new connection.
            # POSTs never are (the server may have acted on them).
            retry = Retry(total=2, connect=1, read=1, status=0, redirect=0,
                          allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
                          raise_on_status=False)
            adapter = requests.adapters.HTTPAdapter(max_retries=retry)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            if self.token:
                s.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = s
        return s

    def request(self, method: str, path: str, *, params: Optional[Dict[str, Any]] = None,
                json_body: Any = None, data: Any = None,
                headers: Optional[Dict[str, str]] = None, stream: bool = False) -> requests.Response:
        """One request to the server: retried while it answers 429/5xx with a
        retry hint, raised as a `NeurocubeError` when it fails. With
        `stream`, the body is left to be read (`read_into`)."""
        url = path if path.startswith("http") else f"{self.url}{path}"
        body = data
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        for attempt in range(self.retries + 1):
            r = self._session().request(method, url, params=params, data=body, headers=hdrs,
                                        timeout=self.timeout, stream=stream)
            if r.status_code in RETRIED and attempt < self.retries:
                _back_off(r.headers.get("Retry-After"), attempt)
                continue
            if r.status_code >= 400:
                raise errors.from_response(r)
            return r
        raise AssertionError("unreachable")

    @staticmethod
    def read_into(r: requests.Response, buf) -> int:
        """Read a streamed answer's body into a writable buffer (a numpy
        array's memory) and close it; returns the bytes read. An identity
        body is read from the socket straight into the buffer: `.content`
        would join 10 KiB pieces and copy them twice."""
        mv = memoryview(buf).cast("B")
        got = 0
        fp = getattr(r.raw, "_fp", None)
        try:
            if fp is not None and hasattr(fp, "readinto") and not r.headers.get("Content-Encoding"):
                while got < len(mv):
                    n = fp.readinto(mv[got:])
                    if not n:
                        break
                    got += n
                extra = fp.read(1) if got == len(mv) else b""
            else:
                data = r.raw.read(len(mv) + 1, decode_content=True)
                extra = data[len(mv):]
                got = min(len(data), len(mv))
                mv[:got] = data[:got]
        finally:
            r.close()
        if got != len(mv) or extra:
            raise ValueError(f"{r.url}: the body has {'more' if extra else got} bytes, not {len(mv)}")
        return got

    def get_json(self, path: str, **params: Any) -> Any:
        """GET a JSON answer."""
        return self.request("GET", path, params=params or None).json()

    # -- catalog -----------------------------------------------------------

    def whoami(self) -> Dict[str, Any]:
        """The caller as the server sees it: user, groups, admin, auth mode."""
        return self.get_json("/v1/auth/whoami")

    def datasets(self) -> list:
        """The datasets the caller may read."""
        return self.get_json("/v1/datasets")["datasets"]

    def dataset(self, ds: str) -> Dict[str, Any]:
        """A dataset with its levels (`level_info`)."""
        return self.get_json(f"/v1/datasets/{ds}")

    def channels(self, ds: str) -> list:
        """The channels of a dataset."""
        return self.get_json(f"/v1/datasets/{ds}/channels")["channels"]

    def channel(self, ds: str, ch: str) -> Dict[str, Any]:
        """A channel: type, dtype, chunk_size, level_status."""
        return self.get_json(f"/v1/datasets/{ds}/channels/{ch}")

    def create_dataset(self, ds: str, voxel_size: Iterable[float], extent: Iterable[int], *,
                       levels: int = 1, offset: Iterable[int] = (0, 0, 0),
                       description: str = "") -> Dict[str, Any]:
        """Create a dataset (201), or find it unchanged (200)."""
        body = {"voxel_size": list(voxel_size), "extent": list(extent), "levels": levels,
                "offset": list(offset), "description": description}
        return self.request("PUT", f"/v1/datasets/{ds}", json_body=body).json()

    def update_dataset(self, ds: str, **fields: Any) -> Dict[str, Any]:
        """Change what may change after creation: ``description``, and CAVE's
        datastack tables ``synapse_table`` and ``soma_table`` (existing tables
        of the synapse, and the nucleus or point, schema; None clears one,
        and it is found by schema again). Returns the dataset."""
        unknown = set(fields) - {"description", "synapse_table", "soma_table"}
        if unknown:
            raise ValueError(f"update_dataset changes description, synapse_table and soma_table, not {sorted(unknown)}")
        return self.request("PATCH", f"/v1/datasets/{ds}", json_body=fields).json()

    def create_channel(self, ds: str, ch: str, dtype: str, *, kind: str = "image",
                       chunk_size: Iterable[int] = (128, 128, 16)) -> Dict[str, Any]:
        """Create a channel: `kind` is image or segmentation."""
        body = {"type": kind, "dtype": dtype, "chunk_size": list(chunk_size)}
        return self.request("PUT", f"/v1/datasets/{ds}/channels/{ch}", json_body=body).json()

    def job(self, job_id: str) -> Dict[str, Any]:
        """A background job: state, done/total, rate, ETA, errors."""
        return self.get_json(f"/v1/jobs/{job_id}")

    def wait_for_job(self, job_id: str, *, timeout: float = 3600.0, poll: float = 0.2,
                     progress: Optional[bool] = None) -> Dict[str, Any]:
        """Wait until a job ends, with a progress bar; raise if it failed."""
        from tqdm.auto import tqdm

        deadline = time.monotonic() + timeout
        bar = None
        try:
            while True:
                j = self.job(job_id)
                total = j.get("total") or 0
                if progress is not False and bar is None and total:
                    bar = tqdm(total=total, desc=j.get("kind", "job"), disable=progress is None and total < 2)
                if bar is not None:
                    bar.n = j.get("done") or 0
                    bar.refresh()
                state = j.get("state")
                if state in ("done", "failed", "cancelled"):
                    if state != "done":
                        raise errors.ServerError(500, f"job {job_id} {state}: {j.get('errors')}",
                                                 "job_" + state, body=j)
                    return j
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {state} after {timeout} s")
                time.sleep(poll)
        finally:
            if bar is not None:
                bar.close()
