#!/usr/bin/env bash
# A three-node Apache Cassandra cluster on 127.0.0.1, 127.0.0.2 and
# 127.0.0.3 (the usual ports on each address), built from
# scripts/cassandra.sh: same jars, one data directory per node.
#
#   scripts/cassandra-cluster.sh start          start the nodes one after another
#   scripts/cassandra-cluster.sh stop           stop every node
#   scripts/cassandra-cluster.sh reset          stop, then delete every node's data
#   scripts/cassandra-cluster.sh stop-node N    stop node N (1..3)
#   scripts/cassandra-cluster.sh start-node N   start node N again
#   scripts/cassandra-cluster.sh status         each node's state
#   scripts/cassandra-cluster.sh hosts          the CQL contact points, comma-separated
#
# Environment: NEUROCUBE_CASSANDRA_HOME (jar cache, as cassandra.sh),
# CASSANDRA_CLUSTER_DIR (data, default $NEUROCUBE_CASSANDRA_HOME/cluster),
# CASSANDRA_HEAP_MAX per node (default 768m).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR=${NEUROCUBE_CASSANDRA_HOME:-$HOME/.cache/neurocube/cassandra}
CLUSTER_DIR=${CASSANDRA_CLUSTER_DIR:-$CACHE_DIR/cluster}
NODES=(1 2 3)

node() {
    local n=$1
    shift
    CASSANDRA_HOST="127.0.0.$n" \
        CASSANDRA_SEEDS="127.0.0.1:7000" \
        CASSANDRA_CLUSTER_RF=3 \
        CASSANDRA_PORT=9042 CASSANDRA_STORAGE_PORT=7000 \
        CASSANDRA_HEAP_MIN=256m CASSANDRA_HEAP_MAX="${CASSANDRA_HEAP_MAX:-768m}" \
        CASSANDRA_DATA_DIR="$CLUSTER_DIR/node$n" \
        "$SCRIPT_DIR/cassandra.sh" "$@"
}

check_node() {
    [[ ${1:-} =~ ^[123]$ ]] || { echo "node must be 1, 2 or 3, not '${1:-}'" >&2; exit 2; }
}

case ${1:-} in
    start) for n in "${NODES[@]}"; do node "$n" start; done ;;
    stop) for n in 3 2 1; do node "$n" stop || true; done ;;
    reset) for n in 3 2 1; do node "$n" reset || true; done ;;
    stop-node) check_node "${2:-}"; node "$2" stop ;;
    start-node) check_node "${2:-}"; node "$2" start ;;
    status) for n in "${NODES[@]}"; do echo -n "node $n: "; node "$n" status || true; done ;;
    hosts) echo "127.0.0.1:9042,127.0.0.2:9042,127.0.0.3:9042" ;;
    *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
