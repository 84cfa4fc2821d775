#!/usr/bin/env python3
"""Redis connection churn with a password or with tokens: each connection
connects, sends `AUTH <user> <secret>`, waits for +OK, sends PING, waits for
+PONG and closes. Several processes run side by side; the result is
connections per second over all of them.

  auth_churn.py --port P --user U --secret-file F --connections N [--procs M]
  auth_churn.py --port P --user U --tokens-file F --offset O --connections N [--procs M]

--secret-file: one password (or one token) for every connection.
--tokens-file: one token a line; connection i overall (counting from
--offset) uses line (O + i) mod the number of lines, so a list longer than
the appliance's verified-token cache makes every connection verify a
signature.

Prints one line: `connections seconds connections_per_second cpu_seconds`,
the last being the user+system time of the connecting processes. Any reply
other than +OK and +PONG stops the run with exit status 1. Standard library
only; 127.0.0.1 only.
"""

import argparse
import multiprocessing as mp
import resource
import socket
import sys
import time

HOST = "127.0.0.1"


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_line(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def worker(port, user, secrets, indices, go, result):
    auths = [resp(b"AUTH", user, s) for s in secrets]
    ping = resp(b"PING")
    go.wait()  # until every process is ready
    done = 0
    try:
        for i in indices:
            sock = socket.create_connection((HOST, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(auths[i % len(auths)])
            reply = read_line(sock)
            if reply != b"+OK\r\n":
                raise RuntimeError(f"AUTH: {reply!r}")
            sock.sendall(ping)
            reply = read_line(sock)
            if reply != b"+PONG\r\n":
                raise RuntimeError(f"PING: {reply!r}")
            sock.close()
            done += 1
    except Exception as e:  # reported by the parent
        result.put((done, f"{type(e).__name__}: {e}"))
        return
    result.put((done, None))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--secret-file")
    g.add_argument("--tokens-file")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--procs", type=int, default=4)
    a = p.parse_args()

    path = a.secret_file or a.tokens_file
    with open(path, "rb") as f:
        secrets = [line.strip() for line in f if line.strip()]
    if a.secret_file:
        secrets = secrets[:1]
    if not secrets:
        sys.exit(f"{path}: empty")
    user = a.user.encode()

    ctx = mp.get_context("fork")
    go = ctx.Barrier(a.procs + 1)
    result = ctx.Queue()
    procs = []
    for j in range(a.procs):
        # Interleaved, so the processes together walk the list in order.
        indices = range(a.offset + j, a.offset + a.connections, a.procs)
        proc = ctx.Process(target=worker, args=(a.port, user, secrets, indices, go, result))
        proc.start()
        procs.append(proc)
    go.wait()
    start = time.monotonic()
    outcomes = [result.get() for _ in procs]
    elapsed = time.monotonic() - start
    for proc in procs:
        proc.join()
    # The connecting processes' own CPU time (forked: no interpreter start-up).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = children.ru_utime + children.ru_stime
    errors = [e for _, e in outcomes if e]
    total = sum(n for n, _ in outcomes)
    if errors:
        sys.exit(f"{len(errors)} of {a.procs} processes failed after {total} connections: {errors[0]}")
    print(f"{total} {elapsed:.4f} {total / elapsed:.1f} {cpu:.4f}")


if __name__ == "__main__":
    main()
