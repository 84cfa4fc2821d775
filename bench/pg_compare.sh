#!/usr/bin/env bash
# Side-by-side PostgreSQL throughput and CPU: PostgreSQL directly, custos,
# PgBouncer and HAProxy in TCP mode, all in front of the same store,
# interleaved over several rounds, with the clients on TLS by default.
#
#   bench/pg_compare.sh                     # defaults: about 12 minutes on 2 cores
#   ROUNDS=2 BENCH_DURATION=5 BENCH_SCALE=2 bench/pg_compare.sh
#   BENCH_TLS=0 bench/pg_compare.sh         # clients in plain text
#
# The script starts its own PostgreSQL in a temporary folder on a free port
# (never the machine's own cluster), loads it once with `pgbench -i -s SCALE`
# and prewarms the tables into shared buffers. Each round then runs every
# endpoint once, in a rotated order (so no endpoint always runs first, on a
# cold cache, or last, on a hot machine), with
#   pgbench -n -S -M MODE -c 10 -j 2 -T 10     for MODE in simple, prepared
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
# TLS (BENCH_TLS=1, the default): every client connection is TLS
# (PGSSLMODE=require), with one self-signed P-256 certificate:
#   postgres   ssl = on: TLS ends at the store;
#   custos     tls_cert/tls_key on its target: TLS ends at custos, which
#              talks to the store in plain text (upstream_tls = "disable");
#   pgbouncer  client_tls_sslmode = require with client_tls_key_file and
#              client_tls_cert_file: TLS ends at PgBouncer, which talks to
#              the store in plain text (server_tls_sslmode = disable);
#   haproxy    TCP mode passes the client's TLS through, so TLS ends at
#              the store, as directly: HAProxy does no cryptography and the
#              store's CPU column holds the TLS work.
# With BENCH_TLS=0 every client is in plain text (PGSSLMODE=disable, custos
# with allow_plaintext_auth = true).
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
# every endpoint but custos, the store's backend start-up for every
# endpoint but PgBouncer, which keeps its store connections open, and with
# TLS a handshake per connection by every endpoint (by the store behind
# HAProxy).
#
# Environment (defaults in brackets):
#   ROUNDS [5]                  rounds; each runs every endpoint once
#   BENCH_DURATION [10]         seconds per pgbench run (-T)
#   BENCH_SCALE [10]            pgbench scale factor (100,000 accounts each)
#   BENCH_CLIENTS [10]  BENCH_THREADS [2]   pgbench -c and -j
#   BENCH_MODES ["simple prepared"]  query protocols (-M; extended too)
#   BENCH_CHURN_CLIENTS [4]     clients of the connection-churn test (0 skips it)
#   BENCH_CHURN_MODE [simple]   its query protocol
#   BENCH_TLS [1]               clients use TLS to every endpoint (0: plain text)
#   BENCH_ENDPOINTS ["postgres custos pgbouncer haproxy"]; `custos-audit` and
#                               `custos-sync` are custos with an [audit] trail
#                               (durability async, sync); custos_NAME is custos
#                               with bench/configs/NAME.toml added (e.g.
#                               custos_policy50_pg: a 50-rule policy); `pgbouncer-tx`
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
#   CUSTOS_SERVER_EXTRA         raw TOML lines added to custos' [server]
#                               section, e.g. "pin_cores = false"
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
. "$here/scripts/common.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${BENCH_DURATION:-10}
SCALE=${BENCH_SCALE:-10}
CLIENTS=${BENCH_CLIENTS:-10}
THREADS=${BENCH_THREADS:-2}
MODES=${BENCH_MODES:-"simple prepared"}
CHURN_CLIENTS=${BENCH_CHURN_CLIENTS:-4}
CHURN_MODE=${BENCH_CHURN_MODE:-simple}
TLS=${BENCH_TLS:-1}
read -r -a ENDPOINTS <<< "${BENCH_ENDPOINTS:-postgres custos pgbouncer haproxy}"
PGBOUNCER_AUTH=${PGBOUNCER_AUTH:-scram-sha-256}
CUSTOS_WORKERS=${CUSTOS_WORKERS:-1}
CUSTOS_SERVER_EXTRA=${CUSTOS_SERVER_EXTRA:-}
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
    custos|custos_*|custos-audit|custos-sync) [ -n "${CUSTOS_BIN:-}" ] || need+=(cargo) ;;
    pgbouncer|pgbouncer-tx) need+=(pgbouncer) ;;
    haproxy) need+=(haproxy) ;;
    *) echo "unknown endpoint '$ep' (postgres, custos, custos_<config>, custos-audit, custos-sync, pgbouncer, pgbouncer-tx, haproxy)" >&2; exit 2 ;;
  esac
done
for mode in $MODES $CHURN_MODE; do
  case "$mode" in
    simple|extended|prepared) ;;
    *) echo "unknown query protocol '$mode' (simple, extended, prepared)" >&2; exit 2 ;;
  esac
done
case "$TLS" in
  0) ;;
  1) need+=(openssl) ;;
  *) echo "BENCH_TLS is 0 or 1, not '$TLS'" >&2; exit 2 ;;
esac
# As root, the store and PgBouncer run as PG_OS_USER.
pg_store_user
require_tools "(Debian: apt-get install postgresql-15 postgresql-contrib pgbouncer haproxy openssl python3;\
 PG_BIN names another PostgreSQL; or leave endpoints out with BENCH_ENDPOINTS)" "${need[@]}"
pg_store_user_check
pgbench=$PG_BIN/pgbench
psql=$PG_BIN/psql

# ---- housekeeping ----
bench_setup custos-pgbench

# The application role's password; every client gets it from PGPASSWORD.
pass_bench=$(random_secret)
sslmode=disable
[ "$TLS" = 1 ] && sslmode=require
export PGPASSWORD=$pass_bench PGCONNECT_TIMEOUT=5 PGSSLMODE=$sslmode

# wait_select ENDPOINT: until `SELECT 1` as the application role goes
# through ENDPOINT's port (the whole chain: endpoint, login, store).
wait_select() {
  pg_wait_select "${PORT[$1]}" bench "$pass_bench" 2>/dev/null || {
    echo "SELECT 1 does not go through $1 (port ${PORT[$1]})" >&2; return 1; }
}
load_start=$(loadavg)

# ---- the store ----
upstream_port=$(free_port)
printf '%s\n' "$pass_bench" > "$work/bench-password"
# The certificate of every TLS listener (the store, custos, PgBouncer),
# readable by the store's user (pg_initdb hands it $work).
[ "$TLS" = 1 ] && self_signed_cert "$work/tls"
pg_initdb
# The superuser only over the private socket; the application role only
# over TCP (TLS or not: the proxies reach the store in plain text), with
# SCRAM.
cat > "$work/pg/pg_hba.conf" <<HBA
local all postgres             trust
host  all bench    127.0.0.1/32 scram-sha-256
HBA
# Room for every endpoint's store connections at once (PgBouncer keeps its
# pool open), and enough shared buffers to hold the data set.
max_conn=$(( 4 * (CLIENTS > CHURN_CLIENTS ? CLIENTS : CHURN_CLIENTS) + 20 ))
shared_mb=$(( SCALE * 20 + 128 ))
pg_store_settings "$upstream_port" "$max_conn" "$TLS" -c "shared_buffers=${shared_mb}MB"
pg_start "$upstream_port" "${store_settings[@]}"
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
  if [ "$TLS" = 1 ]; then
    cat >> "$work/$name.ini" <<INI
client_tls_sslmode = require
client_tls_key_file = $work/tls/key.pem
client_tls_cert_file = $work/tls/cert.pem
server_tls_sslmode = disable
INI
  fi
}
for ep in "${ENDPOINTS[@]}"; do
  case "$ep" in
    custos|custos_*|custos-audit|custos-sync)
      # custos_NAME: the same appliance with bench/configs/NAME.toml added
      # (policy, masking, audit), to measure what a feature costs.
      build_custos
      port=$(free_port); admin=$(free_port)
      extra=/dev/null
      case "$ep" in custos_*) extra="$here/configs/${ep#custos_}.toml" ;; esac
      [ -f "$extra" ] || [ "$extra" = /dev/null ] || { echo "no $extra for endpoint $ep" >&2; exit 2; }
      mkdir -p "$work/$ep"
      if [ "$TLS" = 1 ]; then
        client_tls="tls_cert = \"$work/tls/cert.pem\""$'\n'"tls_key = \"$work/tls/key.pem\""
        client_tls+=$'\n''upstream_tls = "disable"'
      else
        client_tls="allow_plaintext_auth = true"
      fi
      {
        custos_server_toml "$admin"
        echo "shutdown_grace_ms = 1000"
        [ -z "$CUSTOS_SERVER_EXTRA" ] || printf '%s\n' "$CUSTOS_SERVER_EXTRA"
        custos_audit_toml "$ep" "$work/$ep"
        custos_target_toml bench postgres "$port" "$upstream_port" bench "$work/bench-password" none
        echo 'upstream_database = "bench"'
        printf '%s\n' "$client_tls"
        sed "s|@WORK@|$work|g" "$extra"
      } > "$work/$ep.toml"
      "$custos_bin" run --config "$work/$ep.toml" 2>"$work/$ep.log" &
      track "$ep" "$port"
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
      track "$ep" "$port"
      ;;
    haproxy)
      start_haproxy pg 4096 "$(free_port)" "$upstream_port"
      ;;
  esac
done
wait_endpoints wait_select "${ENDPOINTS[@]}"

pg_version=$("$PG_BIN/postgres" --version)
echo "machine: $(nproc) cores, Linux $(uname -r); $pg_version" >&2
echo "rounds=$ROUNDS duration=${DURATION}s scale=$SCALE clients=$CLIENTS threads=$THREADS" \
     "modes: $MODES; churn: $CHURN_CLIENTS clients, $CHURN_MODE; tls=$TLS; endpoints: ${ENDPOINTS[*]}" >&2

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
  alive "$ep"
  store_before=$(tree_ticks "${PID[postgres]}")
  before=$(cpu_ticks "$pid")
  out=$("$pgbench" "${args[@]}" -h 127.0.0.1 -p "${PORT[$ep]}" -U bench bench \
          2>"$work/pgbench.err") || rc=$?
  after=$(cpu_ticks "$pid")
  # Backends exit, and are reaped, just after their client leaves.
  sleep 0.2
  store_after=$(tree_ticks "${PID[postgres]}")
  local tx tps lat conn
  pgbench_result "$out" "$rc" "$ep ($test, -M $mode)"
  {
    echo "$round,$ep,$mode,$test,tps,$tps"
    echo "$round,$ep,$mode,$test,transactions,$tx"
    echo "$round,$ep,$mode,$test,latency_ms,$lat"
    [ -n "$conn" ] && echo "$round,$ep,$mode,$test,connect_ms,$conn"
    [ "$ep" = postgres ] || echo "$round,$ep,$mode,$test,cpu_us_per_tx,$(us_per $((after - before)) "$tx" 3)"
    echo "$round,$ep,$mode,$test,store_cpu_us_per_tx,$(us_per $((store_after - store_before)) "$tx" 3)"
  } >> "$OUT"
  printf '  round %s  %-12s %-6s -M %-9s %10.0f tps  %7.3f ms\n' \
    "$round" "$ep" "$test" "$mode" "$tps" "$lat" >&2
}

for ((round = 1; round <= ROUNDS; round++)); do
  for ep in $(rotated "$round" "${ENDPOINTS[@]}"); do
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
  report_header pg_compare.sh
  echo "store: $pg_version; $("$pgbench" --version)"
  if [ "$TLS" = 1 ]; then
    echo "tls: every client on TLS (PGSSLMODE=require), self-signed P-256 certificate ($(openssl version | cut -d' ' -f1-2));"
    echo "  postgres: ssl = on; custos: tls_cert/tls_key, upstream_tls = \"disable\" (plain text to the store);"
    echo "  pgbouncer: client_tls_sslmode = require, server_tls_sslmode = disable (plain text to the store);"
    echo "  haproxy: passes the client's TLS through, so it terminates at PostgreSQL (the store's CPU has it)"
  else
    echo "tls: none (PGSSLMODE=disable; custos with allow_plaintext_auth = true)"
  fi
  for ep in "${ENDPOINTS[@]}"; do
    case "$ep" in
      custos|custos_*|custos-audit|custos-sync)
        extra=
        [ -z "$CUSTOS_SERVER_EXTRA" ] || extra=", ${CUSTOS_SERVER_EXTRA//$'\n'/, }"
        case "$ep" in custos_*) extra+=", with bench/configs/${ep#custos_}.toml" ;; esac
        echo "$ep: $("$custos_bin" --version), workers = $CUSTOS_WORKERS$extra; $(custos_built)" ;;
      pgbouncer) echo "pgbouncer: $(pgbouncer --version | head -1), pool_mode = session," \
                      "auth_type = $PGBOUNCER_AUTH" ;;
      pgbouncer-tx) echo "pgbouncer-tx: $(pgbouncer --version | head -1), pool_mode = transaction," \
                         "auth_type = $PGBOUNCER_AUTH" ;;
      haproxy) echo "haproxy: $(haproxy -v | head -1 | cut -d' ' -f1-3), mode tcp" ;;
    esac
  done
  echo "settings: ROUNDS=$ROUNDS BENCH_DURATION=$DURATION BENCH_SCALE=$SCALE" \
       "BENCH_CLIENTS=$CLIENTS BENCH_THREADS=$THREADS BENCH_MODES=\"$MODES\"" \
       "BENCH_CHURN_CLIENTS=$CHURN_CLIENTS BENCH_CHURN_MODE=$CHURN_MODE BENCH_TLS=$TLS"
  echo "endpoint order: rotated per round, starting from: ${ENDPOINTS[*]}"
  echo
  echo "commands (PGPASSWORD and PGSSLMODE=$sslmode set; PORT is the endpoint's):"
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
  if [ "$TLS" = 1 ]; then
    echo "  Every connection also makes a TLS handshake: with custos or PgBouncer (proxy CPU), or with"
    echo "  PostgreSQL (store CPU), directly and through HAProxy."
  fi
  python3 "$here/scripts/report.py" "$OUT" "$reference"
} > "$REPORT"
cat "$REPORT"
echo
echo "raw results: $OUT"
echo "report: $REPORT"
