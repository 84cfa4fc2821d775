# Shell functions shared by the side-by-side comparison scripts
# (bench/redis_compare.sh, bench/pg_compare.sh, bench/auth_compare.sh).
# Sourced after `set -euo pipefail`, never run:
#
#   here=$(cd "$(dirname "$0")" && pwd); root=$(dirname "$here")
#   . "$here/scripts/common.sh"
#
# Conventions the functions rely on, set by the sourcing script:
#   root       the workspace (for cargo and git)
#   work       the run's temporary folder (bench_setup makes it)
#   PID PORT   associative arrays NAME -> process id / port of what the run
#              started (bench_setup declares them; `track` fills them)
#   started    the process ids cleanup stops, in start order
#   PG_BIN PG_OS_USER as_store psql   for the PostgreSQL functions
# A failure prints what went wrong to stderr and exits the script (a
# benchmark that half works must not write numbers); only redis_wait_ping
# and pg_wait_select return 1 instead, so that the caller can add the log
# it knows.

# ---- tools ----

# require_tools HINT TOOL...: exits 1 naming the TOOLs (commands or paths)
# that are not there, with HINT (how to install them) on the next line.
# Nothing is installed from here.
require_tools() {
  local hint=$1 tool missing=()
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing tools: ${missing[*]}" >&2
    echo "$hint" >&2
    exit 1
  fi
}

# pg_store_user: PostgreSQL (and whatever else must not run as root) runs
# as PG_OS_USER when this script runs as root. Sets `as_store`, the command
# prefix that does that (empty otherwise), and adds setpriv to the array
# `need` of tools to check. Call pg_store_user_check after the tool check.
pg_store_user() {
  as_store=()
  if [ "$(id -u)" = 0 ]; then
    need+=(setpriv)
    as_store=(setpriv "--reuid=$PG_OS_USER" "--regid=$PG_OS_USER" --init-groups --)
  fi
}

# pg_store_user_check: exits 1 when running as root without PG_OS_USER.
pg_store_user_check() {
  if [ "$(id -u)" = 0 ] && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    echo "running as root, but there is no system user '$PG_OS_USER' to run PostgreSQL as" \
         "(set PG_OS_USER)" >&2
    exit 1
  fi
}

# ---- housekeeping ----

# bench_setup PREFIX: makes the temporary folder `work` (named after
# PREFIX), declares PID, PORT and started, and installs the traps: on exit
# every started process is stopped and the folder removed; SIGINT and
# SIGTERM exit with 130.
bench_setup() {
  work=$(mktemp -d -t "$1.XXXXXX")
  declare -gA PID=() PORT=()
  started=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

# bench_cleanup: the EXIT trap. Stops what the run started, PostgreSQL
# (PID[postgres], if any) last and with a fast shutdown (SIGINT): a smart
# one (SIGTERM) would wait for the proxies' store connections. Then removes
# the temporary folder.
bench_cleanup() {
  local p store=${PID[postgres]:-}
  for p in "${started[@]}"; do
    [ "$p" = "$store" ] || kill "$p" 2>/dev/null || true
  done
  for p in "${started[@]}"; do
    [ "$p" = "$store" ] || wait "$p" 2>/dev/null || true
  done
  if [ -n "$store" ]; then
    kill -INT "$store" 2>/dev/null || true
    wait "$store" 2>/dev/null || true
  fi
  rm -rf "$work"
}

# track NAME [PORT]: records the last background process ($!) as NAME's, to
# be stopped on exit, and NAME's port.
track() {
  PID[$1]=$!
  started+=("$!")
  if [ -n "${2:-}" ]; then PORT[$1]=$2; fi
}

# alive NAME: exits 1, with NAME's log ($work/NAME.log or
# $work/NAME/NAME.log), when the process PID[NAME] has gone.
alive() {
  if ! kill -0 "${PID[$1]}" 2>/dev/null; then
    echo "$1 (pid ${PID[$1]}) is gone; its log:" >&2
    cat "$work/$1.log" "$work/$1/$1.log" 2>/dev/null >&2 || true
    exit 1
  fi
}

# wait_endpoints CHECK NAME...: for each NAME, CHECK NAME must succeed (it
# waits until the endpoint answers); otherwise exits 1 with NAME's log.
wait_endpoints() {
  local check=$1 ep
  shift
  for ep in "$@"; do
    if ! "$check" "$ep"; then
      echo "$ep did not come up; its log:" >&2
      cat "$work/$ep.log" >&2 2>/dev/null || true
      exit 1
    fi
  done
}

# free_port: a TCP port of 127.0.0.1 that nothing listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# random_secret: 32 hexadecimal digits from /dev/urandom.
random_secret() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# self_signed_cert DIR: a self-signed P-256 certificate for 127.0.0.1,
# DIR/cert.pem and DIR/key.pem (mode 600), for the stores' and custos'
# TLS listeners.
self_signed_cert() {
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$1/key.pem" -out "$1/cert.pem" >/dev/null 2>&1
  chmod 600 "$1/key.pem"
}

# ---- CPU time and load ----

CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: user+system time of a process, all its threads, in clock
# ticks (the fields after the command name, which may hold spaces).
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

# reaped_ticks: CPU time of the children this shell has waited for (the
# benchmark clients, run in command substitutions).
reaped_ticks() { sed 's/.*) //' "/proc/$$/stat" | awk '{ print $14 + $15 }'; }

# us_per TICKS COUNT DECIMALS: TICKS of CPU time in microseconds per one of
# COUNT (transactions, commands, connections), with DECIMALS digits.
us_per() {
  awk -v d="$1" -v hz="$CLK_TCK" -v n="$2" -v f="%.$3f" 'BEGIN { printf f, d / hz * 1e6 / n }'
}

# loadavg: the 1, 5 and 15 minute load averages.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- custos ----

# build_custos: sets custos_bin, CUSTOS_BIN if given, else a release build
# of the workspace (cargo, honouring CARGO_TARGET_DIR), and custos_tree, the
# state of the tree then (the report is written minutes later, when the
# tree may have moved on).
build_custos() {
  custos_tree=$(tree_state)
  if [ -n "${CUSTOS_BIN:-}" ]; then
    custos_bin=$CUSTOS_BIN
  else
    echo "building custos (release)..." >&2
    (cd "$root" && cargo build --quiet --release -p custos --bin custos)
    custos_bin="${CARGO_TARGET_DIR:-$root/target}/release/custos"
    case "$custos_bin" in /*) ;; *) custos_bin="$root/$custos_bin" ;; esac
  fi
}

# custos_server_toml ADMIN_PORT: the start of custos' [server] section:
# CUSTOS_WORKERS shards (a number stays one, anything else, e.g. auto,
# becomes a string), the admin endpoint on 127.0.0.1:ADMIN_PORT, text logs.
# More [server] lines may follow.
custos_server_toml() {
  local workers=$CUSTOS_WORKERS
  [[ "$workers" =~ ^[0-9]+$ ]] || workers="\"$workers\""
  cat <<TOML
[server]
workers = $workers
admin_listen = "127.0.0.1:$1"
log_format = "text"
TOML
}

# custos_audit_toml ENDPOINT DIR: the [audit] section of a custos endpoint:
# nothing for `custos`, an async trail in DIR for `custos-audit`, a sync one
# for `custos-sync` (the key is created in DIR on first start).
custos_audit_toml() {
  local durability
  case "$1" in
    custos-audit) durability=async ;;
    custos-sync) durability=sync ;;
    *) return 0 ;;
  esac
  cat <<TOML

[audit]
dir = "$2/trail"
signing_key = "$2/audit.key"
durability = "$durability"
TOML
}

# custos_target_toml NAME PROTOCOL PORT UPSTREAM_PORT UPSTREAM_USER
# PASSWORD_FILE AUTH: a [[target]] of custos listening on 127.0.0.1:PORT
# for the store on 127.0.0.1:UPSTREAM_PORT, logging in there as
# UPSTREAM_USER with the password in PASSWORD_FILE; AUTH is what it asks of
# clients. More lines of the target may follow.
custos_target_toml() {
  cat <<TOML

[[target]]
name = "$1"
protocol = "$2"
listen = "127.0.0.1:$3"
upstream = "127.0.0.1:$4"
upstream_user = "$5"
upstream_password_file = "$6"
auth = "$7"
TOML
}

# ---- HAProxy ----

# start_haproxy NAME MAXCONN PORT UPSTREAM_PORT: HAProxy in TCP mode, from
# 127.0.0.1:PORT to 127.0.0.1:UPSTREAM_PORT (bytes only: whatever the
# client speaks, TLS included, reaches the store), tracked as haproxy.
start_haproxy() {
  cat > "$work/haproxy.cfg" <<CFG
global
  maxconn $2
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend ${1}_in
  bind 127.0.0.1:$3
  default_backend ${1}_out
backend ${1}_out
  server store 127.0.0.1:$4
CFG
  haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  track haproxy "$3"
}

# ---- Redis ----

# redis_wait_ping PORT [USER] PASSWORD: waits (up to a minute) until
# redis-cli gets PONG through PORT, authenticated with AUTH [USER] PASSWORD.
redis_wait_ping() {
  local port=$1 auth=() who=
  case $# in
    2) auth=(-a "$2" --no-auth-warning) ;;
    3) auth=(--user "$2" -a "$3" --no-auth-warning); who=" for $2" ;;
  esac
  for _ in $(seq 600); do
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" "${auth[@]}" PING 2>/dev/null)" = PONG ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing answers PING on port $port$who" >&2
  return 1
}

# ---- PostgreSQL ----

# pg_initdb: a new cluster in $work/pg, owned by PG_OS_USER when root (who
# then owns all of $work, so write the files the store reads first), with
# a private socket folder $work/sock. Exits 1 with initdb's log on failure.
pg_initdb() {
  mkdir -p "$work/sock"
  if [ "$(id -u)" = 0 ]; then chown -R "$PG_OS_USER:" "$work"; fi
  chmod 700 "$work/sock"
  (cd "$work" && "${as_store[@]}" "$PG_BIN/initdb" -D "$work/pg" -U postgres -E UTF8 \
    --auth-local=trust --auth-host=reject >"$work/initdb.log" 2>&1) || {
    echo "initdb failed:" >&2; cat "$work/initdb.log" >&2; exit 1; }
}

# pg_store_settings PORT MAX_CONNECTIONS TLS [SETTING...]: sets the array
# store_settings, the options of a throwaway store: 127.0.0.1:PORT and the
# private socket, MAX_CONNECTIONS, then the SETTINGs (postgres options),
# SCRAM password hashes, TLS with $work/tls's certificate when TLS is 1, no
# durability (the data is loaded anew every run) and no logging collector
# or connection logging.
pg_store_settings() {
  store_settings=(
    -c listen_addresses=127.0.0.1 -c "port=$1"
    -c "unix_socket_directories=$work/sock" -c "max_connections=$2"
    "${@:4}" -c password_encryption=scram-sha-256
  )
  if [ "$3" = 1 ]; then
    store_settings+=(-c ssl=on -c "ssl_cert_file=$work/tls/cert.pem" -c "ssl_key_file=$work/tls/key.pem")
  fi
  store_settings+=(
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off
    -c logging_collector=off -c log_connections=off -c log_disconnections=off
  )
}

# pg_start PORT SETTING...: starts the cluster of pg_initdb (write its
# pg_hba.conf first) with `postgres -D $work/pg SETTING...`, tracked as
# postgres on PORT, and waits until the superuser gets in over the socket.
pg_start() {
  pg_su_port=$1
  shift
  (cd "$work" && exec "${as_store[@]}" "$PG_BIN/postgres" -D "$work/pg" "$@" \
    >"$work/postgres.log" 2>&1) &
  track postgres "$pg_su_port"
  for _ in $(seq 300); do
    su_psql -d postgres -c 'SELECT 1' >/dev/null 2>&1 && return 0
    kill -0 "${PID[postgres]}" 2>/dev/null || { cat "$work/postgres.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "PostgreSQL did not come up; its log:" >&2
  cat "$work/postgres.log" >&2
  exit 1
}

# su_psql ARG...: psql as the superuser over the private socket.
su_psql() {
  PGSSLMODE=disable "$psql" -X -q -v ON_ERROR_STOP=1 -h "$work/sock" -p "$pg_su_port" -U postgres "$@"
}

# pg_select PORT USER SECRET: `SELECT 1` in database bench through PORT,
# as USER with SECRET as the password, prints 1 (PGSSLMODE as exported).
pg_select() {
  [ "$(PGPASSWORD=$3 "$psql" -X -w -A -t -h 127.0.0.1 -p "$1" -U "$2" -d bench \
        -c 'SELECT 1' 2>/dev/null)" = 1 ]
}

# pg_wait_select PORT USER SECRET: waits (up to a minute) until pg_select
# succeeds.
pg_wait_select() {
  for _ in $(seq 300); do
    pg_select "$@" && return 0
    sleep 0.2
  done
  echo "SELECT 1 does not go through port $1 as $2" >&2
  return 1
}

# pgbench_result OUTPUT EXIT_STATUS WHAT: reads pgbench's summary into tx
# (transactions), tps, lat (average latency, ms) and conn (average
# connection time, ms, with -C). Exits 1, with the output and
# $work/pgbench.err, when pgbench failed, processed nothing or reported
# failed transactions; WHAT names the run in that message.
pgbench_result() {
  local failed
  tx=$(printf '%s\n' "$1" | awk -F': ' '/^number of transactions actually processed/ { print $2 }')
  failed=$(printf '%s\n' "$1" | awk '/^number of failed transactions/ { print $5 }')
  tps=$(printf '%s\n' "$1" | awk '/^tps = / { print $3 }')
  lat=$(printf '%s\n' "$1" | awk '/^latency average = / { print $4 }')
  conn=$(printf '%s\n' "$1" | awk '/^average connection time = / { print $5 }')
  if [ "$2" -ne 0 ] || [ -z "$tx" ] || [ "$tx" = 0 ] || [ -z "$tps" ] || [ "${failed:-0}" != 0 ]; then
    echo "pgbench against $3 failed (exit $2):" >&2
    printf '%s\n' "$1" >&2
    cat "$work/pgbench.err" >&2
    exit 1
  fi
}

# ---- rounds and the report ----

# rotated ROUND NAME...: the NAMEs, starting at position ROUND-1 and
# wrapping around, so that no endpoint always runs first (on a cold cache)
# or last (on a hot machine).
rotated() {
  local round=$1 i
  shift
  local names=("$@")
  for ((i = 0; i < ${#names[@]}; i++)); do
    printf '%s ' "${names[$(( (i + round - 1) % ${#names[@]} ))]}"
  done
}

# tree_state: the workspace's commit, and whether the code custos is built
# from has uncommitted changes.
tree_state() {
  local commit
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$root" status --porcelain -- appliance parsers Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    commit="$commit with uncommitted changes"
  fi
  echo "$commit"
}

# report_header SCRIPT: the report's first lines: the script, the time, the
# machine, the load averages at the start and end of the run (load_start,
# load_end) and BENCH_NOTE if set.
report_header() {
  echo "# bench/$1, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
       "$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
  echo "load average (1/5/15 min): $load_start at the start, $load_end at the end"
  if [ -n "${BENCH_NOTE:-}" ]; then echo "note: $BENCH_NOTE"; fi
}

# custos_built: when the custos binary was built, and the tree at the time
# build_custos ran.
custos_built() {
  echo "binary built $(date -u -r "$custos_bin" '+%Y-%m-%d %H:%M UTC'), tree at $custos_tree"
}
