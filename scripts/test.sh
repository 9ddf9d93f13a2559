#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, runs the
# Rust tests (unit, conformance, HTTP integration), and the Python client
# tests against the real binary. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# One build from scratch: incremental caches would only cost disk here.
export CARGO_INCREMENTAL=0

step() { printf '\n==> %s\n' "$*"; }

step "Python packages for the client tests"
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# Our own client, installed as users install it (its tests import this copy);
# pip builds its compiled part (Rust, with maturin from PyPI and cargo).
python3 -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./clients/python

step "Java 17 and Maven for the test Cassandra node"
if ! { [[ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]] && command -v mvn >/dev/null; }; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null
fi

step "NASM, for libjpeg-turbo's SIMD code (the turbojpeg crate builds it from source)"
if ! command -v nasm >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nasm >/dev/null
fi

step "Rust: formatting and lints (cargo fmt --check, clippy -D warnings)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust: the Python client's compiled part (clients/python): formatting, lints, unit tests"
cargo fmt --manifest-path clients/python/Cargo.toml -- --check
cargo clippy --manifest-path clients/python/Cargo.toml --all-targets --features python --locked -- -D warnings
cargo test --manifest-path clients/python/Cargo.toml --locked

step "Rust: build"
cargo build --workspace --all-targets --locked

step "Cassandra: a real node for the Cassandra backend (scripts/cassandra.sh)"
stop_cassandra() {
    scripts/cassandra.sh stop || true
    # The outage test's second node (tests/cassandra), should a failure leave it running.
    CASSANDRA_PORT=9142 CASSANDRA_STORAGE_PORT=7100 \
        CASSANDRA_DATA_DIR="${TMPDIR:-/tmp}/neurocube-cassandra-outage-node" scripts/cassandra.sh stop || true
}
trap stop_cassandra EXIT
scripts/cassandra.sh reset  # fresh data: keyspaces of earlier runs never pile up
scripts/cassandra.sh start
# The store conformance suite and tests/cassandra run on it (they fail in CI without it).
export NEUROCUBE_CASSANDRA=127.0.0.1:9042

step "Rust: unit, conformance (embedded and Cassandra) and HTTP integration tests"
cargo test --workspace --locked

step "Rust: the HTTP integration tests again, on the Cassandra backend"
NEUROCUBE_TEST_BACKEND=cassandra cargo test --locked -p neurocube-tests --test api
stop_cassandra

step "Cassandra: a three-node cluster on 127.0.0.1-3 and its fault tests (scripts/cassandra-cluster.sh)"
stop_cluster() { scripts/cassandra-cluster.sh stop >/dev/null 2>&1 || true; }
trap 'stop_cassandra; stop_cluster' EXIT
scripts/cassandra-cluster.sh reset
scripts/cassandra-cluster.sh start
NEUROCUBE_CASSANDRA_CLUSTER=$(scripts/cassandra-cluster.sh hosts) \
    cargo test --locked -p neurocube-tests --test cassandra_cluster -- --ignored
stop_cluster

step "Python: numpy/blosc, CAVEclient, CloudVolume, TensorStore, intern, and our client against the real server"
NEUROCUBE_BIN=target/debug/neurocube python3 -m pytest -q tests/python clients/python/tests

step "Browser: the viewer page in headless Chromium (Debian's chromium, playwright-core)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
NEUROCUBE_BIN=target/debug/neurocube node --test tests/browser/viewer.test.mjs
NEUROCUBE_BIN=target/debug/neurocube node --test tests/browser/neuroglancer.test.mjs
