#!/usr/bin/env bash
# Runs custos in front of a throwaway Redis and PostgreSQL and sends a few
# commands and statements through it.
#
#   examples/demo.sh          (from the repository root or anywhere else)
#
# Starts redis-server on 127.0.0.1:16379 with an ACL user `custos`, and
# PostgreSQL 15 on 127.0.0.1:15432 with a role `custos` owning a database
# `memory`, each with a random password (data in a temporary folder, nothing
# persisted); writes those passwords and a self-signed TLS certificate to
# examples/secrets/, builds custos and runs it with examples/custos.toml
# (Redis clients on 127.0.0.1:6380, PostgreSQL clients on 127.0.0.1:5433 over
# TLS, admin on 127.0.0.1:9090), then shows redis-cli and psql going through
# the appliance. Everything started here is stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

pg_bin=/usr/lib/postgresql/15/bin
for tool in redis-server redis-cli cargo curl psql openssl "$pg_bin/initdb"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "demo: $tool is missing (apt-get install redis-server redis-tools postgresql-15 postgresql-client-15 openssl curl; cargo from rustup)" >&2
    exit 1
  fi
done
for port in 16379 6380 15432 5433 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use; stop what listens there first" >&2
    exit 1
  fi
done

work=$(mktemp -d -t custos-demo.XXXXXX)
redis_pid=""
pg_pid=""
custos_pid=""
cleanup() {
  [ -n "$custos_pid" ] && kill "$custos_pid" 2>/dev/null && wait "$custos_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  if [ -n "$pg_pid" ]; then
    # The postmaster itself: when run through runuser, $pg_pid is runuser,
    # which does not pass signals on.
    local pm
    pm=$(head -1 "$work/pg/postmaster.pid" 2>/dev/null || echo "$pg_pid")
    kill -INT "$pm" 2>/dev/null || true
    wait "$pg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
pg_password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p examples/secrets/tls
umask 077
printf '%s' "$password" > examples/secrets/redis
printf '%s' "$pg_password" > examples/secrets/postgres
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout examples/secrets/tls/key.pem -out examples/secrets/tls/cert.pem 2>/dev/null
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

echo "== starting PostgreSQL on 127.0.0.1:15432 (role custos, database memory)"
# PostgreSQL refuses to run as root; run it as the postgres user then.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)
  chown postgres "$work"
fi
printf '%s' "$pg_password" > "$work/pgpass"
[ "$(id -u)" = 0 ] && chown postgres "$work/pgpass"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres -A scram-sha-256 \
  --pwfile="$work/pgpass" >"$work/initdb.log" 2>&1
"${as_pg[@]}" "$pg_bin/postgres" -D "$work/pg" -p 15432 -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories="$work" >"$work/postgres.log" 2>&1 &
pg_pid=$!
for _ in $(seq 100); do
  PGPASSWORD=$pg_password psql -h 127.0.0.1 -p 15432 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
PGPASSWORD=$pg_password psql -h 127.0.0.1 -p 15432 -U postgres -d postgres -q \
  -c "create role custos login password '$pg_password'" -c "create database memory owner custos"

echo "== building custos"
cargo build --quiet -p custos --bin custos
bin="${CARGO_TARGET_DIR:-$root/target}/debug/custos"

echo "== a development identity provider: signing key and JWKS in examples/secrets/"
rm -f examples/secrets/idp.pem
"$bin" token keygen --out examples/secrets/idp.pem >/dev/null
"$bin" token jwks --key examples/secrets/idp.pem > examples/secrets/jwks.json
mint() {
  "$bin" token mint --key examples/secrets/idp.pem --iss https://idp.example.test/ --aud custos "$@"
}
token=$(mint --sub alice --groups eng,agents --ttl 15m)
echo "   alice's token (15 minutes): ${token:0:40}..."

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
  printf '$ redis-cli -p 6380 --user alice --pass "$TOKEN"'
  printf ' %q' "$@"
  echo
  redis-cli -p 6380 --user alice --pass "$token" --no-auth-warning "$@"
}
echo "== without a token, nothing but AUTH, HELLO and QUIT is answered"
echo '$ redis-cli -p 6380 GET greeting'
redis-cli -p 6380 GET greeting
echo "== commands through custos with alice's token as the password (the store's password stays in the appliance)"
run SET greeting "hello through custos"
run GET greeting
run INCR visits
run HSET user:1 name ada lang rust
run HGETALL user:1
run ACL WHOAMI
echo "== the store sees the appliance's user; the client never had its password"
echo "== masking: alice (group eng) sees card numbers, e-mail and the ssn field masked"
run HSET patient:7 name ada ssn 078-05-1120 email ada@example.com
run SET note:7 "card 4111 1111 1111 1111 on file"
run HGETALL patient:7
run GET note:7
echo "== policy: destructive commands are refused before the store sees them"
run FLUSHALL || true
officer=$(mint --sub pat --groups privacy --ttl 15m)
echo '$ redis-cli -p 6380 --user pat --pass "$OFFICER_TOKEN" GET note:7    # the privacy group sees clear values'
redis-cli -p 6380 --user pat --pass "$officer" --no-auth-warning GET note:7

pg() {
  printf '$ PGPASSWORD="$TOKEN" psql "host=127.0.0.1 port=5433 user=alice sslmode=require" -c "%s"\n' "$1"
  PGPASSWORD=$token psql "host=127.0.0.1 port=5433 user=alice sslmode=require" -X -c "$1"
}
echo "== statements through custos over TLS, alice's token as the password"
pg "create table if not exists notes (id serial primary key, body text, private text)"
pg "insert into notes (body, private) values ('remember the milk', 'allergic to nuts'), ('call ada at ada@example.com', 'owes 40')"
pg "select id, body, private, current_user as store_role from notes"
echo "== policy: a DROP hidden behind a harmless statement is refused, the table stays"
pg "select 1; drop table notes" || true
pg "select count(*) from notes"
echo "== a client without TLS is refused before it can send a token"
PGPASSWORD=$token psql "host=127.0.0.1 port=5433 user=alice sslmode=disable" -X -c "select 1" || true
echo "== an expired token is refused, and says why"
expired=$(mint --sub alice --ttl 15m --claim exp=1700000000)
PGPASSWORD=$expired psql "host=127.0.0.1 port=5433 user=alice sslmode=require" -X -c "select 1" || true
redis-cli -p 6380 --user alice --pass "$expired" --no-auth-warning PING || true
echo "== the appliance's log records each decision, never the token"
grep -E 'auth_(ok|fail)' "$work/custos.log" | tail -4 || true
echo "== metrics (excerpt)"
curl -fsS http://127.0.0.1:9090/metrics | grep -E '^custos_(commands_total|connections_total)' || true
