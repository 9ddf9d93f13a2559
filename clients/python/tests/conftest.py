"""The real neurocube binary on a free loopback port with a temporary data
directory (NEUROCUBE_BIN, default target/debug/neurocube from the
repository root)."""
import contextlib
import os
import re
import subprocess
import time

import pytest
import requests


def binary():
    return os.environ.get("NEUROCUBE_BIN", "target/debug/neurocube")


@contextlib.contextmanager
def serving(data, env=None):
    """`neurocube serve` on `data` with extra environment `env`; its URL."""
    proc = subprocess.Popen(
        [binary(), "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        m = re.search(r"listening on (http://\S+)", proc.stdout.readline())
        assert m, "server did not start"
        url = m.group(1)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(url + "/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("data")) as url:
        yield url
