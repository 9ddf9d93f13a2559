"""Start the real neurocube binary on a free port with a temporary data directory."""
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
    args = [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data)]
    store = os.environ.get("NEUROCUBE_TEST_STORE")
    if store:
        args += ["--store", store]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        assert m, f"server did not start: {line!r}"
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
