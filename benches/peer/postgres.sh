#!/usr/bin/env bash
# A throwaway PostgreSQL 15 + PostGIS cluster for the annotation benches:
# installs Debian's packages if missing, initializes a cluster in DIR owned
# by the postgres user, and starts it on 127.0.0.1:PORT (trust auth).
# Usage: benches/peer/postgres.sh start|stop DIR PORT
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data dir}; port=${3:-55432}
bin=/usr/lib/postgresql/15/bin
if [ ! -x "$bin/postgres" ] || [ ! -f /usr/share/postgresql/15/extension/postgis.control ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-15-postgis-3 >/dev/null
fi
case "$cmd" in
  start)
    mkdir -p "$dir"; chown postgres "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      su postgres -c "$bin/initdb -D '$dir' -A trust -U postgres" >/dev/null
      cat >> "$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
shared_buffers = 2GB
work_mem = 64MB
maintenance_work_mem = 1GB
max_wal_size = 8GB
max_connections = 200
# Durable commits, as neurocube's fsync default: the comparison is fair.
fsync = on
synchronous_commit = on
CONF
    fi
    su postgres -c "$bin/pg_ctl -D '$dir' -l '$dir/log' -w start" >/dev/null
    echo "postgres on 127.0.0.1:$port"
    ;;
  stop)
    su postgres -c "$bin/pg_ctl -D '$dir' -m fast -w stop" >/dev/null || true
    ;;
esac
