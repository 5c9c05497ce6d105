#!/usr/bin/env bash
# A Quarry cluster on this machine, as separate processes on loopback: three
# coordinators (one raft group) and three workers, every connection on mutual
# TLS, a Prometheus /metrics endpoint on every node. For trying a real
# multi-process deployment, for dashboards, and for tests.
#
#   deploy/local-cluster.sh                    # until Ctrl-C; state in a fresh temp dir
#   deploy/local-cluster.sh --dir ./qc --detach
#   deploy/local-cluster.sh --stop --dir ./qc
#
# What it does, all under the base directory (--dir):
#   pki/          a CA and certificates (`quarry certs`): coordinators 1-3,
#                 workers worker-1..3, callers admin:ops and hunter:alice
#   scenario/     `quarry dev scenario` logs (a small company's week with
#                 three planted intrusions), unless --logs is given
#   worker-N/     each worker's shards: the log files ingested with
#                 `quarry worker ingest`, spread over the workers, labelled
#                 env=local (only when the worker has no shards yet)
#   coordinator-N/  each coordinator's RocksDB
#   logs/         every process's log (stdout and stderr)
#   run/          pid files
#   client.env    `source` it: QUARRY_COORDINATOR and QUARRY_TLS_* for the
#                 quarry client commands (as admin:ops)
#   prometheus.yml  a scrape configuration for every node's /metrics
#   cluster.txt   what is printed once the cluster is ready
# It waits until the group has a leader, every worker is live and every
# shard is registered, uploads the shipped hunt modules not uploaded yet, and
# only then prints "ready" and how to reach everything. Running it again on
# the same --dir restarts the cluster on its existing state. A quarry without
# --metrics-listen runs with metrics off (the script says so).
#
# Ports (--base-port B, default 7700): coordinator N serves gRPC on B+N and
# metrics on B+20+N; worker N gRPC on B+10+N and metrics on B+30+N.
#
# The quarry binary: $QUARRY, else `quarry` on PATH, else built from this
# checkout with cargo. The shipped modules are the .wasm files that building
# quarry leaves in <cargo target dir>/hunt-modules/wasm32-wasip2/release
# (found from the binary's path, $CARGO_TARGET_DIR or ./target), or --modules DIR.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODES=3

usage() {
  cat <<'EOF'
Usage: deploy/local-cluster.sh [OPTIONS]
       deploy/local-cluster.sh --stop [--dir DIR]

Starts 3 coordinators and 3 workers (quarry processes) on 127.0.0.1 with TLS
and metrics on, waits until they are ready and prints how to reach them.

Options:
  --dir DIR            base directory of all state and logs (default: a fresh
                       temp dir; an existing one is reused: same certificates,
                       shards and raft state)
  --base-port N        coordinators on N+1..N+3, workers on N+11..N+13,
                       metrics on N+21..N+23 and N+31..N+33 (default 7700)
  --detach             exit once ready, leaving the cluster running (stop it
                       with --stop --dir DIR); default: run until Ctrl-C
  --stop               stop the cluster of --dir (default: the last one this
                       script started): SIGTERM, then SIGKILL after 60 s
  --logs PATH          log file or directory to ingest (repeatable; every file
                       becomes a shard, round-robin over the workers) instead
                       of the generated scenario data
  --noise-percent N    routine background of the generated scenario data,
                       in percent of `quarry dev scenario`'s default (default 5)
  --modules DIR        directory of module .wasm files to upload (default: the
                       shipped modules built with quarry)
  --module NAME        upload only this shipped module (repeatable)
  --slots N            task slots per worker (default 4)
  --timeout SECONDS    how long to wait for the cluster to be ready (default 120)
  -h, --help           this help

Environment: QUARRY (the binary), QUARRY_LOG (the servers' log filter,
default info).
EOF
}

die() {
  echo "local-cluster: $*" >&2
  exit 1
}
say() { echo "local-cluster: $*" >&2; }

DIR=""
BASE_PORT=7700
DETACH=0
STOP=0
LOGS=()
NOISE=5
MODULES_DIR=""
ONLY_MODULES=()
TIMEOUT=120
SLOTS=4
while (($#)); do
  case "$1" in
  --dir) DIR="${2:?--dir needs a directory}"; shift 2 ;;
  --base-port) BASE_PORT="${2:?--base-port needs a port}"; shift 2 ;;
  --detach) DETACH=1; shift ;;
  --stop) STOP=1; shift ;;
  --logs) LOGS+=("${2:?--logs needs a path}"); shift 2 ;;
  --noise-percent) NOISE="${2:?--noise-percent needs a number}"; shift 2 ;;
  --modules) MODULES_DIR="${2:?--modules needs a directory}"; shift 2 ;;
  --module) ONLY_MODULES+=("${2:?--module needs a name}"); shift 2 ;;
  --timeout) TIMEOUT="${2:?--timeout needs seconds}"; shift 2 ;;
  --slots) SLOTS="${2:?--slots needs a number}"; shift 2 ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "unknown argument: $1" ;;
  esac
done
if ! [[ "$BASE_PORT" =~ ^[0-9]+$ ]] || ((BASE_PORT < 1024 || BASE_PORT > 65500)); then
  die "--base-port must be a number from 1024 to 65500"
fi
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[[ "$NOISE" =~ ^[0-9]+$ ]] || die "--noise-percent must be a number"
[[ "$SLOTS" =~ ^[1-9][0-9]*$ ]] || die "--slots must be a number from 1"

LAST="${TMPDIR:-/tmp}/quarry-local-cluster.last"

# --- processes -----------------------------------------------------------------

# Whether process $1 runs (a zombie that nobody reaped yet does not).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(sed -n 's/^[0-9]* ([^)]*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
  [ "$state" != Z ]
}

# The pid in pid file $1, if that process still runs as a node of the
# cluster in $DIR (not some other process that got the pid since).
pid_of() {
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--data-dir $DIR/" || return 1
  fi
  echo "$pid"
}

# SIGTERM to every process of the cluster in $1 (workers first), then wait
# for them to exit; SIGKILL whatever is left after 60 s (a worker drains its
# running tasks for up to its --shutdown-grace, 30 s by default).
stop_cluster() {
  local run="$1/run" pids=() names=() pid file i
  [ -d "$run" ] || return 0
  touch "$run/stopping"
  for file in "$run"/worker-*.pid "$run"/coordinator-*.pid; do
    [ -e "$file" ] || continue
    if pid="$(pid_of "$file")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$(basename "$file" .pid)")
    fi
  done
  ((${#pids[@]})) || return 0
  say "stopping ${names[*]} (SIGTERM)"
  for ((i = 0; i < 600; i++)); do
    local left=0
    for pid in "${pids[@]}"; do
      if alive "$pid"; then left=1; fi
    done
    ((left)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then
      say "process $pid did not stop within 60 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  say "stopped"
}

if ((STOP)); then
  if [ -z "$DIR" ]; then
    [ -r "$LAST" ] || die "no --dir given and no cluster started before ($LAST)"
    DIR="$(cat "$LAST")"
  fi
  [ -d "$DIR/run" ] || die "$DIR has no cluster (no $DIR/run)"
  DIR="$(cd "$DIR" && pwd)"
  stop_cluster "$DIR"
  exit 0
fi

# --- the binary and the modules ------------------------------------------------

if [ -n "${QUARRY:-}" ]; then
  [ -x "$QUARRY" ] || QUARRY="$(command -v "$QUARRY" || true)"
  if [ -z "$QUARRY" ] || [ ! -x "$QUARRY" ]; then die "QUARRY is not an executable"; fi
elif command -v quarry >/dev/null; then
  QUARRY="$(command -v quarry)"
else
  command -v cargo >/dev/null || die "no quarry binary: set QUARRY, put quarry on PATH, or install cargo"
  say "building quarry (cargo build -p quarry-cli --bin quarry)"
  (cd "$REPO" && cargo build -p quarry-cli --bin quarry) >&2
  target="${CARGO_TARGET_DIR:-}"
  if [ -z "$target" ]; then
    target="$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
      sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  fi
  QUARRY="$target/debug/quarry"
  [ -x "$QUARRY" ] || die "cargo built no $QUARRY"
fi
QUARRY="$(cd "$(dirname "$QUARRY")" && pwd)/$(basename "$QUARRY")"

if [ -z "$MODULES_DIR" ]; then
  bin_dir="$(dirname "$(readlink -f "$QUARRY" 2>/dev/null || echo "$QUARRY")")"
  for candidate in "$bin_dir/.." "${CARGO_TARGET_DIR:-}" "$REPO/target"; do
    [ -n "$candidate" ] || continue
    candidate="$candidate/hunt-modules/wasm32-wasip2/release"
    if [ -e "$candidate/bruteforce.wasm" ]; then
      MODULES_DIR="$(cd "$candidate" && pwd)"
      break
    fi
  done
fi

# --metrics-listen, on the binaries that have it.
metrics_flag() {
  "$QUARRY" "$1" --help 2>/dev/null | grep -q -- '--metrics-listen'
}

# --- layout --------------------------------------------------------------------

if [ -z "$DIR" ]; then
  DIR="$(mktemp -d "${TMPDIR:-/tmp}/quarry-local-cluster.XXXXXX")"
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PKI="$DIR/pki"
RUN="$DIR/run"
LOGDIR="$DIR/logs"
mkdir -p "$RUN" "$LOGDIR"
for file in "$RUN"/*.pid; do
  [ -e "$file" ] || continue
  if pid="$(pid_of "$file")"; then
    die "a cluster already runs in $DIR ($(basename "$file" .pid) is pid $pid); stop it with: $0 --stop --dir $DIR"
  fi
done
rm -f "$RUN"/*.pid "$RUN/stopping"
echo "$DIR" >"$LAST"

coord_port() { echo $((BASE_PORT + $1)); }
worker_port() { echo $((BASE_PORT + 10 + $1)); }
coord_metrics() { echo $((BASE_PORT + 20 + $1)); }
worker_metrics() { echo $((BASE_PORT + 30 + $1)); }
coord_url() { echo "https://127.0.0.1:$(coord_port "$1")"; }

for ((n = 1; n <= NODES; n++)); do
  for port in "$(coord_port "$n")" "$(worker_port "$n")" "$(coord_metrics "$n")" "$(worker_metrics "$n")"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port on 127.0.0.1 is in use; choose another --base-port"
    fi
  done
done

# Everything started from here on is stopped when this script ends, unless
# it detached.
KEEP=0
on_exit() {
  local code=$?
  ((KEEP)) || stop_cluster "$DIR"
  exit "$code"
}
trap on_exit EXIT
trap 'say "interrupted"; exit 130' INT
trap 'exit 143' TERM

# --- certificates ----------------------------------------------------------------

if [ ! -e "$PKI/ca.pem" ]; then
  say "certificates in $PKI"
  {
    "$QUARRY" certs init --dir "$PKI"
    for ((n = 1; n <= NODES; n++)); do
      "$QUARRY" certs issue --dir "$PKI" --role coordinator --name "$n" --host 127.0.0.1 --host localhost
      "$QUARRY" certs issue --dir "$PKI" --role worker --name "worker-$n" --host 127.0.0.1 --host localhost
    done
    "$QUARRY" certs issue --dir "$PKI" --role admin --name ops
    "$QUARRY" certs issue --dir "$PKI" --role hunter --name alice
  } >>"$LOGDIR/setup.log" 2>&1 || die "quarry certs failed; see $LOGDIR/setup.log"
fi
# The TLS flags of party $1 (`coordinator-1`, `worker-worker-1`, `admin-ops`).
tls_flags() {
  TLS=(--tls-ca "$PKI/ca.pem" --tls-cert "$PKI/$1.pem" --tls-key "$PKI/$1.key")
}

# --- shards ------------------------------------------------------------------------

# Lowercase letters, digits, `.`, `_`, `-`: a shard name from a path.
shard_name() {
  echo "$1" | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9._-]/-/g; s/--*/-/g; s/^[-.]*//'
}

# Ingests file $2 into worker $1's data directory as shard $3, with labels
# $4...; a file that does not ingest (say, of no format quarry reads) is
# skipped with a warning.
ingest() {
  local worker="$1" file="$2" shard="$3"
  shift 3
  local labels=(--label env=local)
  local label
  for label in "$@"; do labels+=(--label "$label"); done
  if ! "$QUARRY" worker ingest --data-dir "$DIR/worker-$worker" --shard "$shard" "${labels[@]}" "$file" \
    >>"$LOGDIR/ingest-worker-$worker.log" 2>&1; then
    say "warning: $file did not ingest (skipped); see $LOGDIR/ingest-worker-$worker.log"
  fi
}

needs_shards=0
for ((n = 1; n <= NODES; n++)); do
  [ -d "$DIR/worker-$n/shards" ] && [ -n "$(ls -A "$DIR/worker-$n/shards" 2>/dev/null)" ] || needs_shards=1
done
if ((needs_shards)); then
  # One line per shard: worker, file, shard name, labels.
  plan=()
  i=0
  if ((${#LOGS[@]})); then
    for path in "${LOGS[@]}"; do
      [ -e "$path" ] || die "--logs $path does not exist"
      path="$(cd "$(dirname "$path")" && pwd)/$(basename "$path")"
      while IFS= read -r file; do
        # The shard is named after the file's path below the directory given.
        relative="${file#"$(dirname "$path")"/}"
        plan+=("$((i % NODES + 1))|$file|$(shard_name "$relative")|source=file")
        i=$((i + 1))
      done < <(find "$path" -type f ! -name '.*' ! -name '*.yaml' ! -name '*.yml' ! -name '*.md' ! -name '*.txt' | sort)
    done
  else
    SCENARIO="$DIR/scenario"
    if [ ! -e "$SCENARIO/manifest.json" ]; then
      say "generating scenario logs in $SCENARIO (quarry dev scenario --noise-percent $NOISE)"
      "$QUARRY" dev scenario --out "$SCENARIO" --noise-percent "$NOISE" >>"$LOGDIR/setup.log" 2>&1 ||
        die "quarry dev scenario failed; see $LOGDIR/setup.log"
    fi
    for file in "$SCENARIO"/windows/*/*.jsonl; do
      host="$(basename "$(dirname "$file")" | tr '[:upper:]' '[:lower:]')"
      source="$(basename "$file" .jsonl)"
      plan+=("$((i % NODES + 1))|$file|win-$host-$source|os=windows|host=$host|source=$source")
      i=$((i + 1))
    done
    for file in "$SCENARIO"/linux/*/auth.log; do
      host="$(basename "$(dirname "$file")")"
      plan+=("$((i % NODES + 1))|$file|lnx-$host-auth|os=linux|host=$host|source=auth")
      i=$((i + 1))
    done
    for file in "$SCENARIO"/zeek/*.log; do
      source="$(basename "$file" .log)"
      plan+=("$((i % NODES + 1))|$file|zeek-$source|os=network|source=zeek-$source")
      i=$((i + 1))
    done
  fi
  ((${#plan[@]})) || die "no log files to ingest"
  say "ingesting ${#plan[@]} shards into $NODES workers (logs/ingest-worker-N.log)"
  ingest_pids=()
  for ((n = 1; n <= NODES; n++)); do
    if [ -d "$DIR/worker-$n/shards" ] && [ -n "$(ls -A "$DIR/worker-$n/shards" 2>/dev/null)" ]; then
      continue
    fi
    (
      for entry in "${plan[@]}"; do
        IFS='|' read -r -a fields <<<"$entry"
        [ "${fields[0]}" = "$n" ] || continue
        ingest "${fields[@]}"
      done
    ) &
    ingest_pids+=($!)
  done
  for pid in "${ingest_pids[@]}"; do
    wait "$pid" || die "ingest failed"
  done
fi

# --- processes -----------------------------------------------------------------------

LOG_FILTER="${QUARRY_LOG:-info}"
COORD_METRICS=0
WORKER_METRICS=0
if metrics_flag coordinator; then COORD_METRICS=1; fi
if metrics_flag worker; then WORKER_METRICS=1; fi
if ((!COORD_METRICS || !WORKER_METRICS)); then
  say "warning: this quarry has no --metrics-listen (coordinator: $COORD_METRICS, worker: $WORKER_METRICS); metrics stay off"
fi
if ((DETACH)); then
  # Survive the terminal that started them.
  trap '' HUP
fi

# Starts `quarry ARGS...` in the background as process $1, logging to logs/$1.log.
spawn() {
  local name="$1"
  shift
  env -u QUARRY_CONFIG -u QUARRY_JOIN -u QUARRY_PEER -u QUARRY_METRICS_LISTEN \
    "$QUARRY" "$@" --log "$LOG_FILTER" </dev/null >>"$LOGDIR/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

for ((n = 1; n <= NODES; n++)); do
  args=(coordinator --node-id "$n" --listen "127.0.0.1:$(coord_port "$n")"
    --advertise-url "$(coord_url "$n")" --data-dir "$DIR/coordinator-$n")
  tls_flags "coordinator-$n"
  args+=("${TLS[@]}")
  for ((p = 1; p <= NODES; p++)); do
    ((p == n)) || args+=(--peer "$p=$(coord_url "$p")")
  done
  if ((COORD_METRICS)); then args+=(--metrics-listen "127.0.0.1:$(coord_metrics "$n")"); fi
  spawn "coordinator-$n" "${args[@]}"
done
COORDINATORS="$(coord_url 1),$(coord_url 2),$(coord_url 3)"
for ((n = 1; n <= NODES; n++)); do
  args=(worker --id "worker-$n" --data-dir "$DIR/worker-$n" --coordinator "$COORDINATORS"
    --listen "127.0.0.1:$(worker_port "$n")" --slots "$SLOTS")
  tls_flags "worker-worker-$n"
  args+=("${TLS[@]}")
  if ((WORKER_METRICS)); then args+=(--metrics-listen "127.0.0.1:$(worker_metrics "$n")"); fi
  spawn "worker-$n" "${args[@]}"
done

cat >"$DIR/client.env" <<EOF
# source $DIR/client.env   (quarry client commands as admin:ops)
export QUARRY_COORDINATOR=$(coord_url 1)
export QUARRY_TLS_CA=$PKI/ca.pem
export QUARRY_TLS_CERT=$PKI/admin-ops.pem
export QUARRY_TLS_KEY=$PKI/admin-ops.key
EOF

# The first process of the cluster that no longer runs, if any.
dead_process() {
  local file
  for file in "$RUN"/*.pid; do
    if ! pid_of "$file" >/dev/null; then
      basename "$file" .pid
      return 0
    fi
  done
  return 1
}

# Says which process exited, with the end of its log.
report_dead() {
  say "$1 exited; the end of $LOGDIR/$1.log:"
  tail -n 20 "$LOGDIR/$1.log" >&2 || true
}

# `quarry ARGS...` as admin:ops against the cluster.
client() {
  local TLS
  tls_flags admin-ops
  "$QUARRY" "$@" --coordinator "$(coord_url 1)" "${TLS[@]}"
}

# The shards on the workers' disks, which the cluster must know before a
# hunt covers them all.
SHARDS=0
for ((n = 1; n <= NODES; n++)); do
  for shard in "$DIR/worker-$n"/shards/*/; do
    if [ -d "$shard" ]; then SHARDS=$((SHARDS + 1)); fi
  done
done

say "waiting for a leader, $NODES live workers and $SHARDS shards (up to ${TIMEOUT} s)"
deadline=$((SECONDS + TIMEOUT))
while true; do
  if client cluster status --wait 2s --live-workers "$NODES" --output json >"$RUN/status.json" 2>"$RUN/status.err"; then
    known="$(sed -n 's/.*"shards":\([0-9]*\).*/\1/p' "$RUN/status.json")"
    if ((${known:-0} >= SHARDS)); then break; fi
    echo "${known:-0} of $SHARDS shards registered" >"$RUN/status.err"
  fi
  if dead="$(dead_process)"; then
    report_dead "$dead"
    die "the cluster did not start"
  fi
  ((SECONDS < deadline)) || die "not ready within ${TIMEOUT} s: $(tail -n 1 "$RUN/status.err")"
  sleep 0.5
done

# --- modules ----------------------------------------------------------------------------

if [ -n "$MODULES_DIR" ]; then
  uploaded="$(client module list --output json 2>/dev/null || true)"
  for wasm in "$MODULES_DIR"/*.wasm; do
    [ -e "$wasm" ] || continue
    base="$(basename "$wasm" .wasm)"
    name="${base//_/-}"
    case "$name" in test-*) continue ;; esac
    if ((${#ONLY_MODULES[@]})); then
      [[ " ${ONLY_MODULES[*]} " == *" $name "* ]] || continue
    fi
    if grep -q "\"name\":\"$name\"" <<<"$uploaded"; then
      continue
    fi
    say "uploading module $name"
    client module upload "$wasm" >>"$LOGDIR/setup.log" 2>&1 ||
      die "uploading $wasm failed; see $LOGDIR/setup.log"
  done
else
  say "warning: no shipped modules found (build quarry with cargo, or pass --modules DIR); upload modules with: quarry module upload FILE.wasm"
fi

# --- ready ---------------------------------------------------------------------------------

# A Prometheus scrape configuration for this cluster's metrics endpoints.
targets() {
  local n sep=""
  for ((n = 1; n <= NODES; n++)); do
    printf '%s"127.0.0.1:%s"' "$sep" "$("$1" "$n")"
    sep=", "
  done
}
cat >"$DIR/prometheus.yml" <<EOF2
# Prometheus scrape configuration for the local cluster in $DIR
# (deploy/local-cluster.sh). Run: prometheus --config.file=$DIR/prometheus.yml
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: quarry-coordinator
    static_configs:
      - targets: [$(targets coord_metrics)]
  - job_name: quarry-worker
    static_configs:
      - targets: [$(targets worker_metrics)]
EOF2

status="$(client cluster status --output json 2>/dev/null || true)"
leader="$(sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p' <<<"$status")"
shards="$(sed -n 's/.*"shards":\([0-9]*\).*/\1/p' <<<"$status")"
tls_flags admin-ops
{
  echo "ready: Quarry local cluster in $DIR: $NODES coordinators (leader: node ${leader:-?}), $NODES workers, ${shards:-?} shards"
  echo
  echo "API (gRPC, mutual TLS; any coordinator answers, writes go to the leader):"
  for ((n = 1; n <= NODES; n++)); do
    echo "  coordinator $n  $(coord_url "$n")   pid $(cat "$RUN/coordinator-$n.pid")"
  done
  for ((n = 1; n <= NODES; n++)); do
    echo "  worker-$n       https://127.0.0.1:$(worker_port "$n")   pid $(cat "$RUN/worker-$n.pid")"
  done
  echo
  echo "Client commands, as admin:ops (certificates in $PKI; hunter:alice has hunter-alice.pem/.key):"
  echo "  source $DIR/client.env"
  echo "  quarry cluster status"
  echo "  quarry hunt submit bruteforce --selector env=local --wait"
  echo "or with flags instead of client.env:"
  echo "  --coordinator $(coord_url 1) ${TLS[*]}"
  echo
  if ((COORD_METRICS || WORKER_METRICS)); then
    echo "Metrics (Prometheus text format; scrape configuration: $DIR/prometheus.yml):"
    for ((n = 1; n <= NODES; n++)); do
      if ((COORD_METRICS)); then echo "  coordinator $n  http://127.0.0.1:$(coord_metrics "$n")/metrics"; fi
    done
    for ((n = 1; n <= NODES; n++)); do
      if ((WORKER_METRICS)); then echo "  worker-$n       http://127.0.0.1:$(worker_metrics "$n")/metrics"; fi
    done
  else
    echo "Metrics: off (this quarry has no --metrics-listen)"
  fi
  echo
  echo "Data:  $DIR/coordinator-N, $DIR/worker-N"
  echo "Logs:  $LOGDIR/coordinator-N.log, $LOGDIR/worker-N.log"
  if ((DETACH)); then
    echo "Stop:  $0 --stop --dir $DIR"
  else
    echo "Stop:  Ctrl-C, or $0 --stop --dir $DIR"
  fi
} | tee "$DIR/cluster.txt"

if ((DETACH)); then
  KEEP=1
  exit 0
fi

# Until Ctrl-C, SIGTERM, or `--stop` from elsewhere; a process that exits on
# its own stops the rest.
trap 'say "stopping (signal)"; exit 0' INT TERM
while true; do
  if [ -e "$RUN/stopping" ]; then
    wait || true
    KEEP=1
    exit 0
  fi
  if dead="$(dead_process)"; then
    [ -e "$RUN/stopping" ] && continue
    report_dead "$dead"
    die "$dead exited on its own; stopping the others"
  fi
  sleep 1 &
  wait $! || true
done
