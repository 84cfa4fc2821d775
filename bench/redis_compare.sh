#!/usr/bin/env bash
# Side-by-side Redis throughput, CPU and memory: Redis directly, custos,
# twemproxy (nutcracker) and HAProxy in TCP mode, all in front of the same
# store, interleaved over several rounds.
#
#   bench/redis_compare.sh                  # defaults: about 5 minutes on 2 cores
#   ROUNDS=3 BENCH_REQUESTS_P1=20000 bench/redis_compare.sh
#
# Each round runs every endpoint once, in a rotated order (so no endpoint
# always runs first, on a cold cache, or last, on a hot machine), with
#   redis-benchmark -t get,set -c 50 -d 64 -r 100000 -n N -P 1   and   -P 16.
# The report gives medians over rounds, ratios against twemproxy, p50/p99
# latency, CPU time per command at each depth (utime+stime of the serving process,
# all its threads,
# from /proc/PID/stat, divided by commands) and resident memory per idle
# connection (10,000 connections each sending one PING, then held).
# Raw numbers go to bench/results/redis_compare.csv.
#
# The store and the credentials (fairness): one redis-server serves every
# endpoint. It has two identities: the ACL user `custos` (the appliance's
# upstream identity, read from a password file) and the `default` user with a
# `requirepass`, because twemproxy's `redis_auth` can only send the
# requirepass form `AUTH <password>`. Every client sends `AUTH <password>`
# (redis-benchmark -a): Redis and HAProxy pass it to the store, twemproxy
# checks it itself, custos answers it itself (auth = "none", development
# mode). So each endpoint authenticates once per connection and then only
# proxies.
#
# Environment (defaults in brackets):
#   ROUNDS [5]                  rounds; each runs every endpoint once
#   BENCH_REQUESTS_P1 [50000]   requests per test at -P 1
#   BENCH_REQUESTS_PIPELINED [200000]  requests per test at -P > 1
#   BENCH_PIPELINES ["1 16"]    pipeline depths
#   BENCH_CLIENTS [50]  BENCH_DATA_BYTES [64]  BENCH_KEYSPACE [100000]
#   BENCH_TESTS [get,set]       redis-benchmark tests
#   BENCH_PREFILL []            "prose": fill the key space with text values
#                               (bench/scripts/prose_values.py) first; with
#                               BENCH_TESTS=get the GETs read those instead of
#                               redis-benchmark's random bytes
#   BENCH_IDLE_CONNS [10000]    idle connections for the memory measurement (0 skips it)
#   BENCH_ENDPOINTS ["redis custos twemproxy haproxy"]; custos_NAME adds an
#                               endpoint running custos with bench/configs/NAME.toml
#                               (e.g. custos_mask: every detector on)
#                               custos-audit and custos-sync: custos with an
#                               [audit] trail, durability async and sync
#   CUSTOS_WORKERS [1]          custos shards. One by default: on this 2-core
#                               machine the store and redis-benchmark need the
#                               other core, and twemproxy is one thread too.
#                               CUSTOS_WORKERS=auto runs one shard per core.
#   CUSTOS_BIN                  use this custos binary instead of a release build
#   BENCH_OUT [bench/results/redis_compare.csv]
#
# Nothing is installed from here; missing tools are named and the run stops.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
. "$here/scripts/common.sh"

ROUNDS=${ROUNDS:-5}
REQUESTS_P1=${BENCH_REQUESTS_P1:-50000}
REQUESTS_PIPELINED=${BENCH_REQUESTS_PIPELINED:-200000}
PIPELINES=${BENCH_PIPELINES:-"1 16"}
CLIENTS=${BENCH_CLIENTS:-50}
DATA_BYTES=${BENCH_DATA_BYTES:-64}
KEYSPACE=${BENCH_KEYSPACE:-100000}
TESTS=${BENCH_TESTS:-get,set}
PREFILL=${BENCH_PREFILL:-}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
read -r -a ENDPOINTS <<< "${BENCH_ENDPOINTS:-redis custos twemproxy haproxy}"
CUSTOS_WORKERS=${CUSTOS_WORKERS:-1}
OUT=${BENCH_OUT:-$here/results/redis_compare.csv}

# ---- tools ----
need=(redis-server redis-cli redis-benchmark python3)
for ep in "${ENDPOINTS[@]}"; do
  case "$ep" in
    redis) ;;
    custos|custos_*|custos-audit|custos-sync) [ -n "${CUSTOS_BIN:-}" ] || need+=(cargo) ;;
    twemproxy) need+=(nutcracker) ;;
    haproxy) need+=(haproxy) ;;
    *) echo "unknown endpoint '$ep' (redis, custos, custos_<config>, custos-audit, custos-sync, twemproxy, haproxy)" >&2; exit 2 ;;
  esac
done
require_tools "(Debian: apt-get install redis-server redis-tools nutcracker haproxy python3;\
 or leave endpoints out with BENCH_ENDPOINTS)" "${need[@]}"

# 10,000 idle client connections plus as many upstream connections need more
# descriptors than the usual default; raising the hard limit needs root.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds=$(ulimit -n)
if [ "$IDLE_CONNS" -gt 0 ] && [ $((IDLE_CONNS * 2 + 1000)) -gt "$fds" ]; then
  IDLE_CONNS=$(( (fds - 1000) / 2 ))
  echo "note: open-file limit is $fds; measuring with $IDLE_CONNS idle connections" >&2
fi

# ---- housekeeping ----
bench_setup custos-bench

# ---- the store ----
pass_default=$(random_secret)
pass_custos=$(random_secret)
upstream_port=$(free_port)
mkdir -p "$work/redis"
redis-server --port "$upstream_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work/redis" --logfile "$work/redis/redis.log" --maxclients 20000 \
  --requirepass "$pass_default" \
  --user custos on ">$pass_custos" '~*' '&*' '+@all' &
track redis "$upstream_port"
redis_wait_ping "$upstream_port" "$pass_default"

# ---- the endpoints ----
for ep in "${ENDPOINTS[@]}"; do
  case "$ep" in
    custos|custos_*|custos-audit|custos-sync)
      # custos_NAME: the same appliance with bench/configs/NAME.toml added
      # (policy, masking, audit), to measure what a feature costs.
      build_custos
      printf '%s' "$pass_custos" > "$work/custos-secret"
      port=$(free_port); admin=$(free_port)
      extra=/dev/null
      case "$ep" in custos_*) extra="$here/configs/${ep#custos_}.toml" ;; esac
      [ -f "$extra" ] || [ "$extra" = /dev/null ] || { echo "no $extra for endpoint $ep" >&2; exit 2; }
      mkdir -p "$work/$ep"
      {
        custos_server_toml "$admin"
        custos_audit_toml "$ep" "$work/$ep"
        custos_target_toml cache redis "$port" "$upstream_port" custos "$work/custos-secret" none
        sed "s|@WORK@|$work|g" "$extra"
      } > "$work/$ep.toml"
      "$custos_bin" run --config "$work/$ep.toml" 2>"$work/$ep.log" &
      track "$ep" "$port"
      ;;
    twemproxy)
      port=$(free_port); stats=$(free_port)
      cat > "$work/nutcracker.yml" <<YML
bench:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  redis_auth: $pass_default
  server_connections: 1
  auto_eject_hosts: false
  timeout: 10000
  servers:
   - 127.0.0.1:$upstream_port:1
YML
      nutcracker -c "$work/nutcracker.yml" -o "$work/nutcracker.log" \
        -s "$stats" -a 127.0.0.1 -p "$work/nutcracker.pid" &
      track twemproxy "$port"
      ;;
    haproxy)
      # Two descriptors per proxied connection, within the open-file limit.
      start_haproxy redis $(( (fds - 200) / 2 )) "$(free_port)" "$upstream_port"
      ;;
  esac
done
ping_endpoint() { redis_wait_ping "${PORT[$1]}" "$pass_default"; }
wait_endpoints ping_endpoint "${ENDPOINTS[@]}"
if [ "$PREFILL" = prose ]; then
  python3 "$here/scripts/prose_values.py" "$KEYSPACE" "$DATA_BYTES" |
    redis-cli -p "$upstream_port" -a "$pass_default" --no-auth-warning --pipe >/dev/null
  echo "prefilled $KEYSPACE keys with $DATA_BYTES-byte text values" >&2
fi

echo "machine: $(nproc) cores; $(redis-server --version | cut -d' ' -f1-3)" >&2
echo "rounds=$ROUNDS clients=$CLIENTS data=$DATA_BYTES keyspace=$KEYSPACE" \
     "requests: -P 1 $REQUESTS_P1, pipelined $REQUESTS_PIPELINED; endpoints: ${ENDPOINTS[*]}" >&2

mkdir -p "$(dirname "$OUT")"
echo "round,endpoint,pipeline,test,metric,value" > "$OUT"

# bench_one ROUND ENDPOINT PIPELINE
bench_one() {
  local round=$1 ep=$2 pipeline=$3 n=$REQUESTS_PIPELINED
  [ "$pipeline" = 1 ] && n=$REQUESTS_P1
  local pid=${PID[$ep]} before after csv
  before=$(cpu_ticks "$pid")
  csv=$(redis-benchmark -h 127.0.0.1 -p "${PORT[$ep]}" -a "$pass_default" \
          -t "$TESTS" -c "$CLIENTS" -d "$DATA_BYTES" -r "$KEYSPACE" -n "$n" \
          -P "$pipeline" --csv 2>"$work/benchmark.err")
  after=$(cpu_ticks "$pid")
  local rows
  rows=$(printf '%s\n' "$csv" | awk -F'","' -v r="$round" -v e="$ep" -v p="$pipeline" '
    /^"(SET|GET)"/ {
      gsub(/"/, "", $1); gsub(/"/, "", $NF)
      printf "%s,%s,%s,%s,rps,%s\n", r, e, p, $1, $2
      printf "%s,%s,%s,%s,p50_ms,%s\n", r, e, p, $1, $5
      printf "%s,%s,%s,%s,p99_ms,%s\n", r, e, p, $1, $7
    }')
  if [ "$(printf '%s\n' "$rows" | grep -c ',rps,')" -ne "$(tr ',' '\n' <<< "$TESTS" | grep -c .)" ]; then
    echo "redis-benchmark against $ep (-P $pipeline) gave no GET/SET results:" >&2
    printf '%s\n' "$csv" >&2
    cat "$work/benchmark.err" >&2
    exit 1
  fi
  printf '%s\n' "$rows" >> "$OUT"
  echo "$round,$ep,$pipeline,$(tr 'a-z,' 'A-Z+' <<< "$TESTS"),cpu_us_per_cmd,$(us_per $((after - before)) $(( $(tr ',' '\n' <<< "$TESTS" | grep -c .) * n )) 3)" >> "$OUT"
  printf '  round %s  %-9s -P %-3s %s\n' "$round" "$ep" "$pipeline" \
    "$(printf '%s\n' "$rows" | awk -F, '$5 == "rps" { printf "%s %.0f/s  ", $4, $6 }')" >&2
}

for ((round = 1; round <= ROUNDS; round++)); do
  for ep in $(rotated "$round" "${ENDPOINTS[@]}"); do
    for pipeline in $PIPELINES; do
      bench_one "$round" "$ep" "$pipeline"
    done
  done
done

if [ "$IDLE_CONNS" -gt 0 ]; then
  echo "idle connections: $IDLE_CONNS per endpoint" >&2
  for ep in "${ENDPOINTS[@]}"; do
    read -r base loaded per_conn < <(python3 "$here/scripts/idle_connections.py" \
      --port "${PORT[$ep]}" --pid "${PID[$ep]}" --count "$IDLE_CONNS" --password "$pass_default")
    echo "-,$ep,-,idle,kib_per_conn,$per_conn" >> "$OUT"
    echo "  $ep: RSS $base KiB idle, $loaded KiB with $IDLE_CONNS connections" >&2
  done
fi

reference=twemproxy
[[ " ${ENDPOINTS[*]} " == *" twemproxy "* ]] || reference=${ENDPOINTS[0]}
python3 "$here/scripts/report.py" "$OUT" "$reference"
echo
echo "raw results: $OUT"
