#!/bin/sh
# Regenerates builtin_commands.resp: the raw reply of `COMMAND` from a
# private redis-server (no modules, default configuration) on a Unix socket.
# The appliance parses this capture with the same code that parses a live
# store's reply, so the fallback table and the live one cannot disagree on
# meaning. Commit the result together with the Redis version it came from
# (see the table's module docs).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
redis-server --port 0 --unixsocket "$dir/r.sock" --save '' --appendonly no >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 50); do [ -S "$dir/r.sock" ] && break; sleep 0.1; done
python3 - "$dir/r.sock" "$here/builtin_commands.resp" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"*1\r\n$7\r\nCOMMAND\r\n")
s.settimeout(1.0)
data = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    pass
open(sys.argv[2], "wb").write(data)
print(f"{len(data)} bytes")
PY
redis-server --version
