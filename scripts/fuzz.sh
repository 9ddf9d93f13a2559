#!/usr/bin/env bash
# The fuzz targets at length (the test command runs them briefly): the
# parsers (crates/neurocube-server/tests/fuzz_parsers.rs), the ingest
# readers (PNG, TIFF, npy: ingest/source.rs) and the whole HTTP
# surface on the real server (tests/api/fuzz.rs), seeded from
# tests/fuzz/corpus.txt. A failure is written to the target's regression
# file (proptest shrinks it first) and replayed by every later run: commit it.
# Usage: scripts/fuzz.sh [parser cases, default 50000] [HTTP requests, default 20000]
set -euo pipefail
cd "$(dirname "$0")/.."
parsers="${1:-50000}"
requests="${2:-20000}"
PROPTEST_CASES="$parsers" cargo test --release --locked -p neurocube-server --test fuzz_parsers
PROPTEST_CASES="$parsers" cargo test --release --locked -p neurocube-server --lib damaged_sources
NEUROCUBE_FUZZ_CASES="$requests" cargo test --release --locked -p neurocube-tests --test api -- fuzz::
