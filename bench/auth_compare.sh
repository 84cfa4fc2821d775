#!/usr/bin/env bash
# Side-by-side connection churn with authentication: clients that connect,
# authenticate, send one command and close, through custos with an OIDC
# token as the password (auth = "token") and directly against the stores
# with a password, interleaved over several rounds.
#
#   bench/auth_compare.sh                   # defaults: about 4 minutes on 2 cores
#   ROUNDS=2 BENCH_REDIS_REQUESTS=5000 BENCH_PG_DURATION=3 BENCH_LOOP_CONNECTIONS=2000 \
#     bench/auth_compare.sh
#
# The script starts its own stores on free ports of 127.0.0.1 (never the
# machine's own Redis or PostgreSQL), a development identity provider (an
# Ed25519 key made by `custos token keygen`, its JWKS in a file, tokens
# from `custos token mint`, subject alice, group eng, 30 minutes) and custos
# with one Redis and one PostgreSQL target, both auth = "token". Each round
# runs every test once per endpoint, the endpoints in a rotated order (so no
# endpoint always runs first, on a cold cache, or last, on a hot machine):
#
#   redis-benchmark   redis-benchmark -k 0 -t ping -c 16 -n N --user U -a SECRET
#                     -k 0 opens a new connection for every request, and
#                     redis-benchmark sends AUTH U SECRET first on each (the
#                     script checks this with the stores' and custos'
#                     counters before measuring). So requests/s is
#                     connections/s. direct: U = custos with the password;
#                     custos: U = alice with the token.
#   pgbench           pgbench -n -C -S -c 4 -j 2 -T 10, sslmode=require
#                     (-C: a new connection per transaction; -S: one
#                     primary-key SELECT). direct: the role `bench` with its
#                     password: TLS, SCRAM and a backend per connection;
#                     custos: user alice with the token as the password:
#                     TLS to custos, which verifies the token and logs in to
#                     the store as `bench` itself, over TLS with SCRAM (the
#                     salted password cached per shard), so the store still
#                     starts a backend per connection.
#   auth-loop         bench/scripts/auth_churn.py: 4 processes that each
#                     connect, send AUTH and wait for +OK, send PING and wait
#                     for +PONG, close. direct: the password; custos: one
#                     token (after the first connection every check is a hit
#                     in custos' per-shard cache of verified tokens);
#                     custos-cold: a list of distinct tokens longer than that
#                     cache (4096 per shard), walked in order, so every
#                     connection verifies an Ed25519 signature. custos-cold
#                     minus custos is the price of a signature check.
#
# The report gives medians over rounds, custos against direct, and CPU time
# per connection (utime+stime from /proc/PID/stat before and after each run,
# divided by connections): of custos (all threads), of the store (Redis:
# redis-server; PostgreSQL: the postmaster, its live backends and the ones it
# reaped) and of the client (redis-benchmark and pgbench: the children this
# shell reaped; auth-loop: its connecting processes). Raw numbers go to
# bench/results/auth_compare.csv, the report with the machine, versions and
# exact commands to bench/results/auth_compare.txt.
#
# The stores and the credentials: Redis has the ACL user `custos` (password
# in a file; `default` is off). custos logs in as it, and by default shares
# one store connection per shard between request/response sessions, so
# through custos the store sees no new connection and no AUTH per client
# connection; directly it sees both. The exception is redis-benchmark's
# PING_INLINE: an inline command is not shareable, so through custos each of
# those sessions opens a store connection of its own (connect, AUTH as
# custos); the report counts the store's connections per client connection. PostgreSQL has the role `bench`
# (scram-sha-256, pg_hba `hostssl` only, ssl = on with a self-signed P-256
# certificate that custos' PostgreSQL listener uses too). custos logs one
# `auth_ok` line per accepted token (info level, to a file here); CUSTOS_LOG
# in the environment reaches custos (CUSTOS_LOG=warn drops those lines).
#
# Environment (defaults in brackets):
#   ROUNDS [5]                   rounds; each runs every test once per endpoint
#   BENCH_REDIS_REQUESTS [20000] redis-benchmark -n (per test: PING_INLINE and
#                                PING_MBULK); 0 skips the test
#   BENCH_REDIS_CLIENTS [16]     redis-benchmark -c
#   BENCH_PG_DURATION [10]       pgbench -T in seconds; 0 skips the test
#   BENCH_PG_CLIENTS [4]  BENCH_PG_THREADS [2]   pgbench -c and -j
#   BENCH_PG_SCALE [1]           pgbench -i scale factor
#   BENCH_LOOP_CONNECTIONS [10000]  connections per auth-loop run; 0 skips it
#   BENCH_LOOP_PROCS [4]         auth-loop processes
#   BENCH_COLD_TOKENS [4096 x shards + 1000]  distinct tokens for custos-cold
#   BENCH_TOKEN_TTL [30m]        lifetime of the minted tokens (covers the run)
#   CUSTOS_WORKERS [1]           custos shards. One by default: on this 2-core
#                                machine the stores and the clients need the
#                                other core. CUSTOS_WORKERS=auto runs one
#                                shard per core.
#   CUSTOS_BIN                   use this custos binary instead of a release build
#   PG_BIN [/usr/lib/postgresql/15/bin]  initdb, postgres, pgbench, psql
#   PG_OS_USER [postgres]        the system user PostgreSQL runs as when the
#                                script runs as root (it refuses to run as root)
#   BENCH_NOTE                   free text written into the report (e.g. what
#                                else the machine was doing)
#   BENCH_OUT [bench/results/auth_compare.csv]  BENCH_REPORT [same name, .txt]
#
# Nothing is installed from here; missing tools are named and the run stops.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
. "$here/scripts/common.sh"

ROUNDS=${ROUNDS:-5}
REDIS_REQUESTS=${BENCH_REDIS_REQUESTS:-20000}
REDIS_CLIENTS=${BENCH_REDIS_CLIENTS:-16}
PG_DURATION=${BENCH_PG_DURATION:-10}
PG_CLIENTS=${BENCH_PG_CLIENTS:-4}
PG_THREADS=${BENCH_PG_THREADS:-2}
PG_SCALE=${BENCH_PG_SCALE:-1}
LOOP_CONNECTIONS=${BENCH_LOOP_CONNECTIONS:-10000}
LOOP_PROCS=${BENCH_LOOP_PROCS:-4}
TOKEN_TTL=${BENCH_TOKEN_TTL:-30m}
CUSTOS_WORKERS=${CUSTOS_WORKERS:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OS_USER=${PG_OS_USER:-postgres}
OUT=${BENCH_OUT:-$here/results/auth_compare.csv}
REPORT=${BENCH_REPORT:-${OUT%.csv}.txt}
# pgbench's -j must not exceed -c.
PG_THREADS=$(( PG_THREADS < PG_CLIENTS ? PG_THREADS : PG_CLIENTS ))
# The verified-token cache holds 4096 tokens per shard; the cold list must
# be longer than what any shard sees between two uses of a token.
if [[ "$CUSTOS_WORKERS" =~ ^[0-9]+$ ]]; then shards=$CUSTOS_WORKERS; else shards=$(nproc); fi
COLD_TOKENS=${BENCH_COLD_TOKENS:-$(( 4096 * shards + 1000 ))}

ISSUER=https://idp.bench/
AUDIENCE=custos

# ---- tools ----
need=(redis-server redis-cli redis-benchmark python3 openssl
      "$PG_BIN/initdb" "$PG_BIN/postgres" "$PG_BIN/pgbench" "$PG_BIN/psql")
[ -n "${CUSTOS_BIN:-}" ] || need+=(cargo)
# As root, PostgreSQL runs as PG_OS_USER.
pg_store_user
require_tools "(Debian: apt-get install redis-server redis-tools postgresql-15 openssl python3;\
 PG_BIN names another PostgreSQL)" "${need[@]}"
pg_store_user_check
pgbench=$PG_BIN/pgbench
psql=$PG_BIN/psql

# ---- housekeeping ----
bench_setup custos-authbench
load_start=$(loadavg)

# ---- custos ----
build_custos

# ---- the identity provider: a signing key, its JWKS, tokens ----
mint() {
  "$custos_bin" token mint --key "$work/idp-key.pem" --sub alice --groups eng \
    --ttl "$TOKEN_TTL" --iss "$ISSUER" --aud "$AUDIENCE"
}
"$custos_bin" token keygen --out "$work/idp-key.pem" 2>/dev/null
"$custos_bin" token jwks --key "$work/idp-key.pem" > "$work/jwks.json"
token=$(mint)
printf '%s\n' "$token" > "$work/token"
if [ "$LOOP_CONNECTIONS" -gt 0 ]; then
  echo "minting $COLD_TOKENS tokens for the cold-cache test..." >&2
  # Each token has its own random jti, so they are all distinct.
  seq "$COLD_TOKENS" | xargs -P "$(nproc)" -n 50 bash -c \
    'for _ in "${@:6}"; do "$1" token mint --key "$2" --sub alice --groups eng --ttl "$3" \
       --iss "$4" --aud "$5"; done' _ "$custos_bin" "$work/idp-key.pem" "$TOKEN_TTL" "$ISSUER" \
    "$AUDIENCE" > "$work/cold-tokens"
  if [ "$(sort -u "$work/cold-tokens" | wc -l)" -ne "$COLD_TOKENS" ]; then
    echo "minting the cold-cache tokens failed" >&2; exit 1
  fi
fi

# ---- the TLS certificate (PostgreSQL and custos' PostgreSQL listener) ----
self_signed_cert "$work/tls"

# ---- Redis ----
pass_redis=$(random_secret)
printf '%s' "$pass_redis" > "$work/redis-password"
printf 'user default off\nuser custos on >%s ~* &* +@all\n' "$pass_redis" > "$work/redis-users.acl"
redis_port=$(free_port)
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work/redis" --logfile "$work/redis/redis.log" --aclfile "$work/redis-users.acl" &
track redis "$redis_port"
# redis_info FIELD...: values from the store's INFO, as the custos user.
redis_info() {
  redis-cli -h 127.0.0.1 -p "$redis_port" --user custos -a "$pass_redis" --no-auth-warning \
    INFO all | tr -d '\r' | awk -F'[:=,]' -v want="$*" '
      BEGIN { n = split(want, w, " ") }
      { for (i = 1; i <= n; i++) if ($1 == w[i]) v[w[i]] = ($1 ~ /^cmdstat_/) ? $3 : $2 }
      END { for (i = 1; i <= n; i++) printf "%s ", v[w[i]] + 0; print "" }'
}
redis_wait_ping "$redis_port" custos "$pass_redis"

# ---- PostgreSQL ----
pass_pg=$(random_secret)
printf '%s' "$pass_pg" > "$work/pg-password"
pg_port=$(free_port)
pg_initdb
# The superuser only over the private socket; the application role only
# over TLS, with SCRAM.
cat > "$work/pg/pg_hba.conf" <<HBA
local   all postgres              trust
hostssl all bench    127.0.0.1/32 scram-sha-256
HBA
pg_store_settings "$pg_port" $(( 4 * PG_CLIENTS + 20 )) 1
pg_start "$pg_port" "${store_settings[@]}"
su_psql -d postgres <<SQL
CREATE ROLE bench LOGIN PASSWORD '$pass_pg';
CREATE DATABASE bench OWNER bench;
SQL
# Every client below: TLS required, the password (or token) from PGPASSWORD.
export PGSSLMODE=require PGCONNECT_TIMEOUT=5
pg_wait_select "$pg_port" bench "$pass_pg"
echo "loading: pgbench -i -s $PG_SCALE ..." >&2
PGPASSWORD=$pass_pg "$pgbench" -i -q -s "$PG_SCALE" -h 127.0.0.1 -p "$pg_port" -U bench bench \
  >"$work/pgbench-init.log" 2>&1 || { cat "$work/pgbench-init.log" >&2; exit 1; }

# ---- custos ----
custos_redis_port=$(free_port); custos_pg_port=$(free_port); admin_port=$(free_port)
{
  custos_server_toml "$admin_port"
  cat <<TOML
shutdown_grace_ms = 1000

[identity]
issuer = "$ISSUER"
audience = "$AUDIENCE"
jwks_file = "$work/jwks.json"
TOML
  custos_target_toml cache redis "$custos_redis_port" "$redis_port" custos "$work/redis-password" token
  custos_target_toml bench postgres "$custos_pg_port" "$pg_port" bench "$work/pg-password" token
  cat <<TOML
upstream_database = "bench"
tls_cert = "$work/tls/cert.pem"
tls_key = "$work/tls/key.pem"
upstream_tls = "require"
TOML
} > "$work/custos.toml"
"$custos_bin" run --config "$work/custos.toml" 2>"$work/custos.log" &
track custos "$custos_pg_port"
if ! redis_wait_ping "$custos_redis_port" alice "$token" ||
   ! pg_wait_select "$custos_pg_port" alice "$token"; then
  echo "custos did not come up; its log:" >&2
  cat "$work/custos.log" >&2
  exit 1
fi
# custos_metric NAME: a counter of the Redis target from the admin endpoint.
custos_metric() {
  python3 - "$admin_port" "$1" <<'PY'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
want = name + '{target="cache"} '
print(next((l[len(want):] for l in text.splitlines() if l.startswith(want)), "0"))
PY
}

# ---- checks: tokens are required, and redis-benchmark -k 0 authenticates
# every connection it opens ----
if [ "$(redis-cli -h 127.0.0.1 -p "$custos_redis_port" PING 2>&1)" = PONG ] ||
   [ "$(redis-cli -h 127.0.0.1 -p "$custos_redis_port" --user alice -a "x$token" \
          --no-auth-warning PING 2>&1)" = PONG ] ||
   pg_select "$custos_pg_port" alice "x$token"; then
  echo "custos answers without a valid token: is auth = \"token\" in effect?" >&2
  exit 1
fi
check_n=1000
checks=()
# Directly: the store counts the connections, AUTHs and PINGs.
read -r c0 a0 p0 < <(redis_info total_connections_received cmdstat_auth cmdstat_ping)
redis-benchmark -h 127.0.0.1 -p "$redis_port" -k 0 -t ping_mbulk -c "$REDIS_CLIENTS" -n "$check_n" \
  --user custos -a "$pass_redis" -q >/dev/null 2>&1
read -r c1 a1 p1 < <(redis_info total_connections_received cmdstat_auth cmdstat_ping)
# (less this check's own INFO connection)
dc=$((c1 - c0 - 1)); da=$((a1 - a0 - 1)); dp=$((p1 - p0))
checks+=("direct: $check_n PINGs at -k 0; the store saw $dc connections, $da AUTH, $dp PING")
if [ "$da" -lt "$check_n" ] || [ "$dc" -lt "$check_n" ] || [ "$dp" -lt "$check_n" ]; then
  echo "redis-benchmark -k 0 did not authenticate every connection: ${checks[-1]}" >&2; exit 1
fi
# Through custos: a PING is forwarded only on a connection whose AUTH
# carried a valid token (before that custos answers -NOAUTH itself).
k0=$(custos_metric custos_connections_total); m0=$(custos_metric custos_commands_total)
l0=$(grep -c 'auth_ok' "$work/custos.log" || true)
read -r c0 a0 p0 < <(redis_info total_connections_received cmdstat_auth cmdstat_ping)
redis-benchmark -h 127.0.0.1 -p "$custos_redis_port" -k 0 -t ping_mbulk -c "$REDIS_CLIENTS" -n "$check_n" \
  --user alice -a "$token" -q >/dev/null 2>&1
k1=$(custos_metric custos_connections_total); m1=$(custos_metric custos_commands_total)
l1=$(grep -c 'auth_ok' "$work/custos.log" || true)
read -r c1 a1 p1 < <(redis_info total_connections_received cmdstat_auth cmdstat_ping)
dk=$((k1 - k0)); dm=$((m1 - m0)); dl=$((l1 - l0))
dc=$((c1 - c0 - 1)); da=$((a1 - a0 - 1)); dp=$((p1 - p0))
checks+=("custos: $check_n PINGs at -k 0; custos accepted $dk connections, logged $dl auth_ok, forwarded $dm commands; the store saw $dc connections, $da AUTH, $dp PING")
if [ "$dk" -lt "$check_n" ] || [ "$dm" -lt "$check_n" ] || [ "$dp" -lt "$check_n" ]; then
  echo "redis-benchmark -k 0 through custos did not authenticate every connection: ${checks[-1]}" >&2
  exit 1
fi
for line in "${checks[@]}"; do echo "check: $line" >&2; done

redis_version=$(redis-server --version | cut -d' ' -f1-3)
pg_version=$("$PG_BIN/postgres" --version)
echo "machine: $(nproc) cores, Linux $(uname -r); $redis_version; $pg_version" >&2
echo "rounds=$ROUNDS redis-benchmark -n $REDIS_REQUESTS -c $REDIS_CLIENTS;" \
     "pgbench -T $PG_DURATION -c $PG_CLIENTS -j $PG_THREADS;" \
     "auth-loop $LOOP_CONNECTIONS connections x $LOOP_PROCS processes, $COLD_TOKENS cold tokens" >&2

mkdir -p "$(dirname "$OUT")"
echo "round,test,endpoint,metric,value" > "$OUT"

# per_conn TICKS CONNECTIONS: microseconds per connection.
per_conn() { us_per "$1" "$2" 1; }
# store_conns ROUND TEST ENDPOINT STORE_CONNECTIONS CONNECTIONS: the CSV row
# of connections the Redis store accepted per client connection (INFO's
# total_connections_received, less the reading's own).
store_conns() {
  awk -v r="$1" -v t="$2" -v e="$3" -v s="$4" -v n="$5" \
    'BEGIN { printf "%s,%s,%s,store_conns_per_conn,%.3f\n", r, t, e, s / n }'
}

# run_redis_benchmark ROUND ENDPOINT
run_redis_benchmark() {
  local round=$1 ep=$2 port=$redis_port user=custos secret=$pass_redis
  [ "$ep" = custos ] && { port=$custos_redis_port; user=alice; secret=$token; }
  alive custos; alive redis
  local cb sb rb ca sa ra c0 c1 csv rc=0
  read -r c0 < <(redis_info total_connections_received)
  # The client's reading last before and first after, so that the other
  # readings' own processes stay out of it.
  cb=$(cpu_ticks "${PID[custos]}"); sb=$(cpu_ticks "${PID[redis]}"); rb=$(reaped_ticks)
  csv=$(redis-benchmark -h 127.0.0.1 -p "$port" -k 0 -t ping -c "$REDIS_CLIENTS" -n "$REDIS_REQUESTS" \
          --user "$user" -a "$secret" --csv 2>"$work/benchmark.err") || rc=$?
  ra=$(reaped_ticks); ca=$(cpu_ticks "${PID[custos]}"); sa=$(cpu_ticks "${PID[redis]}")
  read -r c1 < <(redis_info total_connections_received)
  local rows
  rows=$(printf '%s\n' "$csv" | awk -F'","' -v r="$round" -v e="$ep" '
    /^"PING_(INLINE|MBULK)"/ {
      gsub(/"/, "", $1); t = tolower(substr($1, 6))
      printf "%s,redis-benchmark,%s,conn_per_s_%s,%s\n", r, e, t, $2
      printf "%s,redis-benchmark,%s,p50_ms_%s,%s\n", r, e, t, $5
      n++; inv += 1 / $2; p50 += $5
    }
    END {
      if (n == 2) {
        printf "%s,redis-benchmark,%s,conn_per_s,%.1f\n", r, e, 2 / inv
        printf "%s,redis-benchmark,%s,latency_ms,%.3f\n", r, e, p50 / 2
      }
    }')
  if [ "$rc" -ne 0 ] || [ "$(printf '%s\n' "$rows" | grep -c ',conn_per_s,')" -ne 1 ]; then
    echo "redis-benchmark against $ep gave no PING results (exit $rc):" >&2
    printf '%s\n' "$csv" >&2
    cat "$work/benchmark.err" >&2
    exit 1
  fi
  local n=$((2 * REDIS_REQUESTS))
  {
    printf '%s\n' "$rows"
    [ "$ep" = direct ] || echo "$round,redis-benchmark,$ep,custos_cpu_us_per_conn,$(per_conn $((ca - cb)) $n)"
    echo "$round,redis-benchmark,$ep,store_cpu_us_per_conn,$(per_conn $((sa - sb)) $n)"
    echo "$round,redis-benchmark,$ep,client_cpu_us_per_conn,$(per_conn $((ra - rb)) $n)"
    store_conns "$round" redis-benchmark "$ep" $((c1 - c0 - 1)) "$n"
  } >> "$OUT"
  printf '  round %s  %-15s %-11s %8.0f conn/s\n' "$round" redis-benchmark "$ep" \
    "$(printf '%s\n' "$rows" | awk -F, '$4 == "conn_per_s" { print $5 }')" >&2
}

# run_pgbench ROUND ENDPOINT
run_pgbench() {
  local round=$1 ep=$2 port=$pg_port user=bench secret=$pass_pg
  [ "$ep" = custos ] && { port=$custos_pg_port; user=alice; secret=$token; }
  alive custos; alive postgres
  local cb sb rb ca sa ra out rc=0
  sb=$(tree_ticks "${PID[postgres]}"); cb=$(cpu_ticks "${PID[custos]}"); rb=$(reaped_ticks)
  out=$(PGPASSWORD=$secret "$pgbench" -n -C -S -c "$PG_CLIENTS" -j "$PG_THREADS" -T "$PG_DURATION" \
          -h 127.0.0.1 -p "$port" -U "$user" bench 2>"$work/pgbench.err") || rc=$?
  ra=$(reaped_ticks); ca=$(cpu_ticks "${PID[custos]}")
  # Backends exit, and are reaped, just after their client leaves.
  sleep 0.2
  sa=$(tree_ticks "${PID[postgres]}")
  local tx tps lat conn
  pgbench_result "$out" "$rc" "$ep"
  {
    echo "$round,pgbench,$ep,conn_per_s,$tps"
    echo "$round,pgbench,$ep,connections,$tx"
    echo "$round,pgbench,$ep,latency_ms,$lat"
    [ -n "$conn" ] && echo "$round,pgbench,$ep,connect_ms,$conn"
    [ "$ep" = direct ] || echo "$round,pgbench,$ep,custos_cpu_us_per_conn,$(per_conn $((ca - cb)) "$tx")"
    echo "$round,pgbench,$ep,store_cpu_us_per_conn,$(per_conn $((sa - sb)) "$tx")"
    echo "$round,pgbench,$ep,client_cpu_us_per_conn,$(per_conn $((ra - rb)) "$tx")"
  } >> "$OUT"
  printf '  round %s  %-15s %-11s %8.0f conn/s  connect %s ms\n' "$round" pgbench "$ep" "$tps" "$conn" >&2
}

# run_loop ROUND ENDPOINT
cold_offset=0
run_loop() {
  local round=$1 ep=$2 args
  case "$ep" in
    direct) args=(--port "$redis_port" --user custos --secret-file "$work/redis-password") ;;
    custos) args=(--port "$custos_redis_port" --user alice --secret-file "$work/token") ;;
    custos-cold)
      args=(--port "$custos_redis_port" --user alice --tokens-file "$work/cold-tokens"
            --offset "$cold_offset")
      cold_offset=$(( (cold_offset + LOOP_CONNECTIONS) % COLD_TOKENS )) ;;
  esac
  alive custos; alive redis
  local cb sb ca sa c0 c1 out rc=0
  read -r c0 < <(redis_info total_connections_received)
  cb=$(cpu_ticks "${PID[custos]}"); sb=$(cpu_ticks "${PID[redis]}")
  out=$(python3 "$here/scripts/auth_churn.py" "${args[@]}" --connections "$LOOP_CONNECTIONS" \
          --procs "$LOOP_PROCS" 2>"$work/loop.err") || rc=$?
  ca=$(cpu_ticks "${PID[custos]}"); sa=$(cpu_ticks "${PID[redis]}")
  read -r c1 < <(redis_info total_connections_received)
  local n secs rate client
  read -r n secs rate client <<< "$out"
  if [ "$rc" -ne 0 ] || [ "${n:-0}" != "$LOOP_CONNECTIONS" ]; then
    echo "auth-loop against $ep failed (exit $rc): $out" >&2
    cat "$work/loop.err" >&2
    exit 1
  fi
  {
    echo "$round,auth-loop,$ep,conn_per_s,$rate"
    [ "$ep" = direct ] || echo "$round,auth-loop,$ep,custos_cpu_us_per_conn,$(per_conn $((ca - cb)) "$n")"
    echo "$round,auth-loop,$ep,store_cpu_us_per_conn,$(per_conn $((sa - sb)) "$n")"
    awk -v c="$client" -v n="$n" -v r="$round" -v e="$ep" \
      'BEGIN { printf "%s,auth-loop,%s,client_cpu_us_per_conn,%.1f\n", r, e, c * 1e6 / n }'
    store_conns "$round" auth-loop "$ep" $((c1 - c0 - 1)) "$n"
  } >> "$OUT"
  printf '  round %s  %-15s %-11s %8.0f conn/s\n' "$round" auth-loop "$ep" "$rate" >&2
}

for ((round = 1; round <= ROUNDS; round++)); do
  if [ "$REDIS_REQUESTS" -gt 0 ]; then
    for ep in $(rotated "$round" direct custos); do run_redis_benchmark "$round" "$ep"; done
  fi
  if [ "$PG_DURATION" -gt 0 ]; then
    for ep in $(rotated "$round" direct custos); do run_pgbench "$round" "$ep"; done
  fi
  if [ "$LOOP_CONNECTIONS" -gt 0 ]; then
    for ep in $(rotated "$round" direct custos custos-cold); do run_loop "$round" "$ep"; done
  fi
done
load_end=$(loadavg)
alive custos

# ---- the report: machine, versions, commands, checks, then the medians ----
{
  report_header auth_compare.sh
  echo "stores: $redis_version; $pg_version; ssl = on ($(openssl version | cut -d' ' -f1-2))"
  echo "clients: $(redis-benchmark --version 2>/dev/null | cut -d' ' -f1-2 || echo redis-benchmark);" \
       "$("$pgbench" --version); $(python3 --version)"
  echo "custos: $("$custos_bin" --version), workers = $CUSTOS_WORKERS, log level ${CUSTOS_LOG:-info};" \
       "$(custos_built)"
  echo "settings: ROUNDS=$ROUNDS BENCH_REDIS_REQUESTS=$REDIS_REQUESTS BENCH_REDIS_CLIENTS=$REDIS_CLIENTS" \
       "BENCH_PG_DURATION=$PG_DURATION BENCH_PG_CLIENTS=$PG_CLIENTS BENCH_PG_THREADS=$PG_THREADS" \
       "BENCH_PG_SCALE=$PG_SCALE BENCH_LOOP_CONNECTIONS=$LOOP_CONNECTIONS BENCH_LOOP_PROCS=$LOOP_PROCS" \
       "BENCH_COLD_TOKENS=$COLD_TOKENS BENCH_TOKEN_TTL=$TOKEN_TTL"
  echo "endpoint order: rotated per round within each test"
  echo
  echo "identity provider: custos token keygen (Ed25519); custos token jwks > jwks.json (jwks_file);"
  echo "  custos token mint --key KEY --sub alice --groups eng --ttl $TOKEN_TTL --iss $ISSUER --aud $AUDIENCE"
  echo "  (one token for every client, and $COLD_TOKENS more for custos-cold; ~$(wc -c < "$work/token") bytes each)"
  echo "stores: redis-server --aclfile (user default off; user custos on >PASSWORD ~* &* +@all)"
  echo "  initdb; postgres ${store_settings[*]//$work/TMP}"
  echo "  pg_hba: hostssl all bench 127.0.0.1/32 scram-sha-256; certificate: self-signed P-256 (openssl req -x509)"
  echo "  pgbench -i -q -s $PG_SCALE (once, directly)"
  echo "custos: [identity] issuer/audience/jwks_file; redis target auth = \"token\", upstream_user custos"
  echo "  (upstream_sharing default: on); postgres target auth = \"token\", tls_cert/tls_key (the same"
  echo "  certificate), upstream_user bench, upstream_database bench, upstream_tls = \"require\""
  echo
  echo "commands (direct: PORT = the store, U = custos / bench, SECRET = the password;"
  echo "          custos: PORT = custos' listener, U = alice, SECRET = the token):"
  if [ "$REDIS_REQUESTS" -gt 0 ]; then
    echo "  redis-benchmark -h 127.0.0.1 -p PORT -k 0 -t ping -c $REDIS_CLIENTS -n $REDIS_REQUESTS --user U -a SECRET --csv"
  fi
  if [ "$PG_DURATION" -gt 0 ]; then
    echo "  PGSSLMODE=require PGPASSWORD=SECRET pgbench -n -C -S -c $PG_CLIENTS -j $PG_THREADS -T $PG_DURATION" \
         "-h 127.0.0.1 -p PORT -U U bench"
  fi
  if [ "$LOOP_CONNECTIONS" -gt 0 ]; then
    echo "  bench/scripts/auth_churn.py --port PORT --user U --secret-file SECRET_FILE" \
         "--connections $LOOP_CONNECTIONS --procs $LOOP_PROCS"
    echo "  custos-cold: ... --tokens-file COLD_TOKENS --offset O (O carries on from run to run)"
  fi
  echo
  for line in "${checks[@]}"; do echo "check: $line"; done
  echo "  (PING_MBULK through custos: the store sees no new connection, the sessions share custos' own)"
  echo
  echo "conn/s: redis-benchmark: requests/s at -k 0, PING_INLINE and PING_MBULK combined (harmonic"
  echo "  mean); lat ms: their p50 (AUTH and PING, sent together). pgbench: tps (a connection per"
  echo "  transaction) and its average latency and connection time. auth-loop: connections / wall time."
  echo "CPU per connection in microseconds (user+system from /proc/PID/stat around each run): custos"
  echo "  (all threads), store (redis-server; postmaster + backends, live and reaped), client"
  echo "  (redis-benchmark / pgbench / the loop's processes); redis-benchmark's figures cover both tests."
  echo "store conn: connections the Redis store accepted per client connection (INFO"
  echo "  total_connections_received). Through custos, PING_MBULK sessions share custos' store"
  echo "  connection; an inline command (PING_INLINE) is not shareable, so each such session gets a"
  echo "  store connection of its own (connect and AUTH as custos), hence about 0.5 for redis-benchmark."
  python3 "$here/scripts/auth_report.py" "$OUT"
} > "$REPORT"
cat "$REPORT"
echo
echo "raw results: $OUT"
echo "report: $REPORT"
