#!/usr/bin/env bash
# The full side-by-side comparison on this machine, driven by
# custos-loadtest: Redis directly, custos, twemproxy (nutcracker) and
# HAProxy in TCP mode in front of one redis-server; PostgreSQL directly,
# custos and PgBouncer in front of one PostgreSQL. Every test is one
# `custos-loadtest compare` run: every endpoint once per round, the order
# rotated from round to round, medians over rounds and ratios against the
# store reached directly.
#
#   bench/compare_all.sh                          # defaults: about 10 minutes on 2 cores
#   ROUNDS=3 BENCH_DURATION=5s bench/compare_all.sh
#   BENCH_REDIS_TESTS="getset-p1" BENCH_PG_TESTS="" bench/compare_all.sh
#
# Tests (name: workload and shape; every one with BENCH_CONNECTIONS
# connections, BENCH_DURATION measured after a BENCH_WARMUP warm-up):
#   Redis       getset-p1    GET/SET, half writes, 64-byte values, pipeline 1
#               getset-p16   the same, pipeline 16
#               memory       "agent memory" records with personal data in
#                            them (HSET with JSON metadata and text; HGETALL)
#               churn        connect, AUTH, PING, close (BENCH_CHURN_CONNECTIONS)
#   PostgreSQL  select-prepared  point selects, statements prepared per connection
#               select-simple    point selects, simple query protocol
#               memory           agent memory records (INSERT with jsonb; recall
#                                an agent's latest five), prepared
#               churn            connect, SCRAM, SELECT 1, close
#
# Credentials (fairness): the Redis store has a `requirepass` and the ACL
# user custos (the appliance's upstream identity); every client sends
# `AUTH <password>`: the store checks it directly and behind HAProxy,
# twemproxy checks it itself (redis_auth), custos answers it itself (auth =
# "none", development mode) and logs in upstream with its own credential.
# The PostgreSQL role `bench` logs in with SCRAM-SHA-256; PgBouncer checks
# clients against the role's SCRAM verifier and pools its store connections
# (pool_mode = session); custos (auth = "none") gives each client a store
# connection of its own. Clients use plain TCP (no TLS) throughout.
#
# custos' configuration: by default (CUSTOS_FEATURE_SET=full) custos runs
# as it would in production, with policy, masking and audit on:
#   policy   bench/configs/policy50_redis.toml, policy50_pg.toml: 50 rules
#            per target, none of which matches the benchmark's commands, so
#            every command is checked against all of them
#   masking  bench/configs/mask.toml: every built-in detector on every reply
#   audit    an async trail (every command, its decision and reply summary,
#            masked, hash-chained, signed checkpoints) in the run's folder
# CUSTOS_FEATURE_SET=none runs the bare proxy. More TOML may be added:
#   CUSTOS_SERVER_EXTRA        raw lines for the [server] section
#   CUSTOS_TARGET_EXTRA        raw lines for both [[target]]s
#   CUSTOS_CONFIG_EXTRA        raw TOML appended after the targets (whole
#                              sections, e.g. [audit] or [[policy]])
#   CUSTOS_FEATURES            a short description of what is switched on,
#                              for the report (default: the feature set's)
#
# Outputs (DATE is the run's UTC date and time, e.g. 2026-11-30T0715):
#   bench/results/compare_all-DATE.csv         one row per test and endpoint:
#                                              medians and ratios
#   bench/results/compare_all-DATE.svg         latency by percentile of the
#                                              first test run (all endpoints)
#   bench/results/compare_all-DATE-TEST.svg    the same for every test
#   bench/results/compare_all-DATE-TEST.json   custos-loadtest's full reports
#   bench/RESULTS.md                           machine, date, commands, table
#
# Environment (defaults in brackets):
#   ROUNDS [3]  BENCH_DURATION [5s]  BENCH_WARMUP [1s]
#   BENCH_CONNECTIONS [16]  BENCH_CHURN_CONNECTIONS [4]  BENCH_THREADS [1]
#   BENCH_KEYSPACE [100000]
#   BENCH_REDIS_ENDPOINTS ["direct custos twemproxy haproxy"]
#   BENCH_PG_ENDPOINTS ["direct custos pgbouncer"]
#   BENCH_REDIS_TESTS ["getset-p1 getset-p16 memory churn"]
#   BENCH_PG_TESTS ["select-prepared select-simple memory churn"]
#   CUSTOS_WORKERS [1]          custos shards (one: the store and the load
#                               generator need the other core)
#   CUSTOS_BIN, LOADTEST_BIN    binaries to use instead of release builds
#   PG_BIN [/usr/lib/postgresql/15/bin]  PG_OS_USER [postgres]
#   BENCH_NOTE                  free text for the report
#   BENCH_RESULTS [bench/results]  BENCH_SUMMARY [bench/RESULTS.md]
#
# Nothing is installed from here; missing tools are named and the run stops.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
. "$here/scripts/common.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${BENCH_DURATION:-5s}
WARMUP=${BENCH_WARMUP:-1s}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
CHURN_CONNECTIONS=${BENCH_CHURN_CONNECTIONS:-4}
THREADS=${BENCH_THREADS:-1}
KEYSPACE=${BENCH_KEYSPACE:-100000}
read -r -a REDIS_ENDPOINTS <<< "${BENCH_REDIS_ENDPOINTS-direct custos twemproxy haproxy}"
read -r -a PG_ENDPOINTS <<< "${BENCH_PG_ENDPOINTS-direct custos pgbouncer}"
read -r -a REDIS_TESTS <<< "${BENCH_REDIS_TESTS-getset-p1 getset-p16 memory churn}"
read -r -a PG_TESTS <<< "${BENCH_PG_TESTS-select-prepared select-simple memory churn}"
CUSTOS_WORKERS=${CUSTOS_WORKERS:-1}
CUSTOS_SERVER_EXTRA=${CUSTOS_SERVER_EXTRA:-}
CUSTOS_TARGET_EXTRA=${CUSTOS_TARGET_EXTRA:-}
CUSTOS_CONFIG_EXTRA=${CUSTOS_CONFIG_EXTRA:-}
CUSTOS_FEATURE_SET=${CUSTOS_FEATURE_SET:-full}
case "$CUSTOS_FEATURE_SET" in
  full) default_features="policy (50 rules per target), masking (every detector, partial) and audit (async) on" ;;
  none) default_features="none (the bare proxy)" ;;
  *) echo "CUSTOS_FEATURE_SET is full or none, not '$CUSTOS_FEATURE_SET'" >&2; exit 2 ;;
esac
CUSTOS_FEATURES=${CUSTOS_FEATURES:-$default_features}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OS_USER=${PG_OS_USER:-postgres}
RESULTS=${BENCH_RESULTS:-$here/results}
SUMMARY=${BENCH_SUMMARY:-$here/RESULTS.md}
stamp=$(date -u +%Y-%m-%dT%H%M)
csv_out="$RESULTS/compare_all-$stamp.csv"

# ---- tools ----
need=(python3)
[ ${#REDIS_TESTS[@]} -eq 0 ] || need+=(redis-server redis-cli)
[ ${#PG_TESTS[@]} -eq 0 ] || need+=("$PG_BIN/initdb" "$PG_BIN/postgres" "$PG_BIN/psql")
for ep in "${REDIS_ENDPOINTS[@]}" "${PG_ENDPOINTS[@]}"; do
  case "$ep" in
    direct) ;;
    custos) [ -n "${CUSTOS_BIN:-}" ] || need+=(cargo) ;;
    twemproxy) need+=(nutcracker) ;;
    haproxy) need+=(haproxy) ;;
    pgbouncer) need+=(pgbouncer) ;;
    *) echo "unknown endpoint '$ep'" >&2; exit 2 ;;
  esac
done
[ -n "${LOADTEST_BIN:-}" ] || need+=(cargo)
pg_store_user
require_tools "(Debian: apt-get install redis-server redis-tools nutcracker haproxy pgbouncer \
postgresql-15 python3; or leave endpoints out with BENCH_*_ENDPOINTS)" "${need[@]}"
[ ${#PG_TESTS[@]} -eq 0 ] || pg_store_user_check
psql=$PG_BIN/psql

# ---- binaries ----
bench_setup custos-compare-all
if [[ " ${REDIS_ENDPOINTS[*]} ${PG_ENDPOINTS[*]} " == *" custos "* ]]; then build_custos; fi
if [ -n "${LOADTEST_BIN:-}" ]; then
  loadtest=$LOADTEST_BIN
else
  echo "building custos-loadtest (release)..." >&2
  (cd "$root" && cargo build --quiet --release -p custos-loadtest)
  loadtest="${CARGO_TARGET_DIR:-$root/target}/release/custos-loadtest"
  case "$loadtest" in /*) ;; *) loadtest="$root/$loadtest" ;; esac
fi
load_start=$(loadavg)
mkdir -p "$RESULTS"

# custos_toml NAME PROTOCOL PORT UPSTREAM_PORT UPSTREAM_USER PASSWORD_FILE
# [TARGET_LINE...]: a whole custos configuration with one target, the
# feature set's sections and the CUSTOS_*_EXTRA lines.
custos_toml() {
  local admin name=$1 proto=$2
  admin=$(free_port)
  custos_server_toml "$admin"
  [ -z "$CUSTOS_SERVER_EXTRA" ] || printf '%s\n' "$CUSTOS_SERVER_EXTRA"
  if [ "$CUSTOS_FEATURE_SET" = full ]; then
    mkdir -p "$work/custos-$proto"
    custos_audit_toml custos-audit "$work/custos-$proto"
  fi
  custos_target_toml "$1" "$2" "$3" "$4" "$5" "$6" none
  shift 6
  [ $# -eq 0 ] || printf '%s\n' "$@"
  [ -z "$CUSTOS_TARGET_EXTRA" ] || printf '%s\n' "$CUSTOS_TARGET_EXTRA"
  if [ "$CUSTOS_FEATURE_SET" = full ]; then
    local policy=policy50_redis
    [ "$proto" = postgres ] && policy=policy50_pg
    printf '\n'
    sed "s|@WORK@|$work|g" "$here/configs/$policy.toml" "$here/configs/mask.toml"
    # The policy files name the scripts' usual targets.
    [ "$name" = "$(policy_target "$policy")" ] ||
      { echo "$policy.toml is for target $(policy_target "$policy"), not $name" >&2; exit 2; }
  fi
  [ -z "$CUSTOS_CONFIG_EXTRA" ] || printf '\n%s\n' "$CUSTOS_CONFIG_EXTRA"
}
policy_target() { awk -F'"' '/^target = / { print $2; exit }' "$here/configs/$1.toml"; }

# compare NAME PROTOCOL ENDPOINTS... -- LOADTEST_ARGS...: one
# `custos-loadtest compare` over "NAME=URL" ENDPOINTS, outputs named after
# the test.
commands=()
compare() {
  local test=$1 proto=$2 eps=() args=()
  shift 2
  while [ "$1" != -- ]; do eps+=(--endpoint "$1"); shift; done
  shift
  args=(compare "${eps[@]}" --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP"
        --threads "$THREADS" --keyspace "$KEYSPACE" --quiet "$@")
  echo "== $proto $test" >&2
  "$loadtest" "${args[@]}" \
    --json "$RESULTS/compare_all-$stamp-$proto-$test.json" \
    --plot "$RESULTS/compare_all-$stamp-$proto-$test.svg" \
    | tee "$work/$proto-$test.txt"
  commands+=("custos-loadtest ${args[*]//$work/TMP}")
  [ -n "${headline:-}" ] || headline="$RESULTS/compare_all-$stamp-$proto-$test.svg"
}

# ---- Redis ----
if [ ${#REDIS_TESTS[@]} -gt 0 ]; then
  pass_default=$(random_secret)
  pass_custos=$(random_secret)
  redis_port=$(free_port)
  mkdir -p "$work/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work/redis" --logfile "$work/redis/redis.log" --maxclients 10000 \
    --requirepass "$pass_default" \
    --user custos on ">$pass_custos" '~*' '&*' '+@all' &
  track redis "$redis_port"
  redis_wait_ping "$redis_port" "$pass_default"
  for ep in "${REDIS_ENDPOINTS[@]}"; do
    case "$ep" in
      direct) PORT[direct-redis]=$redis_port ;;
      custos)
        printf '%s' "$pass_custos" > "$work/custos-redis-secret"
        port=$(free_port)
        custos_toml cache redis "$port" "$redis_port" custos "$work/custos-redis-secret" \
          > "$work/custos-redis.toml"
        "$custos_bin" run --config "$work/custos-redis.toml" 2>"$work/custos-redis.log" &
        track custos-redis "$port"
        ;;
      twemproxy)
        port=$(free_port)
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
   - 127.0.0.1:$redis_port:1
YML
        nutcracker -c "$work/nutcracker.yml" -o "$work/twemproxy-redis.log" \
          -s "$(free_port)" -a 127.0.0.1 -p "$work/nutcracker.pid" &
        track twemproxy-redis "$port"
        ;;
      haproxy)
        start_haproxy redis 4096 "$(free_port)" "$redis_port"
        PID[haproxy-redis]=${PID[haproxy]}; PORT[haproxy-redis]=${PORT[haproxy]}
        ;;
    esac
  done
  redis_eps=()
  for ep in "${REDIS_ENDPOINTS[@]}"; do
    [ "$ep" = direct ] || redis_wait_ping "${PORT[$ep-redis]}" "$pass_default" || {
      cat "$work/$ep-redis.log" >&2 2>/dev/null; exit 1; }
    redis_eps+=("$ep=redis://127.0.0.1:${PORT[$ep-redis]}")
  done
  export CUSTOS_LOADTEST_PASSWORD=$pass_default
  for test in "${REDIS_TESTS[@]}"; do
    case "$test" in
      getset-p1) compare "$test" redis "${redis_eps[@]}" -- --connections "$CONNECTIONS" --pipeline 1 ;;
      getset-p16) compare "$test" redis "${redis_eps[@]}" -- --connections "$CONNECTIONS" --pipeline 16 ;;
      memory) compare "$test" redis "${redis_eps[@]}" -- --workload memory --connections "$CONNECTIONS" ;;
      churn) compare "$test" redis "${redis_eps[@]}" -- --workload churn --connections "$CHURN_CONNECTIONS" ;;
      *) echo "unknown Redis test '$test'" >&2; exit 2 ;;
    esac
  done
  redis_version=$(redis-server --version | cut -d' ' -f1-3)
fi

# ---- PostgreSQL ----
if [ ${#PG_TESTS[@]} -gt 0 ]; then
  pass_bench=$(random_secret)
  pg_port=$(free_port)
  printf '%s\n' "$pass_bench" > "$work/bench-password"
  pg_initdb
  cat > "$work/pg/pg_hba.conf" <<HBA
local all postgres             trust
host  all bench    127.0.0.1/32 scram-sha-256
HBA
  max_conn=$(( 4 * (CONNECTIONS > CHURN_CONNECTIONS ? CONNECTIONS : CHURN_CONNECTIONS) + 20 ))
  pg_store_settings "$pg_port" "$max_conn" 0 -c shared_buffers=256MB
  pg_start "$pg_port" "${store_settings[@]}"
  su_psql -d postgres <<SQL
CREATE ROLE bench LOGIN PASSWORD '$pass_bench';
CREATE DATABASE bench OWNER bench;
SQL
  for ep in "${PG_ENDPOINTS[@]}"; do
    case "$ep" in
      direct) PORT[direct-pg]=$pg_port ;;
      custos)
        port=$(free_port)
        custos_toml bench postgres "$port" "$pg_port" bench "$work/bench-password" \
          'upstream_database = "bench"' 'allow_plaintext_auth = true' > "$work/custos-pg.toml"
        "$custos_bin" run --config "$work/custos-pg.toml" 2>"$work/custos-pg.log" &
        track custos-pg "$port"
        ;;
      pgbouncer)
        secret=$(su_psql -d postgres -A -t -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
        printf '"bench" "%s"\n' "$secret" > "$work/pgbouncer-users.txt"
        chmod 600 "$work/pgbouncer-users.txt"
        [ "$(id -u)" = 0 ] && chown "$PG_OS_USER:" "$work/pgbouncer-users.txt"
        port=$(free_port)
        pool=$(( CONNECTIONS > CHURN_CONNECTIONS ? CONNECTIONS : CHURN_CONNECTIONS ))
        cat > "$work/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/pgbouncer-users.txt
pool_mode = session
default_pool_size = $pool
max_client_conn = $(( pool * 4 + 100 ))
log_connections = 0
log_disconnections = 0
INI
        (cd "$work" && exec "${as_store[@]}" pgbouncer "$work/pgbouncer.ini" >"$work/pgbouncer-pg.log" 2>&1) &
        track pgbouncer-pg "$port"
        ;;
      twemproxy|haproxy) echo "endpoint $ep is for Redis only here" >&2; exit 2 ;;
    esac
  done
  pg_eps=()
  for ep in "${PG_ENDPOINTS[@]}"; do
    pg_wait_select "${PORT[$ep-pg]}" bench "$pass_bench" || {
      cat "$work/$ep-pg.log" >&2 2>/dev/null; exit 1; }
    pg_eps+=("$ep=postgres://bench@127.0.0.1:${PORT[$ep-pg]}/bench")
  done
  export CUSTOS_LOADTEST_PASSWORD=$pass_bench
  # The tables are created and loaded once, on the store itself when it is
  # an endpoint: custos' policy refuses DDL through the appliance.
  setup=()
  [[ " ${PG_ENDPOINTS[*]} " == *" direct "* ]] && setup=(--setup-on direct)
  for test in "${PG_TESTS[@]}"; do
    case "$test" in
      select-prepared) compare "$test" postgres "${pg_eps[@]}" -- "${setup[@]}" --connections "$CONNECTIONS" --mode prepared ;;
      select-simple) compare "$test" postgres "${pg_eps[@]}" -- "${setup[@]}" --connections "$CONNECTIONS" --mode simple ;;
      memory) compare "$test" postgres "${pg_eps[@]}" -- "${setup[@]}" --workload memory --connections "$CONNECTIONS" ;;
      churn) compare "$test" postgres "${pg_eps[@]}" -- --workload churn --mode simple \
               --connections "$CHURN_CONNECTIONS" ;;
      *) echo "unknown PostgreSQL test '$test'" >&2; exit 2 ;;
    esac
  done
  pg_version=$("$PG_BIN/postgres" --version)
fi
load_end=$(loadavg)

# ---- CSV, headline plot, RESULTS.md ----
# The headline plot is the first test's.
[ -z "${headline:-}" ] || cp "$headline" "$RESULTS/compare_all-$stamp.svg"
versions=()
[ -z "${redis_version:-}" ] || versions+=("$redis_version")
[ -z "${pg_version:-}" ] || versions+=("$pg_version")
for ep in "${REDIS_ENDPOINTS[@]}" "${PG_ENDPOINTS[@]}"; do
  case "$ep" in
    custos) versions+=("custos $("$custos_bin" --version 2>/dev/null | awk '{print $NF}'), workers = $CUSTOS_WORKERS; $(custos_built)") ;;
    twemproxy) versions+=("$(nutcracker --version 2>&1 | head -1)") ;;
    haproxy) versions+=("$(haproxy -v | head -1 | cut -d' ' -f1-3), mode tcp") ;;
    pgbouncer) versions+=("$(pgbouncer --version | head -1), pool_mode = session, auth_type = scram-sha-256") ;;
  esac
done
printf '%s\n' "${versions[@]}" | awk '!seen[$0]++' > "$work/versions.txt"
printf '%s\n' "${commands[@]}" > "$work/commands.txt"
python3 "$here/scripts/compare_all_report.py" \
  --stamp "$stamp" --results "$RESULTS" --csv "$csv_out" --summary "$SUMMARY" \
  --machine "$(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)" \
  --load "$load_start at the start, $load_end at the end" \
  --features "$CUSTOS_FEATURES" --note "${BENCH_NOTE:-}" \
  --versions "$work/versions.txt" --commands "$work/commands.txt" \
  --settings "ROUNDS=$ROUNDS BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_CONNECTIONS=$CONNECTIONS BENCH_CHURN_CONNECTIONS=$CHURN_CONNECTIONS BENCH_THREADS=$THREADS BENCH_KEYSPACE=$KEYSPACE CUSTOS_WORKERS=$CUSTOS_WORKERS"
echo
echo "table: $csv_out"
echo "summary: $SUMMARY"
