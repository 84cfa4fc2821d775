#!/usr/bin/env bash
# Runs custos in front of a throwaway Redis and sends a few commands through it.
#
#   examples/demo.sh          (from the repository root or anywhere else)
#
# Starts redis-server on 127.0.0.1:16379 with an ACL user `custos` and a random
# password (data in a temporary folder, nothing persisted), writes that password
# to examples/secrets/redis, builds custos and runs it with examples/custos.toml
# (clients on 127.0.0.1:6380, admin on 127.0.0.1:9090), then shows redis-cli
# replies through the appliance. Everything started here is stopped on exit.
#
# Only Redis for now: the appliance does not speak PostgreSQL yet.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

for tool in redis-server redis-cli cargo curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "demo: $tool is missing (apt-get install redis-server redis-tools curl; cargo from rustup)" >&2
    exit 1
  fi
done
for port in 16379 6380 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use; stop what listens there first" >&2
    exit 1
  fi
done

work=$(mktemp -d -t custos-demo.XXXXXX)
redis_pid=""
custos_pid=""
cleanup() {
  [ -n "$custos_pid" ] && kill "$custos_pid" 2>/dev/null && wait "$custos_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p examples/secrets
umask 077
printf '%s' "$password" > examples/secrets/redis
umask 022

echo "== starting redis-server on 127.0.0.1:16379 (ACL user custos)"
redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --logfile "$work/redis.log" \
  --user default off --user custos on ">$password" '~*' '&*' '+@all' &
redis_pid=$!
for _ in $(seq 100); do
  redis-cli -p 16379 --user custos --pass "$password" --no-auth-warning PING >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== building custos"
cargo build --quiet -p custos --bin custos
bin="${CARGO_TARGET_DIR:-$root/target}/debug/custos"

echo "== starting custos with examples/custos.toml (log in $work/custos.log)"
"$bin" run --config examples/custos.toml 2>"$work/custos.log" &
custos_pid=$!
for _ in $(seq 300); do
  curl -fsS http://127.0.0.1:9090/healthz >/dev/null 2>&1 && break
  if ! kill -0 "$custos_pid" 2>/dev/null; then
    echo "demo: custos exited; its log:" >&2
    cat "$work/custos.log" >&2
    exit 1
  fi
  sleep 0.1
done

run() {
  printf '$ redis-cli -p 6380'
  printf ' %q' "$@"
  echo
  redis-cli -p 6380 "$@"
}
echo "== commands through custos (no password on the client side)"
run SET greeting "hello through custos"
run GET greeting
run INCR visits
run HSET user:1 name ada lang rust
run HGETALL user:1
run ACL WHOAMI
echo "== the store sees the appliance's user; the client never had its password"
echo "== metrics (excerpt)"
curl -fsS http://127.0.0.1:9090/metrics | grep -E '^custos_(commands_total|connections_total)' || true
