#!/usr/bin/env bash
# End-to-end tile bench: scroll z the way a viewer does (6 connections, as a
# browser over HTTP/1.1), 1024 x 1024 uint8 PNG frames at level 0.
#   1. nginx serving the same PNG bytes as static files (the reference)
#   2. neurocube, warm tile cache
#   3. neurocube, cold caches, prefetch on (fresh process)
#   4. neurocube, cold caches, prefetch off (fresh process)
#   5. cold again, paced like a movie at MOVIE_RATE frames/s, prefetch on and off
# nginx and warm: wrk -t1 -c6 with walk.lua walking the z order. Cold: each
# frame asked for once (wrk cannot stop after N requests), by tile_walk
# (benches/src/bin/tile_walk.rs), 6 connections in z order.
# Usage: benches/tiles/run.sh   (Z=512 slices, WARM_SECONDS=10, MOVIE_RATE=60;
#        BIN=path/to/neurocube to bench another build of the server)
set -euo pipefail
cd "$(dirname "$0")/../.."
Z=${Z:-512}
WARM_SECONDS=${WARM_SECONDS:-10}
MOVIE_RATE=${MOVIE_RATE:-60}
HERE=benches/tiles

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
cargo build --release --locked --bin neurocube
cargo build --release --locked -p neurocube-benches --bin tile_walk
BIN=${BIN:-target/release/neurocube}
WALK=target/release/tile_walk

WORK=$(mktemp -d /tmp/neurocube-tiles-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export NEUROCUBE__STORE__DURABILITY=flush NEUROCUBE__LOG__LEVEL=warn
# Room for every frame of the walk (about 1 MB each) in the tile cache.
export NEUROCUBE__TILES__CACHE_BYTES=$((2 << 30))

echo "== demo data 1024x1024x$Z"
"$BIN" demo --no-serve --size "1024x1024x$Z" --data-dir "$WORK/data" --port 0 >/dev/null

URL=
start() { # start a fresh neurocube process; $1: prefetch true|false
  local port; port=$(free_port)
  NEUROCUBE__TILES__PREFETCH=$1 "$BIN" serve --port "$port" --data-dir "$WORK/data" >"$WORK/server.out" 2>&1 &
  PIDS+=($!)
  URL="http://127.0.0.1:$port"
  for _ in $(seq 100); do curl -sf "$URL/health" >/dev/null && return; sleep 0.1; done
  echo "neurocube did not start"; cat "$WORK/server.out"; exit 1
}
stop() { kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'; }
walk() { # $1 label, $2 base url, $3 prefix, $4 suffix: wrk for WARM_SECONDS
  local line
  line=$(PREFIX=$3 SUFFIX=$4 Z=$Z wrk -t1 -c6 -d"${WARM_SECONDS}s" --latency -s "$HERE/walk.lua" "$2" | grep '^FRAMES')
  printf '%-34s %s\n' "$1" "$line"
}
cold() { # $1 label, $2 rate (0: flat out): every frame once, 6 connections, z order
  printf '%-34s %s\n' "$1" "$("$WALK" --base "$URL" --prefix "$TILE" --suffix /0/0.png --z "$Z" --once --rate "$2")"
}
metric() { curl -s "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
prefetch_report() {
  local issued used wasted
  issued=$(metric neurocube_tile_prefetch_issued_total)
  used=$(metric neurocube_tile_prefetch_used_total)
  wasted=$(metric neurocube_tile_prefetch_wasted_total)
  echo "   prefetch: issued $issued, used $used ($(python3 -c "print(f'{100*$used/max($issued,1):.0f}%')")), wasted $wasted; hits $(metric neurocube_tile_hits_total), misses $(metric neurocube_tile_misses_total)"
}

TILE=/v1/tiles/demo/image/xy/1024/0/

echo "== cold, prefetch on (fresh process)"
start true
cold "neurocube cold, prefetch" 0
prefetch_report

echo "== frames as static files for nginx"
mkdir -p "$WORK/www"
for z in $(seq 0 $((Z - 1))); do curl -sf -o "$WORK/www/$z.png" "$URL$TILE$z/0/0.png"; done
du -sh "$WORK/www" | awk '{print "   " $1 " of PNG"}'

echo "== warm"
walk "neurocube warm (wrk)" "$URL" "$TILE" /0/0.png
stop

NGINX_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types { image/png png; }
  server { listen 127.0.0.1:$NGINX_PORT; root $WORK/www; }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK"
sleep 0.5
walk "nginx static, same bytes (wrk)" "http://127.0.0.1:$NGINX_PORT" / .png
kill "$(cat "$WORK/nginx.pid")"; rm -f "$WORK/nginx.pid"

echo "== cold, prefetch off (fresh process)"
start false
cold "neurocube cold, no prefetch" 0
stop

echo "== cold, played as a movie at $MOVIE_RATE frames/s (fresh processes)"
start true
cold "neurocube cold movie, prefetch" "$MOVIE_RATE"
prefetch_report
stop
start false
cold "neurocube cold movie, no prefetch" "$MOVIE_RATE"
stop
