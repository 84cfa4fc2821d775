#!/usr/bin/env bash
# Side-by-side PostgreSQL throughput and CPU: PostgreSQL directly, custos,
# PgBouncer and HAProxy in TCP mode, all in front of the same store,
# interleaved over several rounds.
#
#   bench/pg_compare.sh                     # defaults: about 15 minutes on 2 cores
#   ROUNDS=2 BENCH_DURATION=5 BENCH_SCALE=2 bench/pg_compare.sh
#
# The script starts its own PostgreSQL in a temporary folder on a free port
# (never the machine's own cluster), loads it once with `pgbench -i -s SCALE`
# and prewarms the tables into shared buffers. Each round then runs every
# endpoint once, in a rotated order (so no endpoint always runs first, on a
# cold cache, or last, on a hot machine), with
#   pgbench -n -S -M MODE -c 16 -j 2 -T 10     for MODE in simple, extended, prepared
#   pgbench -n -S -M simple -C -c 4 -j 2 -T 10 (a new connection per transaction)
# -S is pgbench's select-only script: one primary-key lookup per
# transaction, so the cost of carrying a message dominates, which is what an
# endpoint adds. The report gives medians over rounds, ratios against
# PgBouncer, the average latency, and CPU time per transaction: of the
# serving process (utime+stime from /proc/PID/stat, all threads, divided by
# transactions) and of the store (the postmaster, its live backends and the
# backends it reaped during the test). For PostgreSQL directly only the
# store's column is filled. Raw numbers go to bench/results/pg_compare.csv,
# the report with the machine, versions and exact commands to
# bench/results/pg_compare.txt.
#
# The store and the credentials (fairness): one PostgreSQL serves every
# endpoint. The application role `bench` logs in over TCP with
# scram-sha-256 only (pg_hba.conf); its password is in a file. Every
# endpoint logs in to the store as that role:
#   postgres   pgbench authenticates itself (SCRAM) at every connection;
#   haproxy    passes bytes, so the same SCRAM exchange goes through it;
#   pgbouncer  checks the client against an auth_file holding the role's
#              SCRAM verifier (auth_type = scram-sha-256), and logs in to
#              the store with the keys the client's proof yields; its
#              store connections are pooled (pool_mode = session,
#              default_pool_size >= clients, so no client ever queues);
#   custos     answers the client itself (auth = "none", development mode:
#              the client proves nothing) and gives each client a store
#              connection of its own, logged in with the appliance's
#              credential (SCRAM; the salted password is cached per shard).
# So in the throughput tests each endpoint authenticates once per
# connection and then only proxies. The churn test is where they differ:
# the client's SCRAM proof (PBKDF2, in pgbench's process) is paid for
# every endpoint but custos, and the store's backend start-up for every
# endpoint but PgBouncer, which keeps its store connections open.
#
# Environment (defaults in brackets):
#   ROUNDS [5]                  rounds; each runs every endpoint once
#   BENCH_DURATION [10]         seconds per pgbench run (-T)
#   BENCH_SCALE [10]            pgbench scale factor (100,000 accounts each)
#   BENCH_CLIENTS [16]  BENCH_THREADS [2]   pgbench -c and -j
#   BENCH_MODES ["simple extended prepared"]  query protocols (-M)
#   BENCH_CHURN_CLIENTS [4]     clients of the connection-churn test (0 skips it)
#   BENCH_CHURN_MODE [simple]   its query protocol
#   BENCH_ENDPOINTS ["postgres custos pgbouncer haproxy"]; `pgbouncer-tx`
#                               adds a second PgBouncer with
#                               pool_mode = transaction (it skips -M prepared,
#                               which PgBouncer before 1.21 cannot carry in
#                               that mode)
#   PGBOUNCER_AUTH [scram-sha-256]  PgBouncer's auth_type towards clients
#                               (md5 and plain keep the password in the
#                               auth_file instead of the SCRAM verifier)
#   CUSTOS_WORKERS [1]          custos shards. One by default: on this 2-core
#                               machine the store and pgbench need the other
#                               core, and PgBouncer is one thread too.
#                               CUSTOS_WORKERS=auto runs one shard per core.
#   CUSTOS_BIN                  use this custos binary instead of a release build
#   PG_BIN [/usr/lib/postgresql/15/bin]  initdb, postgres, pgbench, psql
#   PG_OS_USER [postgres]       the system user the store and PgBouncer run
#                               as when the script runs as root (PostgreSQL
#                               refuses to run as root)
#   BENCH_NOTE                  free text written into the report (e.g. what
#                               else the machine was doing)
#   BENCH_OUT [bench/results/pg_compare.csv]  BENCH_REPORT [same name, .txt]
#
# Nothing is installed from here; missing tools are named and the run stops.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

ROUNDS=${ROUNDS:-5}
DURATION=${BENCH_DURATION:-10}
SCALE=${BENCH_SCALE:-10}
CLIENTS=${BENCH_CLIENTS:-16}
THREADS=${BENCH_THREADS:-2}
MODES=${BENCH_MODES:-"simple extended prepared"}
CHURN_CLIENTS=${BENCH_CHURN_CLIENTS:-4}
CHURN_MODE=${BENCH_CHURN_MODE:-simple}
read -r -a ENDPOINTS <<< "${BENCH_ENDPOINTS:-postgres custos pgbouncer haproxy}"
PGBOUNCER_AUTH=${PGBOUNCER_AUTH:-scram-sha-256}
CUSTOS_WORKERS=${CUSTOS_WORKERS:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OS_USER=${PG_OS_USER:-postgres}
OUT=${BENCH_OUT:-$here/results/pg_compare.csv}
REPORT=${BENCH_REPORT:-${OUT%.csv}.txt}
# pgbench's -j must not exceed -c.
CHURN_THREADS=$(( THREADS < CHURN_CLIENTS ? THREADS : CHURN_CLIENTS ))

# ---- tools ----
need=(python3 "$PG_BIN/initdb" "$PG_BIN/postgres" "$PG_BIN/pgbench" "$PG_BIN/psql")
for ep in "${ENDPOINTS[@]}"; do
  case "$ep" in
    postgres) ;;
    custos) [ -n "${CUSTOS_BIN:-}" ] || need+=(cargo) ;;
    pgbouncer|pgbouncer-tx) need+=(pgbouncer) ;;
    haproxy) need+=(haproxy) ;;
    *) echo "unknown endpoint '$ep' (postgres, custos, pgbouncer, pgbouncer-tx, haproxy)" >&2; exit 2 ;;
  esac
done
for mode in $MODES $CHURN_MODE; do
  case "$mode" in
    simple|extended|prepared) ;;
    *) echo "unknown query protocol '$mode' (simple, extended, prepared)" >&2; exit 2 ;;
  esac
done
# As root, the store and PgBouncer run as PG_OS_USER.
as_store=()
if [ "$(id -u)" = 0 ]; then
  need+=(setpriv)
  as_store=(setpriv "--reuid=$PG_OS_USER" "--regid=$PG_OS_USER" --init-groups --)
fi
missing=()
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools: ${missing[*]}" >&2
  echo "(Debian: apt-get install postgresql-15 postgresql-contrib pgbouncer haproxy python3;" \
       "PG_BIN names another PostgreSQL; or leave endpoints out with BENCH_ENDPOINTS)" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
  echo "running as root, but there is no system user '$PG_OS_USER' to run PostgreSQL as" \
       "(set PG_OS_USER)" >&2
  exit 1
fi
pgbench=$PG_BIN/pgbench
psql=$PG_BIN/psql

# ---- housekeeping ----
work=$(mktemp -d -t custos-pgbench.XXXXXX)
declare -A PID PORT
started=()
cleanup() {
  # Proxies first, then the store with a fast shutdown (SIGINT): a smart
  # one (SIGTERM) would wait for the proxies' store connections.
  for p in "${started[@]}"; do
    [ "$p" = "${PID[postgres]:-}" ] || kill "$p" 2>/dev/null || true
  done
  for p in "${started[@]}"; do
    [ "$p" = "${PID[postgres]:-}" ] || wait "$p" 2>/dev/null || true
  done
  if [ -n "${PID[postgres]:-}" ]; then
    kill -INT "${PID[postgres]}" 2>/dev/null || true
    wait "${PID[postgres]}" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The application role's password; every client gets it from PGPASSWORD.
pass_bench=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export PGPASSWORD=$pass_bench PGCONNECT_TIMEOUT=5 PGSSLMODE=disable

# wait_select ENDPOINT: until `SELECT 1` as the application role goes
# through ENDPOINT's port (the whole chain: endpoint, login, store).
wait_select() {
  for _ in $(seq 300); do
    if [ "$("$psql" -X -w -A -t -h 127.0.0.1 -p "${PORT[$1]}" -U bench -d bench \
            -c 'SELECT 1' 2>/dev/null)" = 1 ]; then
      return 0
    fi
    sleep 0.2
  done
  echo "SELECT 1 does not go through $1 (port ${PORT[$1]})" >&2
  return 1
}

# cpu_ticks PID: user+system time of a process, all its threads.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# tree_ticks PID: the same for a process and its children, including the
# children it has reaped (cutime+cstime): the postmaster and its backends.
tree_ticks() {
  # Processes end between the listing and the reading: cat fails then.
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid = $1; sub(/.*\) /, "") }
    pid == root { t += $12 + $13 + $14 + $15 }
    $2 == root { t += $12 + $13 + $14 + $15 }
    END { print t + 0 }'
}
CLK_TCK=$(getconf CLK_TCK)
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(loadavg)

# ---- the store ----
upstream_port=$(free_port)
mkdir -p "$work/sock"
printf '%s\n' "$pass_bench" > "$work/bench-password"
[ "$(id -u)" = 0 ] && chown -R "$PG_OS_USER:" "$work"
chmod 700 "$work/sock"
(cd "$work" && "${as_store[@]}" "$PG_BIN/initdb" -D "$work/pg" -U postgres -E UTF8 \
  --auth-local=trust --auth-host=reject >"$work/initdb.log" 2>&1) || {
  echo "initdb failed:" >&2; cat "$work/initdb.log" >&2; exit 1; }
# The superuser only over the private socket; the application role only
# over TCP, with SCRAM.
cat > "$work/pg/pg_hba.conf" <<HBA
local all postgres             trust
host  all bench    127.0.0.1/32 scram-sha-256
HBA
# Room for every endpoint's store connections at once (PgBouncer keeps its
# pool open), and enough shared buffers to hold the data set.
max_conn=$(( 4 * (CLIENTS > CHURN_CLIENTS ? CLIENTS : CHURN_CLIENTS) + 20 ))
shared_mb=$(( SCALE * 20 + 128 ))
store_settings=(
  -c listen_addresses=127.0.0.1 -c "port=$upstream_port"
  -c "unix_socket_directories=$work/sock" -c "max_connections=$max_conn"
  -c "shared_buffers=${shared_mb}MB" -c password_encryption=scram-sha-256
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off
  -c logging_collector=off -c log_connections=off -c log_disconnections=off
)
(cd "$work" && exec "${as_store[@]}" "$PG_BIN/postgres" -D "$work/pg" "${store_settings[@]}" \
  >"$work/postgres.log" 2>&1) &
PID[postgres]=$!; PORT[postgres]=$upstream_port; started+=("${PID[postgres]}")
su_psql() { "$psql" -X -q -v ON_ERROR_STOP=1 -h "$work/sock" -p "$upstream_port" -U postgres "$@"; }
for _ in $(seq 300); do
  su_psql -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break
  kill -0 "${PID[postgres]}" 2>/dev/null || { cat "$work/postgres.log" >&2; exit 1; }
  sleep 0.2
done
su_psql -d postgres <<SQL
CREATE ROLE bench LOGIN PASSWORD '$pass_bench';
CREATE DATABASE bench OWNER bench;
SQL
wait_select postgres
echo "loading: pgbench -i -s $SCALE ..." >&2
"$pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$upstream_port" -U bench bench \
  >"$work/pgbench-init.log" 2>&1 || { cat "$work/pgbench-init.log" >&2; exit 1; }
su_psql -d bench -A -t >/dev/null <<SQL
CREATE EXTENSION IF NOT EXISTS pg_prewarm;
SELECT pg_prewarm(c) FROM unnest(ARRAY['pgbench_accounts', 'pgbench_accounts_pkey',
  'pgbench_branches', 'pgbench_tellers']::regclass[]) AS c;
SQL

# ---- the endpoints ----
write_pgbouncer() { # NAME POOL_MODE PORT
  local name=$1 pool=$2 port=$3 pool_size
  pool_size=$(( CLIENTS > CHURN_CLIENTS ? CLIENTS : CHURN_CLIENTS ))
  cat > "$work/$name.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$upstream_port dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = $PGBOUNCER_AUTH
auth_file = $work/pgbouncer-users.txt
pool_mode = $pool
default_pool_size = $pool_size
max_client_conn = $(( pool_size * 4 + 100 ))
log_connections = 0
log_disconnections = 0
INI
}
for ep in "${ENDPOINTS[@]}"; do
  case "$ep" in
    custos)
      if [ -n "${CUSTOS_BIN:-}" ]; then
        bin=$CUSTOS_BIN
      else
        echo "building custos (release)..." >&2
        (cd "$root" && cargo build --quiet --release -p custos --bin custos)
        bin="${CARGO_TARGET_DIR:-$root/target}/release/custos"
        case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
      fi
      custos_bin=$bin
      port=$(free_port); admin=$(free_port)
      workers=$CUSTOS_WORKERS
      [[ "$workers" =~ ^[0-9]+$ ]] || workers="\"$workers\""
      cat > "$work/custos.toml" <<TOML
[server]
workers = $workers
admin_listen = "127.0.0.1:$admin"
shutdown_grace_ms = 1000
log_format = "text"

[[target]]
name = "bench"
protocol = "postgres"
listen = "127.0.0.1:$port"
upstream = "127.0.0.1:$upstream_port"
upstream_user = "bench"
upstream_password_file = "$work/bench-password"
upstream_database = "bench"
auth = "none"
allow_plaintext_auth = true
TOML
      "$bin" run --config "$work/custos.toml" 2>"$work/custos.log" &
      PID[custos]=$!; PORT[custos]=$port; started+=("${PID[custos]}")
      ;;
    pgbouncer|pgbouncer-tx)
      if [ ! -e "$work/pgbouncer-users.txt" ]; then
        if [ "$PGBOUNCER_AUTH" = scram-sha-256 ]; then
          secret=$(su_psql -d postgres -A -t \
                     -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
        else
          secret=$pass_bench
        fi
        printf '"bench" "%s"\n' "$secret" > "$work/pgbouncer-users.txt"
        chmod 600 "$work/pgbouncer-users.txt"
        [ "$(id -u)" = 0 ] && chown "$PG_OS_USER:" "$work/pgbouncer-users.txt"
      fi
      port=$(free_port)
      pool=session
      [ "$ep" = pgbouncer-tx ] && pool=transaction
      write_pgbouncer "$ep" "$pool" "$port"
      (cd "$work" && exec "${as_store[@]}" pgbouncer "$work/$ep.ini" >"$work/$ep.log" 2>&1) &
      PID[$ep]=$!; PORT[$ep]=$port; started+=("${PID[$ep]}")
      ;;
    haproxy)
      port=$(free_port)
      cat > "$work/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend pg_in
  bind 127.0.0.1:$port
  default_backend pg_out
backend pg_out
  server store 127.0.0.1:$upstream_port
CFG
      haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
      PID[haproxy]=$!; PORT[haproxy]=$port; started+=("${PID[haproxy]}")
      ;;
  esac
done
for ep in "${ENDPOINTS[@]}"; do
  if ! wait_select "$ep"; then
    echo "$ep did not come up; its log:" >&2
    cat "$work/$ep.log" >&2 2>/dev/null || true
    exit 1
  fi
done

pg_version=$("$PG_BIN/postgres" --version)
echo "machine: $(nproc) cores, Linux $(uname -r); $pg_version" >&2
echo "rounds=$ROUNDS duration=${DURATION}s scale=$SCALE clients=$CLIENTS threads=$THREADS" \
     "modes: $MODES; churn: $CHURN_CLIENTS clients, $CHURN_MODE; endpoints: ${ENDPOINTS[*]}" >&2

mkdir -p "$(dirname "$OUT")"
echo "round,endpoint,mode,test,metric,value" > "$OUT"

# bench_one ROUND ENDPOINT TEST MODE: one pgbench run; TEST is `select`
# (CLIENTS persistent connections) or `churn` (-C: a connection per
# transaction).
bench_one() {
  local round=$1 ep=$2 test=$3 mode=$4
  local args=(-n -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$DURATION")
  [ "$test" = churn ] && args=(-n -S -M "$mode" -C -c "$CHURN_CLIENTS" -j "$CHURN_THREADS" -T "$DURATION")
  local pid=${PID[$ep]} before after store_before store_after out rc=0
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$ep (pid $pid) is gone; its log:" >&2
    cat "$work/$ep.log" >&2 2>/dev/null || true
    exit 1
  fi
  store_before=$(tree_ticks "${PID[postgres]}")
  before=$(cpu_ticks "$pid")
  out=$("$pgbench" "${args[@]}" -h 127.0.0.1 -p "${PORT[$ep]}" -U bench bench \
          2>"$work/pgbench.err") || rc=$?
  after=$(cpu_ticks "$pid")
  # Backends exit, and are reaped, just after their client leaves.
  sleep 0.2
  store_after=$(tree_ticks "${PID[postgres]}")
  local tx tps lat conn failed
  tx=$(printf '%s\n' "$out" | awk -F': ' '/^number of transactions actually processed/ { print $2 }')
  failed=$(printf '%s\n' "$out" | awk '/^number of failed transactions/ { print $5 }')
  tps=$(printf '%s\n' "$out" | awk '/^tps = / { print $3 }')
  lat=$(printf '%s\n' "$out" | awk '/^latency average = / { print $4 }')
  conn=$(printf '%s\n' "$out" | awk '/^average connection time = / { print $5 }')
  if [ "$rc" -ne 0 ] || [ -z "$tx" ] || [ "$tx" = 0 ] || [ -z "$tps" ] || [ "${failed:-0}" != 0 ]; then
    echo "pgbench against $ep ($test, -M $mode) failed (exit $rc):" >&2
    printf '%s\n' "$out" >&2
    cat "$work/pgbench.err" >&2
    exit 1
  fi
  {
    echo "$round,$ep,$mode,$test,tps,$tps"
    echo "$round,$ep,$mode,$test,transactions,$tx"
    echo "$round,$ep,$mode,$test,latency_ms,$lat"
    [ -n "$conn" ] && echo "$round,$ep,$mode,$test,connect_ms,$conn"
    if [ "$ep" != postgres ]; then
      awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$tx" \
        'BEGIN { printf "%.3f\n", d / hz * 1e6 / n }' | sed "s/^/$round,$ep,$mode,$test,cpu_us_per_tx,/"
    fi
    awk -v d=$((store_after - store_before)) -v hz="$CLK_TCK" -v n="$tx" \
      'BEGIN { printf "%.3f\n", d / hz * 1e6 / n }' | sed "s/^/$round,$ep,$mode,$test,store_cpu_us_per_tx,/"
  } >> "$OUT"
  printf '  round %s  %-12s %-6s -M %-9s %10.0f tps  %7.3f ms\n' \
    "$round" "$ep" "$test" "$mode" "$tps" "$lat" >&2
}

count=${#ENDPOINTS[@]}
for ((round = 1; round <= ROUNDS; round++)); do
  for ((i = 0; i < count; i++)); do
    ep=${ENDPOINTS[$(( (i + round - 1) % count ))]}
    for mode in $MODES; do
      # Transaction pooling loses prepared statements between transactions
      # (PgBouncer before 1.21).
      [ "$ep" = pgbouncer-tx ] && [ "$mode" = prepared ] && continue
      bench_one "$round" "$ep" select "$mode"
    done
    if [ "$CHURN_CLIENTS" -gt 0 ] && ! { [ "$ep" = pgbouncer-tx ] && [ "$CHURN_MODE" = prepared ]; }; then
      bench_one "$round" "$ep" churn "$CHURN_MODE"
    fi
  done
done
load_end=$(loadavg)

reference=pgbouncer
[[ " ${ENDPOINTS[*]} " == *" pgbouncer "* ]] || reference=${ENDPOINTS[0]}

# ---- the report: machine, versions, commands, then the medians ----
{
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$root" status --porcelain -- appliance parsers Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    commit="$commit with uncommitted changes"
  fi
  echo "# bench/pg_compare.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
       "$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
  echo "load average (1/5/15 min): $load_start at the start, $load_end at the end"
  [ -n "${BENCH_NOTE:-}" ] && echo "note: $BENCH_NOTE"
  echo "store: $pg_version; $("$pgbench" --version)"
  for ep in "${ENDPOINTS[@]}"; do
    case "$ep" in
      custos) echo "custos: $("$custos_bin" --version), workers = $CUSTOS_WORKERS; binary built" \
                   "$(date -u -r "$custos_bin" '+%Y-%m-%d %H:%M UTC'), tree at $commit" ;;
      pgbouncer) echo "pgbouncer: $(pgbouncer --version | head -1), pool_mode = session," \
                      "auth_type = $PGBOUNCER_AUTH" ;;
      pgbouncer-tx) echo "pgbouncer-tx: $(pgbouncer --version | head -1), pool_mode = transaction," \
                         "auth_type = $PGBOUNCER_AUTH" ;;
      haproxy) echo "haproxy: $(haproxy -v | head -1 | cut -d' ' -f1-3), mode tcp" ;;
    esac
  done
  echo "settings: ROUNDS=$ROUNDS BENCH_DURATION=$DURATION BENCH_SCALE=$SCALE" \
       "BENCH_CLIENTS=$CLIENTS BENCH_THREADS=$THREADS BENCH_MODES=\"$MODES\"" \
       "BENCH_CHURN_CLIENTS=$CHURN_CLIENTS BENCH_CHURN_MODE=$CHURN_MODE"
  echo "endpoint order: rotated per round, starting from: ${ENDPOINTS[*]}"
  echo
  echo "commands (PGPASSWORD set; PORT is the endpoint's):"
  echo "  initdb -U postgres -E UTF8; postgres ${store_settings[*]//$work/TMP}"
  echo "  pg_hba: host all bench 127.0.0.1/32 scram-sha-256"
  echo "  pgbench -i -q -s $SCALE -h 127.0.0.1 -p PORT -U bench bench   (once, directly), then pg_prewarm"
  for mode in $MODES; do
    echo "  pgbench -n -S -M $mode -c $CLIENTS -j $THREADS -T $DURATION -h 127.0.0.1 -p PORT -U bench bench"
  done
  if [ "$CHURN_CLIENTS" -gt 0 ]; then
    echo "  pgbench -n -S -M $CHURN_MODE -C -c $CHURN_CLIENTS -j $CHURN_THREADS -T $DURATION" \
         "-h 127.0.0.1 -p PORT -U bench bench"
  fi
  echo "CPU: utime+stime from /proc/PID/stat before and after each run, divided by transactions;"
  echo "  proxy = the endpoint's process (all threads), store = postmaster + backends (live and reaped)."
  echo "tps: pgbench's figure without the initial connection time; for churn it includes reconnections."
  echo "churn: pgbench computes a SCRAM proof (PBKDF2) per connection for every endpoint but custos"
  echo "  (auth = \"none\" asks for nothing); every endpoint but PgBouncer (pooled) starts a store backend."
  python3 "$here/scripts/report.py" "$OUT" "$reference"
} > "$REPORT"
cat "$REPORT"
echo
echo "raw results: $OUT"
echo "report: $REPORT"
