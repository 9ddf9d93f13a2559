"""The neurocube binary for a Python bench: a fresh data directory, loopback,
logs at warn, no automatic downsampling; stopped and removed on exit.

    with neurocube(binary, "nc-bench-") as (base_url, work_dir): ...
"""
import contextlib
import os
import re
import shutil
import subprocess
import tempfile


@contextlib.contextmanager
def neurocube(binary, prefix):
    work = tempfile.mkdtemp(prefix=prefix)
    server = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", f"{work}/data"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "NEUROCUBE__LOG__LEVEL": "warn", "NEUROCUBE__JOBS__AUTO_DOWNSAMPLE": "false"},
    )
    try:
        yield re.search(r"(http://\S+)", server.stdout.readline()).group(1), work
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
