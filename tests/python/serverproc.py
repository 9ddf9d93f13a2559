"""Start the real neurocube binary on a free loopback port and stop it."""
import contextlib
import os
import re
import subprocess
import time

import requests


@contextlib.contextmanager
def running(data_dir, extra_env=None, any_store=True):
    """`neurocube serve` on 127.0.0.1, port 0, with `data_dir`; yields its
    URL once /health answers, and stops it afterwards (NEUROCUBE_BIN picks
    the binary, NEUROCUBE_TEST_STORE the store unless `any_store` is False:
    data made in `data_dir` beforehand is on the embedded store)."""
    binary = os.environ.get("NEUROCUBE_BIN", "target/debug/neurocube")
    args = [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)]
    store = os.environ.get("NEUROCUBE_TEST_STORE")
    if store and any_store:
        args += ["--store", store]
    env = dict(os.environ, **(extra_env or {}))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
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
