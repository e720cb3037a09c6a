#!/usr/bin/env bash
# octorelay's benchmark: one command, loopback only, one markdown table. See bench/README.md.
#
#   bench/run.sh                      # full run (~3-4 minutes)
#   BENCH_QUICK=1 bench/run.sh        # smoke run (a few seconds per measurement)
#   BENCH_SCALED=0 bench/run.sh       # skip the PostgreSQL + Redis rows
#   BENCH_KEEP=1 bench/run.sh         # keep the temp dir (server logs, raw results)
#
# Starts: the mock upstream, the bare proxy (1x64 and, if scaled, 2x32), octorelay default
# (SQLite in a temp dir, no Redis, 1 worker x 64 threads) and octorelay scaled (2 workers x 32
# threads, PostgreSQL + Redis) when both are reachable. Stops all of them by PID on exit.
# The scaled rows own BENCH_PG_URL's database and BENCH_REDIS_URL's db: both are reset each run.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DUR_C1=2; DUR_TP=2; STREAM_SETS="50"; EVENTS=5; DELAY_MS=20
else
  DUR_C1=${BENCH_DUR_C1:-5}; DUR_TP=${BENCH_DUR_TP:-8}; STREAM_SETS=${BENCH_STREAMS:-"50 200"}
  EVENTS=${BENCH_EVENTS:-20}; DELAY_MS=${BENCH_DELAY_MS:-50}
fi
PG_URL=${BENCH_PG_URL:-postgresql://postgres@127.0.0.1:5432/bench}
REDIS_URL_SCALED=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/8}
P_MOCK=18101; P_BARE1=18102; P_OCTO1=18103; P_BARE2=18104; P_OCTO2=18105

TMP=$(mktemp -d /tmp/octorelay-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "bench: $*" >&2; }

# --- load generator ---------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  log "installing wrk from Debian"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  timeout 180 $SUDO apt-get update -qq >/dev/null 2>&1
  timeout 180 $SUDO apt-get install -y -qq wrk >/dev/null 2>&1
  command -v wrk >/dev/null || { log "wrk is not installed and could not be installed"; exit 2; }
fi

wait_http() {  # url, seconds
  local i
  for i in $(seq 1 $(( $2 * 10 ))); do
    curl -s -o /dev/null -m 1 "$1" && return 0
    sleep 0.1
  done
  log "timed out waiting for $1"; return 1
}

# --- targets ----------------------------------------------------------------------------------
$PY bench/mock_upstream.py --host 127.0.0.1 --port $P_MOCK --procs "${BENCH_MOCK_PROCS:-1}" \
  >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:$P_MOCK/ 10 || exit 2

start_bare() {  # port workers threads
  BARE_UPSTREAM=http://127.0.0.1:$P_MOCK BARE_WORKERS=$2 BARE_THREADS=$3 \
    gunicorn -c "$ROOT/bench/bare_proxy.py" --chdir "$ROOT/bench" -b 127.0.0.1:$1 >"$TMP/bare-$1.log" 2>&1 &
  PIDS+=($!)
  wait_http http://127.0.0.1:$1/ 20
}

ADMIN_TOKEN=bench-admin-$RANDOM$RANDOM
SECRET=$(octorelay secret 2>/dev/null | tail -1)
start_octo() {  # name port workers threads database_url redis_url ; sets KEY_<name>
  local name=$1 port=$2 workers=$3 threads=$4 db=$5 redis=$6
  local envs=(DATABASE_URL="$db" OCTORELAY_SECRET_KEY="$SECRET" OCTORELAY_ADMIN_TOKEN="$ADMIN_TOKEN"
              WEB_CONCURRENCY="$workers" OCTORELAY_THREADS="$threads" PORT="$port" LOG_LEVEL=warning
              PROMETHEUS_MULTIPROC_DIR="$TMP/metrics-$name" OCTORELAY_SPOOL_DIR="$TMP/spool-$name")
  mkdir -p "$TMP/metrics-$name" "$TMP/spool-$name"
  [ -n "$redis" ] && envs+=(REDIS_URL="$redis")
  (cd "$TMP" && env "${envs[@]}" octorelay db upgrade >"$TMP/octo-$name.log" 2>&1) \
    || { log "octorelay db upgrade failed ($name)"; cat "$TMP/octo-$name.log" >&2; return 1; }
  (cd "$TMP" && exec env "${envs[@]}" gunicorn -c "$ROOT/gunicorn.conf.py" --chdir "$ROOT" \
     -b 127.0.0.1:$port >>"$TMP/octo-$name.log" 2>&1) &
  PIDS+=($!)
  eval "PID_$name=$!"
  wait_http http://127.0.0.1:$port/healthz 30 || { cat "$TMP/octo-$name.log" >&2; return 1; }
  local auth=(-H "authorization: Bearer $ADMIN_TOKEN" -H "content-type: application/json")
  curl -sf -m 10 "${auth[@]}" http://127.0.0.1:$port/admin/channels -d "{\"name\":\"bench-$name-$$-$RANDOM\",
    \"type\":\"anthropic\",\"base_url\":\"http://127.0.0.1:$P_MOCK\",\"api_key\":\"sk-ant-bench\",
    \"models\":[\"claude-*\"]}" >"$TMP/channel-$name.json" \
    || { log "creating the channel failed ($name)"; return 1; }
  local key
  key=$(curl -sf -m 10 "${auth[@]}" http://127.0.0.1:$port/admin/keys -d "{\"name\":\"bench-$name-$$\"}" \
        | $PY -c 'import json,sys; print(json.load(sys.stdin)["key"])') \
    || { log "creating the key failed ($name)"; return 1; }
  eval "KEY_$name=$key"
}

ROWS=(direct bare1 octo1)
declare -A URL=([direct]=http://127.0.0.1:$P_MOCK [bare1]=http://127.0.0.1:$P_BARE1
                [octo1]=http://127.0.0.1:$P_OCTO1 [bare2]=http://127.0.0.1:$P_BARE2
                [octo2]=http://127.0.0.1:$P_OCTO2)
declare -A PID=([direct]=${PIDS[0]})
KEY_direct=; KEY_bare1=; KEY_bare2=

start_bare $P_BARE1 1 64 || exit 2; PID[bare1]=${PIDS[-1]}
start_octo octo1 $P_OCTO1 1 64 "sqlite:///$TMP/octorelay.db" "" || exit 2; PID[octo1]=$PID_octo1

if [ "${BENCH_SCALED:-1}" = 1 ]; then
  if $PY - "$PG_URL" "$REDIS_URL_SCALED" <<'EOF' 2>"$TMP/scaled-check.log"
import sys, psycopg2, redis
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1]); name = u.path.lstrip("/")
conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                        password=u.password, dbname="postgres", connect_timeout=3)
conn.autocommit = True
cur = conn.cursor()
# the bench owns this database and this Redis db: both start empty (a fresh secret each run
# could not decrypt the channels an earlier run left behind)
cur.execute(f'drop database if exists "{name}" with (force)')
cur.execute(f'create database "{name}"')
redis.Redis.from_url(sys.argv[2], socket_connect_timeout=3).flushdb()
EOF
  then
    start_bare $P_BARE2 2 32 && PID[bare2]=${PIDS[-1]} \
      && start_octo octo2 $P_OCTO2 2 32 "$PG_URL" "$REDIS_URL_SCALED" && PID[octo2]=$PID_octo2 \
      && ROWS+=(bare2 octo2) || log "scaled rows skipped: could not start them"
  else
    log "scaled rows skipped: PostgreSQL or Redis not reachable ($(tail -1 "$TMP/scaled-check.log"))"
  fi
fi
key_of() { eval "echo \${KEY_$1}"; }

# warm-up: a few requests and streams per target (connection pools, key cache, imports)
for r in "${ROWS[@]}"; do
  BENCH_KEY=$(key_of $r) timeout 20 wrk -t1 -c4 -d1s -s bench/messages.lua "${URL[$r]}" >/dev/null 2>&1
  timeout 30 $PY bench/streams.py --url "${URL[$r]}" --key "$(key_of $r)" --streams 8 --events 2 \
    --delay-ms 5 --timeout 20 >/dev/null
done

# --- measurements: each kind, target after target, so ratios compare neighbours in time -----
RES=$TMP/results.jsonl
wrk_run() {  # row label threads conns seconds
  local out
  out=$(BENCH_KEY=$(key_of $1) timeout $(( $5 + 30 )) wrk -t$3 -c$4 -d${5}s --timeout 10s \
        -s bench/messages.lua "${URL[$1]}" 2>&1 | sed -n 's/^BENCHJSON //p')
  echo "{\"row\":\"$1\",\"kind\":\"$2\",\"data\":${out:-null}}" >>"$RES"
}
log "unloaded latency (c=1, ${DUR_C1}s each)"
for r in "${ROWS[@]}"; do wrk_run $r c1 1 1 $DUR_C1; done
log "throughput (c=8 and c=64, ${DUR_TP}s each)"
for r in "${ROWS[@]}"; do wrk_run $r c8 2 8 $DUR_TP; done
for r in "${ROWS[@]}"; do wrk_run $r c64 2 64 $DUR_TP; done
for n in $STREAM_SETS; do
  log "streaming ($n streams x $EVENTS events, ${DELAY_MS} ms apart)"
  for r in "${ROWS[@]}"; do
    out=$(timeout 120 $PY bench/streams.py --url "${URL[$r]}" --key "$(key_of $r)" --streams $n \
          --events $EVENTS --delay-ms $DELAY_MS --timeout 90)
    echo "{\"row\":\"$r\",\"kind\":\"s$n\",\"data\":${out:-null}}" >>"$RES"
  done
done

# peak RSS: VmHWM summed over each target's process tree (gunicorn master + workers)
peak_kb() {
  local total=0 p
  for p in $1 $(pgrep -P $1); do
    v=$(awk '/VmHWM/{print $2}' /proc/$p/status 2>/dev/null); total=$(( total + ${v:-0} ))
  done
  echo $total
}
for r in "${ROWS[@]}"; do
  echo "{\"row\":\"$r\",\"kind\":\"rss\",\"data\":{\"kb\":$(peak_kb ${PID[$r]})}}" >>"$RES"
done

$PY bench/table.py "$RES" "$STREAM_SETS" "$EVENTS" "$DELAY_MS" "$(nproc)"
