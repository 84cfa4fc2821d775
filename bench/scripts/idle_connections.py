#!/usr/bin/env python3
"""Memory cost of idle connections on a Redis endpoint.

Opens COUNT connections to 127.0.0.1:PORT, sends one PING on each (after an
AUTH when a password is given), reads every reply, then holds them idle and
reads the resident set size of the process PID (and, with --also-pid, of more
processes, e.g. an upstream whose connections the proxy opens). Prints one
line: `baseline_kib loaded_kib kib_per_connection`.

Standard library only.
"""

import argparse
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def read_reply(sock, buf):
    """Reads one simple reply line (+OK, +PONG or -ERR ...)."""
    while b"\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before a reply")
        buf += chunk
    line, _, rest = buf.partition(b"\r\n")
    return line, rest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="process whose RSS is measured")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--password", default="")
    ap.add_argument("--settle-s", type=float, default=2.0)
    args = ap.parse_args()

    time.sleep(args.settle_s)
    baseline = rss_kib([args.pid])
    hello = b""
    if args.password:
        pw = args.password.encode()
        hello += b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw)
    hello += b"*1\r\n$4\r\nPING\r\n"
    expected = 2 if args.password else 1

    socks = []
    try:
        for i in range(args.count):
            s = socket.create_connection(("127.0.0.1", args.port), timeout=60)
            s.sendall(hello)
            socks.append(s)
        for i, s in enumerate(socks):
            buf = b""
            for _ in range(expected):
                line, buf = read_reply(s, buf)
                if line.startswith(b"-"):
                    sys.exit(f"connection {i}: {line.decode(errors='replace')}")
        time.sleep(args.settle_s)
        loaded = rss_kib([args.pid])
    finally:
        for s in socks:
            s.close()
    per_conn = (loaded - baseline) / max(1, args.count)
    print(f"{baseline} {loaded} {per_conn:.2f}")


if __name__ == "__main__":
    main()
