#!/usr/bin/env bash
# Runs a real single-node Apache Cassandra 5 on loopback for tests.
#
# Everything comes from Maven Central (cassandra-all and its runtime
# dependencies, fetched once with the machine's `mvn`) and the machine's
# Java 17: no tarball from the Apache download site, no Docker.
#
#   scripts/cassandra.sh start    fetch (first run only), configure, start, wait for CQL
#   scripts/cassandra.sh stop     SIGTERM, wait, SIGKILL after a timeout (idempotent)
#   scripts/cassandra.sh status   print state; exit 0 only when CQL answers
#   scripts/cassandra.sh wait     wait until CQL answers (or the timeout passes)
#   scripts/cassandra.sh reset    stop, then delete the data directory
#   scripts/cassandra.sh fetch    only download the jars into the cache
#   scripts/cassandra.sh env      print the effective settings
#   scripts/cassandra.sh nodetool ARGS...   (needs CASSANDRA_JMX_PORT, see below)
#
# Environment (all optional):
#   NEUROCUBE_CASSANDRA_HOME  cache for jars            (~/.cache/neurocube/cassandra)
#   CASSANDRA_VERSION         cassandra-all version      (5.0.9)
#   CASSANDRA_DATA_DIR        data, logs, conf, pid file ($NEUROCUBE_CASSANDRA_HOME/data)
#   CASSANDRA_PORT            CQL native port            (9042)
#   CASSANDRA_STORAGE_PORT    inter-node port            (7000)
#   CASSANDRA_START_TIMEOUT   seconds to wait for CQL    (180)
#   CASSANDRA_STOP_TIMEOUT    seconds before SIGKILL     (60)
#   CASSANDRA_HEAP_MIN/MAX    JVM heap                   (512m / 1g)
#   CASSANDRA_NUM_TOKENS      vnodes                     (16)
#   CASSANDRA_JMX_PORT        unset = no JMX at all; set = JMX on 127.0.0.1 only
#   CASSANDRA_HOST            loopback address to bind   (127.0.0.1)
#   CASSANDRA_SEEDS           seed list                  (this node: HOST:STORAGE_PORT)
#   CASSANDRA_CLUSTER_RF      replication factor the token allocator plans for (1)
#   CASSANDRA_JAVA_HOME       a Java 11 or 17            (/usr/lib/jvm/java-17-openjdk-amd64)
#   CASSANDRA_MAVEN_REPO      Maven local repository     ($NEUROCUBE_CASSANDRA_HOME/m2)
#   CASSANDRA_JVM_EXTRA_OPTS  extra JVM flags, split on whitespace
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

CASSANDRA_VERSION=${CASSANDRA_VERSION:-5.0.9}
CACHE_DIR=${NEUROCUBE_CASSANDRA_HOME:-$HOME/.cache/neurocube/cassandra}
DATA_DIR=${CASSANDRA_DATA_DIR:-$CACHE_DIR/data}
CQL_PORT=${CASSANDRA_PORT:-9042}
STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-7000}
START_TIMEOUT=${CASSANDRA_START_TIMEOUT:-180}
STOP_TIMEOUT=${CASSANDRA_STOP_TIMEOUT:-60}
HEAP_MIN=${CASSANDRA_HEAP_MIN:-512m}
HEAP_MAX=${CASSANDRA_HEAP_MAX:-1g}
NUM_TOKENS=${CASSANDRA_NUM_TOKENS:-16}
JMX_PORT=${CASSANDRA_JMX_PORT:-}
MAVEN_REPO=${CASSANDRA_MAVEN_REPO:-$CACHE_DIR/m2}
HOST=${CASSANDRA_HOST:-127.0.0.1}
SEEDS=${CASSANDRA_SEEDS:-$HOST:$STORAGE_PORT}
CLUSTER_RF=${CASSANDRA_CLUSTER_RF:-1}

# Paths end up in file:// URLs and in the JVM, which runs in the data dir:
# make them absolute so a relative env var still means what the caller meant.
abspath() { if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
CACHE_DIR=$(abspath "$CACHE_DIR")
DATA_DIR=$(abspath "$DATA_DIR")
MAVEN_REPO=$(abspath "$MAVEN_REPO")

# Jars live per version so that changing CASSANDRA_VERSION never mixes jars.
DIST_DIR=$CACHE_DIR/cassandra-$CASSANDRA_VERSION
LIB_DIR=$DIST_DIR/lib
# Config, logs and the pid file live with the data: two data dirs (with two
# port pairs) can then run side by side without sharing anything.
CONF_DIR=$DATA_DIR/conf
LOG_DIR=$DATA_DIR/logs
PID_FILE=$DATA_DIR/cassandra.pid
SYSTEM_LOG=$LOG_DIR/system.log
OUT_LOG=$LOG_DIR/output.log
YAML=$CONF_DIR/cassandra.yaml

log() { printf '[cassandra] %s\n' "$*" >&2; }
# Wall-clock seconds with sub-second precision (EPOCHREALTIME is bash 5;
# some locales write it with a comma).
now() { local t=${EPOCHREALTIME:-$SECONDS}; echo "${t/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
die() { printf '[cassandra] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Java

find_java() {
    local home=${CASSANDRA_JAVA_HOME:-}
    if [[ -z $home ]]; then
        if [[ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then
            home=/usr/lib/jvm/java-17-openjdk-amd64
        elif [[ -n ${JAVA_HOME:-} ]]; then
            home=$JAVA_HOME
        fi
    fi
    if [[ -n $home ]]; then
        JAVA=$home/bin/java
    else
        JAVA=$(command -v java || true)
    fi
    [[ -n $JAVA && -x $JAVA ]] || die "no java found; install a JDK 17 or set CASSANDRA_JAVA_HOME"
    local version major
    version=$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
    major=${version%%.*}
    # Cassandra 5.0 supports exactly Java 11 and 17; 21+ fails in odd places.
    case $major in
        11|17) ;;
        *) die "$JAVA is Java '$version'; Cassandra 5.0 needs Java 11 or 17 (set CASSANDRA_JAVA_HOME)" ;;
    esac
}

# ---------------------------------------------------------------------------
# Fetch: cassandra-all + runtime dependencies from Maven Central, once.

fetch() {
    if [[ -f $DIST_DIR/.complete ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found; it is needed once to fetch Cassandra from Maven Central"
    mkdir -p "$DIST_DIR"
    # Two concurrent first runs must not both write into lib/.
    exec 8>"$DIST_DIR/.fetch.lock"
    flock 8
    if [[ -f $DIST_DIR/.complete ]]; then
        exec 8>&-
        return 0
    fi
    local t0
    t0=$(now)
    log "fetching org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION and its runtime dependencies from Maven Central into $LIB_DIR (first run only, ~80 MB)"
    cat >"$DIST_DIR/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/cassandra.sh: only used to resolve Cassandra's runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>neurocube</groupId>
  <artifactId>cassandra-test-node</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
    rm -rf "$LIB_DIR.tmp"
    # The plugin version is pinned so the result does not depend on Maven's
    # built-in default; -B/-q keep CI logs short (errors still print). The
    # sed drops the bare colour resets Debian's Maven 3.8 prints even with
    # -B -q; pipefail keeps mvn's exit status.
    if ! mvn -B -q -f "$DIST_DIR/pom.xml" -Dmaven.repo.local="$MAVEN_REPO" \
        org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIB_DIR.tmp" 2>&1 \
        | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
        rm -rf "$LIB_DIR.tmp"
        die "mvn could not fetch cassandra-all:$CASSANDRA_VERSION (is Maven Central reachable?)"
    fi
    [[ -f $LIB_DIR.tmp/cassandra-all-$CASSANDRA_VERSION.jar ]] \
        || die "mvn finished but cassandra-all-$CASSANDRA_VERSION.jar is missing from $LIB_DIR.tmp"
    rm -rf "$LIB_DIR"
    mv "$LIB_DIR.tmp" "$LIB_DIR"
    touch "$DIST_DIR/.complete"
    exec 8>&-
    log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIB_DIR" | cut -f1)) in $(since "$t0") s"
}

# ---------------------------------------------------------------------------
# Config files, rewritten on every start so env changes take effect.

write_config() {
    mkdir -p "$CONF_DIR" "$CONF_DIR/triggers" "$LOG_DIR" "$DATA_DIR/data" \
        "$DATA_DIR/commitlog" "$DATA_DIR/saved_caches" "$DATA_DIR/hints" "$DATA_DIR/cdc_raw"
    cat >"$YAML" <<EOF
# Generated by scripts/cassandra.sh on every start; edits are overwritten.
# A one-node test cluster on loopback: small memory, fast start, no auth.
cluster_name: neurocube-test
num_tokens: $NUM_TOKENS
allocate_tokens_for_local_replication_factor: $CLUSTER_RF
# A node of a fresh test cluster has no data to stream in: join at once.
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch

seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$SEEDS"

# Loopback only: nothing listens on another interface.
listen_address: $HOST
rpc_address: $HOST
storage_port: $STORAGE_PORT
native_transport_port: $CQL_PORT
start_native_transport: true

authenticator: org.apache.cassandra.auth.AllowAllAuthenticator
authorizer: org.apache.cassandra.auth.AllowAllAuthorizer
role_manager: org.apache.cassandra.auth.CassandraRoleManager
network_authorizer: org.apache.cassandra.auth.AllowAllNetworkAuthorizer

data_file_directories:
  - $DATA_DIR/data
commitlog_directory: $DATA_DIR/commitlog
saved_caches_directory: $DATA_DIR/saved_caches
hints_directory: $DATA_DIR/hints
cdc_raw_directory: $DATA_DIR/cdc_raw

commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB
commitlog_total_space: 512MiB

# Small memory: the node shares a 2-core machine with builds and tests.
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
counter_cache_size: 8MiB
file_cache_size: 64MiB
concurrent_reads: 16
concurrent_writes: 16
concurrent_counter_writes: 8
concurrent_compactors: 1

# Tests drop and truncate tables all the time; snapshots would only cost
# time and disk. With one node there is nobody to hint for.
auto_snapshot: false
snapshot_before_compaction: false
hinted_handoff_enabled: false

disk_failure_policy: stop
commit_failure_policy: stop
EOF

    # Cassandra's own logback.xml lives in the tarball's conf/, not in the
    # jar; without one logback would print DEBUG noise to stdout.
    cat >"$CONF_DIR/logback.xml" <<EOF
<!-- Generated by scripts/cassandra.sh. -->
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>$SYSTEM_LOG</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>$LOG_DIR/system.log.%i.zip</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
EOF
    # For `nodetool`: warnings only, to stderr, never into the node's log.
    cat >"$CONF_DIR/logback-tools.xml" <<'EOF'
<configuration scan="false">
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
EOF
}

# ---------------------------------------------------------------------------
# JVM flags.

# The module-system flags of the distribution's conf/jvm17-server.options
# (that file is in the tarball, not in the jar). Without them Java 17 stops
# the node at startup: java.base/sun.nio.ch, jdk.internal.ref and java.io
# are needed before CQL comes up (FileUtils, the commit log); the rest serve
# code paths tests may reach later (Netty/Chronicle internals, UDF
# compilation, JMX/nodetool), so the whole list is kept as shipped.
JPMS_OPTS=(
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
)

jvm_opts() {
    JVM_OPTS=(
        "-Xms$HEAP_MIN" "-Xmx$HEAP_MAX"
        -Xss256k
        # From the distribution's jvm-server.options.
        -ea -da:net.openhft...
        -XX:+UseThreadPriorities
        -XX:+ExitOnOutOfMemoryError
        "-XX:ErrorFile=$LOG_DIR/hs_err_pid%p.log"
        -XX:+UseTLAB -XX:+ResizeTLAB
        -XX:+PerfDisableSharedMem
        -Djava.net.preferIPv4Stack=true
        # GC settings from the distribution's jvm17-server.options.
        -XX:+UseG1GC
        -XX:+ParallelRefProcEnabled
        -XX:MaxTenuringThreshold=1
        -XX:MaxGCPauseMillis=300
        -XX:InitiatingHeapOccupancyPercent=70
        "${JPMS_OPTS[@]}"
        -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true
        -Dio.netty.allocator.maxOrder=11
        # Where Cassandra finds its config, logs and triggers.
        "-Dcassandra.config=file://$YAML"
        "-Dlogback.configurationFile=file://$CONF_DIR/logback.xml"
        "-Dcassandra.logdir=$LOG_DIR"
        "-Dcassandra.storagedir=$DATA_DIR"
        "-Dcassandra.triggers_dir=$CONF_DIR/triggers"
        # Keep stdout/stderr open (they go to output.log): a crash after
        # startup is then still visible there.
        -Dcassandra-foreground=yes
        # One node, its own seed: nothing to gossip with, nothing to wait for.
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.ring_delay_ms=1000
        # Nobody to tell about our shutdown: skip the 2 s announce sleep.
        -Dcassandra.shutdown_announce_in_ms=0
        # Test data: no fsync for system keyspace writes (schema changes,
        # local state), as Cassandra's own test setups do.
        -Dcassandra.unsafesystem=true
    )
    # jamm measures object sizes for memtable accounting; the distribution
    # loads it as an agent and it is in our lib/ as a dependency.
    local jamm
    jamm=$(find "$LIB_DIR" -maxdepth 1 -name 'jamm-*.jar' | head -n 1)
    if [[ -n $jamm ]]; then
        JVM_OPTS+=("-javaagent:$jamm")
    fi
    # No JMX unless asked for: without cassandra.jmx.local.port the daemon
    # starts no JMX/RMI listener at all. When asked, local-only.
    if [[ -n $JMX_PORT ]]; then
        JVM_OPTS+=("-Dcassandra.jmx.local.port=$JMX_PORT"
            "-Dcom.sun.management.jmxremote.rmi.port=$JMX_PORT"
            -Djava.rmi.server.hostname=127.0.0.1)
    fi
    if [[ -n ${CASSANDRA_JVM_EXTRA_OPTS:-} ]]; then
        local -a extra
        read -r -a extra <<<"$CASSANDRA_JVM_EXTRA_OPTS"
        JVM_OPTS+=("${extra[@]}")
    fi
}

# ---------------------------------------------------------------------------
# Process and readiness checks.

# Prints the pid of *our* node (the one using this data dir's yaml), if any.
# The pid file is checked against /proc so a reused pid is never taken for
# Cassandra; a lost pid file falls back to scanning for our unique yaml path.
node_pid() {
    local pid
    if [[ -f $PID_FILE ]]; then
        pid=$(<"$PID_FILE")
        if [[ $pid =~ ^[0-9]+$ ]] && is_our_node "$pid"; then
            echo "$pid"
            return 0
        fi
    fi
    local dir
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        if is_our_node "$pid"; then
            echo "$pid" >"$PID_FILE"
            echo "$pid"
            return 0
        fi
    done
    return 1
}

is_our_node() {
    local cmdline
    # Braces so that a vanished /proc entry's redirect error is silenced too.
    cmdline=$({ tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null) || return 1
    [[ $cmdline == *"-Dcassandra.config=file://$YAML "* ]]
}

tcp_open() {
    # A bash /dev/tcp connect in a subshell; timeout guards against a hang.
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# True when the node answers a real CQL handshake and query. Without
# python3, fall back to an open port plus the log line Cassandra prints once
# the native transport accepts clients.
cql_ready() {
    if command -v python3 >/dev/null; then
        python3 "$SCRIPT_DIR/cql_probe.py" --host "$HOST" --port "$CQL_PORT" --timeout 3 --quiet
    else
        tcp_open "$CQL_PORT" && grep -q "Starting listening for CQL clients" "$SYSTEM_LOG" 2>/dev/null
    fi
}

# system.log is appended to across runs; remember where this run begins so
# a failure shows this run's lines, not the previous shutdown's.
LOG_START_LINE=0

print_log_tail() {
    if [[ -s $OUT_LOG ]]; then
        log "---- last lines of $OUT_LOG ----"
        tail -n 20 "$OUT_LOG" >&2
    fi
    local total
    total=$({ wc -l <"$SYSTEM_LOG"; } 2>/dev/null || echo 0)
    if ((total > LOG_START_LINE)); then
        log "---- last lines of $SYSTEM_LOG (this run) ----"
        # Stack frames are dropped so the 40 lines hold the actual messages.
        tail -n "+$((LOG_START_LINE + 1))" "$SYSTEM_LOG" | { grep -v '^\s*at ' || true; } | tail -n 40 >&2
    fi
}

# Waits until CQL answers; fails early if our process dies.
wait_for_cql() {
    local deadline=$((SECONDS + START_TIMEOUT)) pid=${1:-}
    while ! cql_ready; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            print_log_tail
            die "Cassandra (pid $pid) exited during startup; see $SYSTEM_LOG and $OUT_LOG"
        fi
        if ((SECONDS >= deadline)); then
            print_log_tail
            die "CQL did not answer on $HOST:$CQL_PORT within $START_TIMEOUT s (CASSANDRA_START_TIMEOUT)${pid:+; pid $pid is left running, end it with \"$0 stop\"}; see $SYSTEM_LOG"
        fi
        sleep 1
    done
}

# ---------------------------------------------------------------------------
# Commands.

cmd_start() {
    local t0 pid
    t0=$(now)
    mkdir -p "$DATA_DIR"
    # Serialise concurrent starts/stops on one data dir (parallel test jobs).
    exec 9>"$DATA_DIR/.lock"
    flock 9

    if pid=$(node_pid); then
        if cql_ready; then
            log "already running (pid $pid), CQL on $HOST:$CQL_PORT"
            return 0
        fi
        log "already starting (pid $pid); waiting for CQL on $HOST:$CQL_PORT"
        wait_for_cql "$pid"
        log "ready after $(since "$t0") s (pid $pid)"
        return 0
    fi
    rm -f "$PID_FILE"

    # Someone else's node on our port is fine for tests; anything else on
    # the port would make Cassandra fail with a bind error much later.
    if tcp_open "$CQL_PORT"; then
        if cql_ready; then
            log "a CQL server not started from $DATA_DIR already answers on $HOST:$CQL_PORT; using it"
            return 0
        fi
        die "port $CQL_PORT is taken by something that does not speak CQL; set CASSANDRA_PORT"
    fi
    if tcp_open "$STORAGE_PORT"; then
        die "storage port $STORAGE_PORT is taken; set CASSANDRA_STORAGE_PORT"
    fi

    find_java
    fetch
    write_config
    jvm_opts

    log "starting Cassandra $CASSANDRA_VERSION on $HOST:$CQL_PORT (data in $DATA_DIR)"
    # setsid detaches the node from this shell's session and process group,
    # so a Ctrl-C or a harness killing the caller's group does not take it
    # down half-written; `stop` is the way to end it. Run from a script
    # (no job control) setsid execs in place, so $! is the JVM's pid.
    # The lock fd is closed for the JVM: it would otherwise inherit the flock
    # and hold it for its whole life, blocking every later start/stop.
    : >"$OUT_LOG"
    LOG_START_LINE=$({ wc -l <"$SYSTEM_LOG"; } 2>/dev/null || echo 0)
    # The JVM runs in the data dir so nothing it writes lands in the
    # caller's working directory (the subshell execs, so $! stays the JVM).
    (cd "$DATA_DIR" && exec setsid "$JAVA" "${JVM_OPTS[@]}" -cp "$LIB_DIR/*" \
        org.apache.cassandra.service.CassandraDaemon \
        </dev/null >>"$OUT_LOG" 2>&1 8>&- 9>&-) &
    pid=$!
    echo "$pid" >"$PID_FILE"

    wait_for_cql "$pid"
    log "started in $(since "$t0") s (pid $pid, CQL on $HOST:$CQL_PORT, logs in $LOG_DIR)"
}

cmd_stop() {
    local pid
    mkdir -p "$DATA_DIR"
    exec 9>"$DATA_DIR/.lock"
    flock 9
    if ! pid=$(node_pid); then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    local t0
    t0=$(now)
    log "stopping pid $pid (SIGTERM; SIGKILL after $STOP_TIMEOUT s)"
    # SIGTERM runs Cassandra's shutdown hook, which drains memtables and the
    # commit log, so the next start has nothing to replay.
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "still alive after $STOP_TIMEOUT s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    log "stopped in $(since "$t0") s"
}

cmd_status() {
    local pid
    if pid=$(node_pid); then
        if cql_ready; then
            local version=""
            if command -v python3 >/dev/null; then
                version=$(python3 "$SCRIPT_DIR/cql_probe.py" --host "$HOST" --port "$CQL_PORT" 2>/dev/null \
                    | sed -n 's/.*release_version=//p')
            fi
            echo "running: pid $pid, CQL answering on $HOST:$CQL_PORT${version:+, Cassandra $version}, data in $DATA_DIR"
            return 0
        fi
        echo "starting: pid $pid is alive but CQL does not answer on $HOST:$CQL_PORT yet"
        return 1
    fi
    echo "stopped: no Cassandra running from $DATA_DIR"
    return 1
}

cmd_wait() {
    local t0 pid=""
    t0=$(now)
    pid=$(node_pid) || pid=""
    if [[ -z $pid ]] && ! tcp_open "$CQL_PORT"; then
        log "no node running from $DATA_DIR; waiting for anything to answer CQL on $HOST:$CQL_PORT"
    fi
    wait_for_cql "$pid"
    log "CQL answers on $HOST:$CQL_PORT (waited $(since "$t0") s)"
}

cmd_reset() {
    cmd_stop
    # Guard against deleting something unexpected through a bad env var.
    [[ -n $DATA_DIR && $DATA_DIR != / && $DATA_DIR != "$HOME" ]] || die "refusing to delete '$DATA_DIR'"
    rm -rf "$DATA_DIR"
    log "deleted $DATA_DIR"
}

# nodetool talks JMX, so it only works when the node was started with
# CASSANDRA_JMX_PORT set. Useful for flush, tablestats, compactionstats.
cmd_nodetool() {
    [[ -n $JMX_PORT ]] || die "nodetool needs JMX: start the node with CASSANDRA_JMX_PORT=7199 (loopback only) and pass the same here"
    [[ -f $DIST_DIR/.complete ]] || die "Cassandra $CASSANDRA_VERSION is not fetched yet; run '$0 start' first"
    find_java
    "$JAVA" -Xmx256m "${JPMS_OPTS[@]}" "-Dlogback.configurationFile=file://$CONF_DIR/logback-tools.xml" \
        -cp "$LIB_DIR/*" org.apache.cassandra.tools.NodeTool -h "$HOST" -p "$JMX_PORT" "$@"
}

cmd_env() {
    cat <<EOF
CASSANDRA_VERSION=$CASSANDRA_VERSION
NEUROCUBE_CASSANDRA_HOME=$CACHE_DIR
CASSANDRA_DATA_DIR=$DATA_DIR
CASSANDRA_PORT=$CQL_PORT
CASSANDRA_STORAGE_PORT=$STORAGE_PORT
CASSANDRA_START_TIMEOUT=$START_TIMEOUT
CASSANDRA_STOP_TIMEOUT=$STOP_TIMEOUT
CASSANDRA_HEAP_MIN=$HEAP_MIN
CASSANDRA_HEAP_MAX=$HEAP_MAX
CASSANDRA_NUM_TOKENS=$NUM_TOKENS
CASSANDRA_JMX_PORT=$JMX_PORT
CASSANDRA_MAVEN_REPO=$MAVEN_REPO
lib=$LIB_DIR
log=$SYSTEM_LOG
EOF
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

main() {
    local cmd=${1:-}
    case $cmd in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        wait) cmd_wait ;;
        reset) cmd_reset ;;
        fetch) find_java; fetch ;;
        nodetool) shift; cmd_nodetool "$@" ;;
        env) cmd_env ;;
        -h|--help|help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
