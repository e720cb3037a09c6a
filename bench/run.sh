#!/usr/bin/env bash
# octorelay's benchmark: one command, loopback only, two markdown tables. See bench/README.md.
#
#   bench/run.sh                          # full run (~15 minutes)
#   BENCH_QUICK=1 bench/run.sh            # smoke run (a few seconds per measurement)
#   BENCH_SCALED=0 bench/run.sh           # skip the PostgreSQL + Redis rows
#   BENCH_WORKER_CLASSES=gthread bench/run.sh   # one worker model only (default "gthread gevent")
#   BENCH_KEEP=1 bench/run.sh             # keep the temp dir (server logs, raw results)
#   BENCH_ONLY=sizes bench/run.sh         # only the Claude Code request-size rows
#   BENCH_ROUNDS=5 bench/run.sh           # rounds of the c=1 / c=8 / c=64 runs (default 3; medians)
#
# Starts: the mock upstream; per worker class, the bare proxy and octorelay default (SQLite in a
# temp dir, no Redis, one worker: 1x64 threads for gthread, 1x1000 connections for gevent) and,
# when PostgreSQL and Redis are reachable, the bare proxy and octorelay scaled (2 workers x 32
# threads / x 1000 connections, PostgreSQL + Redis). Stops all of them by PID on exit.
# The scaled rows own BENCH_PG_URL's database and BENCH_REDIS_URL's db: both are reset each run.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DUR_C1=2; DUR_TP=2; ROUNDS=${BENCH_ROUNDS:-1}; STREAM_SETS="50"; EVENTS=5; DELAY_MS=20
  MANY=${BENCH_MANY_STREAMS:-100}; MANY_EVENTS=5; MANY_DELAY_MS=100; MANY_SPREAD_MS=100
else
  DUR_C1=${BENCH_DUR_C1:-5}; DUR_TP=${BENCH_DUR_TP:-8}; ROUNDS=${BENCH_ROUNDS:-3}; STREAM_SETS=${BENCH_STREAMS:-"50 200"}
  EVENTS=${BENCH_EVENTS:-20}; DELAY_MS=${BENCH_DELAY_MS:-50}
  MANY=${BENCH_MANY_STREAMS:-1000}; MANY_EVENTS=${BENCH_MANY_EVENTS:-20}
  MANY_DELAY_MS=${BENCH_MANY_DELAY_MS:-250}; MANY_SPREAD_MS=${BENCH_MANY_SPREAD_MS:-2000}
fi
CLASSES=${BENCH_WORKER_CLASSES:-"gthread gevent"}
ONLY=${BENCH_ONLY:-}
SIZES=${BENCH_SIZES:-"50000 300000 1000000"}  # Claude Code-shaped bodies (bench/bodies.py), bytes
DUR_SIZE=${BENCH_DUR_SIZE:-$DUR_C1}
PG_URL=${BENCH_PG_URL:-postgresql://postgres@127.0.0.1:5432/bench}
REDIS_URL_SCALED=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/8}
# ports: mock 18101; per worker class i (gthread 0, gevent 1): bare 1xN 18102+4i, octorelay
# default 18103+4i, bare 2xM 18104+4i, octorelay scaled 18105+4i
P_MOCK=18101

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
for c in $CLASSES; do
  case $c in gthread|gevent) ;; *) log "BENCH_WORKER_CLASSES: unknown worker class '$c' (gthread|gevent)"; exit 2 ;; esac
done
# 1,000 open streams hold a socket each in the client, ~2 in the proxy and one in the mock
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=65536; [ "$nofile" -gt 65536 ] && nofile=65536
[ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$nofile" ] && ulimit -Sn "$nofile"
[ "$(ulimit -Sn)" = unlimited ] || [ "$(ulimit -Sn)" -ge $(( MANY * 2 + 512 )) ] \
  || log "open-file limit $(ulimit -Sn) may be too low for $MANY streams"

RES=$TMP/results.jsonl
emit() { echo "{\"row\":\"$1\",\"kind\":\"$2\",\"data\":${3:-null}}" >>"$RES"; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

$PY bench/mock_upstream.py --host 127.0.0.1 --port $P_MOCK --procs "${BENCH_MOCK_PROCS:-1}" \
  >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:$P_MOCK/ 10 || exit 2

ROWS=(direct)
declare -A URL=([direct]=http://127.0.0.1:$P_MOCK) PID=([direct]=${PIDS[0]}) KEY=([direct]=)
emit direct meta '{"label":"direct to mock (floor)"}'

add_row() {  # id port pid key label bare-id
  ROWS+=("$1"); URL[$1]=http://127.0.0.1:$2; PID[$1]=$3; KEY[$1]=$4
  emit "$1" meta "{\"label\":\"$5\",\"bare\":\"$6\"}"
}

start_bare() {  # port worker_class workers threads ; sets LAST_PID
  BARE_UPSTREAM=http://127.0.0.1:$P_MOCK BARE_WORKER_CLASS=$2 BARE_WORKERS=$3 BARE_THREADS=$4 \
    gunicorn -c "$ROOT/bench/bare_proxy.py" --chdir "$ROOT/bench" -b 127.0.0.1:$1 >"$TMP/bare-$1.log" 2>&1 &
  PIDS+=($!); LAST_PID=$!
  wait_http http://127.0.0.1:$1/ 20 || { tail -20 "$TMP/bare-$1.log" >&2; return 1; }
}

ADMIN_TOKEN=bench-admin-$(python -c "import secrets; print(secrets.token_urlsafe(32))")  # 32+ characters: shorter ones refuse to start
SECRET=$(octorelay secret 2>/dev/null | tail -1)
start_octo() {  # name port worker_class workers threads database_url redis_url ; sets LAST_PID, LAST_KEY
  local name=$1 port=$2 class=$3 workers=$4 threads=$5 db=$6 redis=$7
  local envs=(DATABASE_URL="$db" OCTORELAY_SECRET_KEY="$SECRET" OCTORELAY_ADMIN_TOKEN="$ADMIN_TOKEN"
              WEB_CONCURRENCY="$workers" OCTORELAY_WORKER_CLASS="$class" OCTORELAY_THREADS="$threads"
              PORT="$port" LOG_LEVEL=warning
              PROMETHEUS_MULTIPROC_DIR="$TMP/metrics-$name" OCTORELAY_SPOOL_DIR="$TMP/spool-$name")
  mkdir -p "$TMP/metrics-$name" "$TMP/spool-$name"
  [ -n "$redis" ] && envs+=(REDIS_URL="$redis")
  (cd "$TMP" && env "${envs[@]}" octorelay db upgrade >"$TMP/octo-$name.log" 2>&1) \
    || { log "octorelay db upgrade failed ($name)"; cat "$TMP/octo-$name.log" >&2; return 1; }
  (cd "$TMP" && exec env "${envs[@]}" gunicorn -c "$ROOT/gunicorn.conf.py" --chdir "$ROOT" \
     -b 127.0.0.1:$port >>"$TMP/octo-$name.log" 2>&1) &
  PIDS+=($!); LAST_PID=$!
  wait_http http://127.0.0.1:$port/healthz 30 || { tail -20 "$TMP/octo-$name.log" >&2; return 1; }
  local auth=(-H "authorization: Bearer $ADMIN_TOKEN" -H "content-type: application/json")
  curl -sf -m 10 "${auth[@]}" http://127.0.0.1:$port/admin/channels -d "{\"name\":\"bench-$name-$$-$RANDOM\",
    \"type\":\"anthropic\",\"base_url\":\"http://127.0.0.1:$P_MOCK\",\"api_key\":\"sk-ant-bench\",
    \"models\":[\"claude-*\"]}" >"$TMP/channel-$name.json" \
    || { log "creating the channel failed ($name)"; return 1; }
  LAST_KEY=$(curl -sf -m 10 "${auth[@]}" http://127.0.0.1:$port/admin/keys -d "{\"name\":\"bench-$name-$$\"}" \
             | $PY -c 'import json,sys; print(json.load(sys.stdin)["key"])') \
    || { log "creating the key failed ($name)"; return 1; }
}

class_index() { case $1 in gthread) echo 0 ;; gevent) echo 1 ;; esac; }
# per-worker concurrency of the default (1 worker) and scaled (2 workers) shapes
conc_default() { case $1 in gthread) echo 64 ;; gevent) echo 1000 ;; esac; }
conc_scaled() { case $1 in gthread) echo 32 ;; gevent) echo 1000 ;; esac; }

MANY_ROWS=(direct)
for c in $CLASSES; do
  i=$(class_index $c); n=$(conc_default $c)
  pb=$(( 18102 + 4 * i )); po=$(( 18103 + 4 * i ))
  start_bare $pb $c 1 $n || { log "bare proxy 1x$n $c failed to start"; exit 2; }
  add_row bare1_$c $pb $LAST_PID "" "bare proxy, 1×$n $c" bare1_$c
  start_octo default_$c $po $c 1 $n "sqlite:///$TMP/octorelay-$c.db" "" \
    || { log "octorelay default 1x$n $c failed to start"; exit 2; }
  add_row octo1_$c $po $LAST_PID "$LAST_KEY" "octorelay default, 1×$n $c, SQLite" bare1_$c
  MANY_ROWS+=(bare1_$c octo1_$c)
done

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
    for c in $CLASSES; do
      i=$(class_index $c); n=$(conc_scaled $c)
      pb=$(( 18104 + 4 * i )); po=$(( 18105 + 4 * i ))
      # the scaled octorelay instances share the database and the Redis db (own channel, own key)
      if start_bare $pb $c 2 $n; then
        bpid=$LAST_PID
        if start_octo scaled_$c $po $c 2 $n "$PG_URL" "$REDIS_URL_SCALED"; then
          add_row bare2_$c $pb $bpid "" "bare proxy, 2×$n $c" bare2_$c
          add_row octo2_$c $po $LAST_PID "$LAST_KEY" "octorelay scaled, 2×$n $c, PG+Redis" bare2_$c
          continue
        fi
      fi
      log "scaled $c rows skipped: could not start them"
    done
  else
    log "scaled rows skipped: PostgreSQL or Redis not reachable ($(tail -1 "$TMP/scaled-check.log"))"
  fi
fi

# warm-up: a few requests and streams per target (connection pools, key cache, imports)
for r in "${ROWS[@]}"; do
  BENCH_KEY=${KEY[$r]} timeout 20 wrk -t1 -c4 -d1s -s bench/messages.lua "${URL[$r]}" >/dev/null 2>&1
  timeout 30 $PY bench/streams.py --url "${URL[$r]}" --key "${KEY[$r]}" --streams 8 --events 2 \
    --delay-ms 5 --timeout 20 >/dev/null
done

# --- measurements: each kind, target after target, so ratios compare neighbours in time -----
wrk_run() {  # row label threads conns seconds
  local out
  out=$(BENCH_KEY=${KEY[$1]} timeout $(( $5 + 30 )) wrk -t$3 -c$4 -d${5}s --timeout 10s \
        -s bench/messages.lua "${URL[$1]}" 2>&1 | sed -n 's/^BENCHJSON //p')
  emit "$1" "$2" "${out:-null}"
}
log "${#ROWS[@]} targets: ${ROWS[*]}"

# Claude Code-sized requests at c=1: p50 and CPU per request (CPU summed over the target's
# processes from /proc/<pid>/stat, utime + stime, before and after the run)
cpu_ticks() {
  local total=0 p f
  for p in $1 $(pgrep -P $1); do
    f=$(cut -d' ' -f14,15 /proc/$p/stat 2>/dev/null) || continue
    [ -n "$f" ] && total=$(( total + ${f% *} + ${f#* } ))
  done
  echo $total
}
size_run() {  # row size
  local out before after
  before=$(cpu_ticks ${PID[$1]})
  out=$(BENCH_KEY=${KEY[$1]} BENCH_BODY_FILE=$TMP/bodies/body-$2.json BENCH_HEADERS_FILE=$TMP/bodies/headers.txt \
        timeout $(( DUR_SIZE + 30 )) wrk -t1 -c1 -d${DUR_SIZE}s --timeout 10s -s bench/claude_code.lua "${URL[$1]}" 2>&1 \
        | sed -n 's/^BENCHJSON //p')
  after=$(cpu_ticks ${PID[$1]})
  [ -n "$out" ] && out="${out%\}},\"cpu_ticks\":$(( after - before )),\"clk_tck\":$(getconf CLK_TCK)}"
  emit "$1" "size$2" "${out:-null}"
}
$PY bench/bodies.py "$TMP/bodies" --sizes "$(echo $SIZES | tr ' ' ',')" >/dev/null \
  || { log "bench/bodies.py failed"; exit 2; }
log "Claude Code-sized requests ($SIZES bytes; c=1, ${DUR_SIZE}s each)"
for r in "${ROWS[@]}"; do  # warm-up with the biggest body
  BENCH_KEY=${KEY[$r]} BENCH_BODY_FILE=$TMP/bodies/body-${SIZES##* }.json BENCH_HEADERS_FILE=$TMP/bodies/headers.txt \
    timeout 20 wrk -t1 -c1 -d1s -s bench/claude_code.lua "${URL[$r]}" >/dev/null 2>&1
done
for size in $SIZES; do
  for r in "${ROWS[@]}"; do size_run $r $size; done
done

if [ "$ONLY" != sizes ]; then
# in ROUNDS rounds: the table shows medians, and each ratio (or c=1 difference) to the bare proxy
# is the median of the rounds' own, each measured right after its bare proxy
for round in $(seq 1 $ROUNDS); do
  log "round $round of $ROUNDS: unloaded latency (c=1, ${DUR_C1}s each)"
  for r in "${ROWS[@]}"; do wrk_run $r c1 1 1 $DUR_C1; done
  log "round $round of $ROUNDS: throughput (c=8 and c=64, ${DUR_TP}s each)"
  for r in "${ROWS[@]}"; do wrk_run $r c8 2 8 $DUR_TP; done
  for r in "${ROWS[@]}"; do wrk_run $r c64 2 64 $DUR_TP; done
done
for n in $STREAM_SETS; do
  log "streaming ($n streams x $EVENTS events, ${DELAY_MS} ms apart)"
  for r in "${ROWS[@]}"; do
    out=$(timeout 120 $PY bench/streams.py --url "${URL[$r]}" --key "${KEY[$r]}" --streams $n \
          --events $EVENTS --delay-ms $DELAY_MS --timeout 90)
    emit $r s$n "${out:-null}"
  done
done

# peak RSS: VmHWM summed over each target's process tree (gunicorn master + workers), taken
# before the open-streams run (which reports its own sampled peak)
peak_kb() {
  local total=0 p v
  for p in $1 $(pgrep -P $1); do
    v=$(awk '/VmHWM/{print $2}' /proc/$p/status 2>/dev/null); total=$(( total + ${v:-0} ))
  done
  echo $total
}
for r in "${ROWS[@]}"; do emit $r rss "{\"kb\":$(peak_kb ${PID[$r]})}"; done

# --- open streams: MANY at once on each default-shape target (one worker) -------------------
if [ "$MANY" -gt 0 ]; then
  log "open streams ($MANY streams x $MANY_EVENTS events, ${MANY_DELAY_MS} ms apart, opened over ${MANY_SPREAD_MS} ms; default shape)"
  dur_ms=$(( (MANY_EVENTS + 1) * MANY_DELAY_MS + MANY_SPREAD_MS ))
  for r in "${MANY_ROWS[@]}"; do
    # a gthread worker serves one stream per thread: the others wait for whole streams to end
    waves=1; case $r in *_gthread) waves=$(( (MANY + 63) / 64 )) ;; esac
    tmo=$(( 30 + 2 * waves * dur_ms / 1000 ))
    sleep 1  # let the previous target's connections close before the baseline sample
    out=$(timeout $(( tmo + 30 + MANY_SPREAD_MS / 1000 )) $PY bench/streams.py --url "${URL[$r]}" --key "${KEY[$r]}" \
          --streams $MANY --events $MANY_EVENTS --delay-ms $MANY_DELAY_MS --spread-ms $MANY_SPREAD_MS \
          --timeout $tmo \
          --watch-pid ${PID[$r]} --sample-ms 100)
    emit $r many "${out:-null}"
  done
fi
fi  # BENCH_ONLY

for r in "${ROWS[@]}"; do
  kill -0 ${PID[$r]} 2>/dev/null || log "$r: its process ${PID[$r]} is gone"
done
MACHINE="machine: $(nproc) CPUs (nproc), $(uname -sr), Python $($PY -c 'import platform; print(platform.python_version())'),\
 gunicorn $($PY -c 'import gunicorn; print(gunicorn.__version__)'),\
 gevent $($PY -c 'import gevent; print(gevent.__version__)' 2>/dev/null || echo –),\
 $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); load average (1/5/15 min) at start $LOAD_START,\
 at end $(cut -d' ' -f1-3 /proc/loadavg)"
$PY bench/table.py "$RES" --sets "$STREAM_SETS" --events $EVENTS --delay-ms $DELAY_MS \
  --machine "$MACHINE" --many "$MANY $MANY_EVENTS $MANY_DELAY_MS $MANY_SPREAD_MS" --sizes "$SIZES"
