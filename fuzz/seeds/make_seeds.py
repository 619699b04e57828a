#!/usr/bin/env python3
"""Seed corpus of real packets: queries of many shapes, and what NSD answers to them.

Starts NSD on 127.0.0.1 with a small zone (A, AAAA, CNAME chain, MX, TXT, SRV, a
delegation, a negative answer, a big RRset that truncates) and writes, one file per
packet, the query to corpus/client_query/ and the answer to corpus/upstream_reply/.
Needs nsd (Debian package). Loopback only.
"""
import os, shutil, socket, struct, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_Q = os.path.join(HERE, "..", "corpus", "client_query")
OUT_R = os.path.join(HERE, "..", "corpus", "upstream_reply")

ZONE = """$ORIGIN example.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 127.0.0.1
www IN A 192.0.2.1
www IN AAAA 2001:db8::1
alias IN CNAME www
chain IN CNAME alias
mail IN MX 10 www
txt IN TXT "v=spf1 -all" "second string"
_sip._tcp IN SRV 0 5 5060 www
sub IN NS ns.sub
ns.sub IN A 192.0.2.53
"""
BIG = "".join(f"big IN A 10.0.{i // 256}.{i % 256}\n" for i in range(120))


def name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qid, qname, qtype, edns=None, do=False, flags=0x0100):
    m = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    m += name(qname) + struct.pack(">HH", qtype, 1)
    if edns:
        m += b"\0" + struct.pack(">HHIH", 41, edns, 0x8000 if do else 0, 0)
    return m


def main():
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    os.makedirs(OUT_Q, exist_ok=True)
    os.makedirs(OUT_R, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "example.zone"), "w") as f:
            f.write(ZONE + BIG)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with open(os.path.join(d, "nsd.conf"), "w") as f:
            f.write(f"""server:
  ip-address: 127.0.0.1@{port}
  zonesdir: "{d}"
  database: ""
  pidfile: "{d}/nsd.pid"
  xfrdfile: "{d}/xfrd.state"
  zonelistfile: "{d}/zone.list"
  username: ""
  chroot: ""
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: example.
  zonefile: example.zone
""")
        p = subprocess.Popen([nsd, "-d", "-c", os.path.join(d, "nsd.conf")])
        try:
            time.sleep(1.5)
            cases = [
                ("www.example.", 1, None, False), ("www.example.", 28, 1232, True),
                ("alias.example.", 1, 1232, False), ("chain.example.", 1, None, False),
                ("mail.example.", 15, 4096, False), ("txt.example.", 16, 1232, False),
                ("_sip._tcp.example.", 33, 1232, False), ("host.sub.example.", 1, 1232, False),
                ("nope.example.", 1, 1232, False), ("www.example.", 99, None, False),
                ("big.example.", 1, None, False), ("big.example.", 1, 4096, False),
                ("example.", 6, 1232, True), ("example.", 2, None, False),
                ("WwW.ExAmPlE.", 1, 1232, False), ("example.", 255, 1232, False),
            ]
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.settimeout(3)
            for i, (qn, qt, edns, do) in enumerate(cases):
                q = query(0x1000 + i, qn, qt, edns, do)
                c.sendto(q, ("127.0.0.1", port))
                r, _ = c.recvfrom(65535)
                tag = f"{i:02d}-{qn.strip('.').replace('.', '_')}-{qt}"
                open(os.path.join(OUT_Q, tag), "wb").write(q)
                open(os.path.join(OUT_R, tag), "wb").write(r)
            print(f"wrote {len(cases)} queries and replies")
        finally:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
