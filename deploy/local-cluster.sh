#!/usr/bin/env bash
# A local multi-process cluster: one coordinator and two worker processes on
# loopback ports, each with its own data directory under $DATA (default
# ./quarry-local). Worker shards are ingested from log files (any format
# `quarry worker ingest` reads) given as
# arguments (alternating between the workers). Ctrl-C stops everything.
#
#   deploy/local-cluster.sh logs/a.jsonl logs/b.jsonl
set -euo pipefail
QUARRY="${QUARRY:-quarry}"
DATA="${DATA:-./quarry-local}"
PORT="${PORT:-7700}"
mkdir -p "$DATA"

i=0
for file in "$@"; do
  w=$((i % 2))
  name="$(basename "$file" | tr '[:upper:]' '[:lower:]' | sed 's/\.[a-z]*$//; s/[^a-z0-9._-]/-/g')"
  if [ ! -d "$DATA/worker-$w/shards/$name" ]; then
    "$QUARRY" worker ingest --data-dir "$DATA/worker-$w" --shard "$name" --label env=local "$file"
  fi
  i=$((i + 1))
done

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
"$QUARRY" coordinator --data-dir "$DATA/coordinator" --listen "127.0.0.1:$PORT" & pids+=($!)
sleep 1
for w in 0 1; do
  "$QUARRY" worker --id "worker-$w" --data-dir "$DATA/worker-$w" \
    --coordinator "http://127.0.0.1:$PORT" --listen 127.0.0.1:0 & pids+=($!)
done
echo "cluster up: quarry cluster status --coordinator http://127.0.0.1:$PORT"
wait
