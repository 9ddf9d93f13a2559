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


def cpu_seconds(pid):
    """CPU time (user and system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid, quiet=0.05, window=1.0, timeout=180.0):
    """Wait until the process uses under `quiet` of a core over `window`
    seconds (the store's flushes and compactions after a bulk load have
    ended), at most `timeout`; returns the seconds waited."""
    import time

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < quiet * window:
            break
    return time.monotonic() - start
