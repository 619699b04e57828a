#!/usr/bin/env python3
"""A steady stream of client queries to one DNS server, each recorded: for
bench/replicas.sh, run inside the client's network namespace.

Two streams at once on one socket, each query with a random ID:
  unique  every query a new name under ZONE (nothing is cached anywhere)
  repeat  a few names asked over and over (cached; stale once the cloud is gone)
Writes one CSV line per query: sent (s from start), kind, name, outcome (rcode name
or "timeout"), latency_ms, ttl and address of the first A record.
Standard library only.
"""
import argparse
import csv
import random
import select
import socket
import struct
import sys
import time

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def encode_query(qid, name):
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack(">HH", 1, 1)


def skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n


def decode_reply(msg):
    """(id, rcode name, ttl, address) of a reply; ttl and address of the first A."""
    qid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    i = 12
    for _ in range(qd):
        i = skip_name(msg, i) + 4
    for _ in range(an):
        i = skip_name(msg, i)
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", msg[i : i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            return qid, RCODES.get(flags & 0xF, str(flags & 0xF)), ttl, socket.inet_ntoa(msg[i : i + 4])
        i += rdlen
    return qid, RCODES.get(flags & 0xF, str(flags & 0xF)), "", ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--unique-rate", type=float, default=20)
    ap.add_argument("--repeat-rate", type=float, default=5)
    ap.add_argument("--repeat-names", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--started", help="file to write the start time (epoch seconds) to")
    a = ap.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((a.server, 53))
    sock.setblocking(False)
    start = time.time()
    if a.started:
        with open(a.started, "w") as f:
            f.write(f"{start}\n")
    schedule = []  # (time, kind)
    t = 0.0
    while t < a.seconds:
        schedule.append((t, "unique"))
        t += 1.0 / a.unique_rate
    t = 0.0
    while t < a.seconds:
        schedule.append((t, "repeat"))
        t += 1.0 / a.repeat_rate
    schedule.sort()
    pending = {}  # id -> (sent, kind, name)
    rows = []
    n = 0  # queries sent, for unique names
    r = 0  # repeated-name queries sent, to cycle through the names
    nxt = 0
    while nxt < len(schedule) or pending:
        now = time.time() - start
        while nxt < len(schedule) and schedule[nxt][0] <= now:
            kind = schedule[nxt][1]
            if kind == "unique":
                name = f"u{n}.{a.zone}"
            else:
                name = f"r{r % a.repeat_names}.{a.zone}"
                r += 1
            n += 1
            nxt += 1
            qid = random.randrange(65536)
            while qid in pending:
                qid = random.randrange(65536)
            pending[qid] = (now, kind, name)
            try:
                sock.send(encode_query(qid, name))
            except OSError:
                pass  # counted as a timeout: the client got nothing
        for qid, (sent, kind, name) in list(pending.items()):
            if now - sent > a.timeout:
                rows.append((f"{sent:.3f}", kind, name, "timeout", f"{a.timeout * 1000:.0f}", "", ""))
                del pending[qid]
        wait = 0.005 if nxt >= len(schedule) else max(0.0, min(0.005, schedule[nxt][0] - now))
        readable, _, _ = select.select([sock], [], [], wait)
        if not readable:
            continue
        while True:
            try:
                msg = sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                break
            try:
                qid, rcode, ttl, addr = decode_reply(msg)
            except (struct.error, IndexError):
                continue
            if qid not in pending:
                continue
            sent, kind, name = pending.pop(qid)
            latency = (time.time() - start - sent) * 1000
            rows.append((f"{sent:.3f}", kind, name, rcode, f"{latency:.1f}", ttl, addr))
    rows.sort(key=lambda r: float(r[0]))
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sent", "kind", "name", "outcome", "latency_ms", "ttl", "address"])
        w.writerows(rows)
    print(f"{len(rows)} queries", file=sys.stderr)


if __name__ == "__main__":
    main()
