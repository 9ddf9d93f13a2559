#!/usr/bin/env bash
# A/B of the warm tile path: two builds of the server on the same demo data,
# alternating, wrk as in run.sh (6 connections, 1024² PNG frames in z order).
# Usage: benches/tiles/ab_warm.sh NEW_BIN OLD_BIN   (ROUNDS=3, Z=512)
set -euo pipefail
cd "$(dirname "$0")/../.."
A=${1:?new binary}; B=${2:?old binary}
ROUNDS=${ROUNDS:-3}; Z=${Z:-512}
export NEUROCUBE__STORE__DURABILITY=flush NEUROCUBE__LOG__LEVEL=warn NEUROCUBE__TILES__CACHE_BYTES=$((2 << 30))
WORK=$(mktemp -d /tmp/neurocube-ab-XXXXXX); trap 'rm -rf "$WORK"' EXIT
"$A" demo --no-serve --size "1024x1024x$Z" --data-dir "$WORK/data" --port 0 >/dev/null
for round in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    NEUROCUBE__TILES__PREFETCH=false "$bin" serve --port "$port" --data-dir "$WORK/data" >"$WORK/out" 2>&1 & pid=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    walk() { PREFIX=/v1/tiles/demo/image/xy/1024/0/ SUFFIX=/0/0.png Z=$Z wrk -t1 -c6 -d"$1" --latency -s benches/tiles/walk.lua "http://127.0.0.1:$port"; }
    walk 4s >/dev/null   # warm the cache
    echo "round $round $bin $(walk 10s | grep '^FRAMES')"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
