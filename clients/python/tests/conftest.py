"""The real neurocube binary on a free loopback port with a temporary data
directory (NEUROCUBE_BIN, default target/debug/neurocube from the
repository root)."""
import os
import re
import subprocess
import time

import pytest
import requests


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    binary = os.environ.get("NEUROCUBE_BIN", "target/debug/neurocube")
    data = tmp_path_factory.mktemp("data")
    proc = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
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
