#!/usr/bin/env python3
"""The two halves of bench/loss.sh, each its own process; standard library only.

  loss.py proxy LISTEN_PORT TARGET_PORT LOSS TAG STATS_FILE
      A UDP proxy on 127.0.0.1:LISTEN_PORT in front of 127.0.0.1:TARGET_PORT that drops
      each datagram, query or reply, with probability LOSS. Each source address and
      port of the forwarder gets its own socket towards the target, so replies find
      their way back. TCP on the same port is relayed whole, message by message: on a
      lossy link the kernel retransmits what is lost (at least 200 ms per segment on
      Linux), which a user-space relay cannot mimic. On SIGTERM it writes to
      STATS_FILE how many queries (UDP and TCP) it received for names with TAG in them
      (the load's, not a forwarder's own probes).

  loss.py ask SERVER_PORT COUNT RATE TAG
      COUNT queries for new names (<TAG>-<i>.bench.test A) at RATE per second to
      127.0.0.1:SERVER_PORT, each from its own socket, each waiting up to 10 s for its
      reply. Prints one line of JSON: answered, servfail, other, no_reply, and the
      p50, p99 and max latency (ms) of the replies.
"""

import asyncio
import json
import random
import signal
import socket
import struct
import sys
import time

WAIT = 10.0


def proxy(listen_port, target_port, loss, tag, stats_file):
    loop = asyncio.new_event_loop()
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", listen_port))
    front.setblocking(False)
    target = ("127.0.0.1", target_port)
    backs = {}  # forwarder address -> [socket, last used]
    stats = {"queries": 0, "dropped_queries": 0, "dropped_replies": 0}

    def from_back(client, back):
        try:
            reply = back.recv(65535)
        except OSError:
            return
        if random.random() < loss:
            stats["dropped_replies"] += 1
            return
        try:
            front.sendto(reply, client)
        except OSError:
            pass

    def from_front():
        while True:
            try:
                query, client = front.recvfrom(65535)
            except BlockingIOError:
                return
            if tag in query.lower():
                stats["queries"] += 1
            if random.random() < loss:
                stats["dropped_queries"] += 1
                continue
            entry = backs.get(client)
            if entry is None:
                back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                back.setblocking(False)
                back.connect(target)
                loop.add_reader(back, from_back, client, back)
                entry = backs[client] = [back, 0.0]
            entry[1] = time.monotonic()
            try:
                entry[0].send(query)
            except OSError:
                pass

    def sweep():
        # A forwarder port idle for 30 s is gone (a socket per query): close its twin.
        now = time.monotonic()
        for client in [c for c, e in backs.items() if now - e[1] > 30]:
            back = backs.pop(client)[0]
            loop.remove_reader(back)
            back.close()
        loop.call_later(5, sweep)

    async def tcp_client(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return

        async def queries():
            while True:
                size = await reader.readexactly(2)
                query = await reader.readexactly(struct.unpack(">H", size)[0])
                if tag in query.lower():
                    stats["queries"] += 1
                up_writer.write(size + query)
                await up_writer.drain()

        async def replies():
            while True:
                data = await up_reader.read(65535)
                if not data:
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(queries(), replies())
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()
            up_writer.close()

    def stop():
        with open(stats_file, "w") as f:
            json.dump(stats, f)
        loop.stop()

    loop.run_until_complete(asyncio.start_server(tcp_client, "127.0.0.1", listen_port))
    loop.add_reader(front, from_front)
    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.call_later(5, sweep)
    loop.run_forever()


def query_bytes(qid, name):
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + b"\x00" + struct.pack(">HH", 1, 1)


async def ask_one(server, name):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(server)
    qid = random.randrange(65536)
    started = time.monotonic()
    await loop.sock_sendall(sock, query_bytes(qid, name))
    try:
        while True:
            reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), WAIT - (time.monotonic() - started))
            if len(reply) >= 12 and struct.unpack(">H", reply[:2])[0] == qid:
                return reply[3] & 0x0F, (time.monotonic() - started) * 1000.0
    except (asyncio.TimeoutError, ValueError):
        return None, None
    finally:
        sock.close()


async def ask(server_port, count, rate, tag):
    server = ("127.0.0.1", server_port)
    start = time.monotonic()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(ask_one(server, f"{tag}-{i}.bench.test")))
    results = await asyncio.gather(*tasks)
    latencies = sorted(ms for rcode, ms in results if rcode is not None)

    def pct(p):
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, max(0, int(len(latencies) * p + 0.999999) - 1))], 1)

    print(json.dumps({
        "asked": count,
        "answered": sum(1 for rcode, _ in results if rcode == 0),
        "servfail": sum(1 for rcode, _ in results if rcode == 2),
        "other": sum(1 for rcode, _ in results if rcode not in (None, 0, 2)),
        "no_reply": sum(1 for rcode, _ in results if rcode is None),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1], 1) if latencies else None,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "proxy":
        proxy(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5].encode(), sys.argv[6])
    elif sys.argv[1] == "ask":
        asyncio.run(ask(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]))
    else:
        sys.exit(__doc__)
