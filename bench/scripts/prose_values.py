#!/usr/bin/env python3
"""Writes RESP SET commands (for `redis-cli --pipe`) that fill redis-benchmark's
key space (key:000000000000 ...) with text values that read like what
applications and agents store: sentences, names, dates, small numbers, no
personal data. redis-benchmark's own values are random printable bytes,
dense with digit runs, '@', '_' and '-', which is the worst case for a
masking prefilter rather than the common one.

    prose_values.py KEYS BYTES | redis-cli -p PORT --pipe
"""
import random
import sys

WORDS = (
    "the agent noted that customer asked about delivery window order status "
    "refund policy shipping address update preferred contact morning meeting "
    "summary project timeline budget review follow up next week memory recall "
    "conversation context user prefers short answers in english and french "
    "last seen on tuesday with three open tickets and one pending approval"
).split()


def value(rng: random.Random, size: int) -> bytes:
    out = []
    n = 0
    while n < size:
        w = rng.choice(WORDS)
        if rng.random() < 0.03:
            w = str(rng.randint(1, 99))
        out.append(w)
        n += len(w) + 1
    return " ".join(out).encode()[:size]


def main() -> None:
    keys, size = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(7)
    w = sys.stdout.buffer
    for i in range(keys):
        k = b"key:%012d" % i
        v = value(rng, size)
        w.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))


if __name__ == "__main__":
    main()
