#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, runs the
# Rust tests (unit, conformance, HTTP integration), and the Python client
# tests against the real binary. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Python packages for the client tests"
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

step "Rust: build"
cargo build --workspace --all-targets --locked

step "Rust: unit, conformance and HTTP integration tests"
cargo test --workspace --locked

step "Python: numpy/blosc client against the real server"
NEUROCUBE_BIN=target/debug/neurocube python3 -m pytest -q tests/python
