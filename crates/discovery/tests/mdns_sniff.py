#!/usr/bin/env python3
"""A passive mDNS listener and a control sender, to prove nothing of ours
leaks onto an interface other than the underlay.

usage: mdns_sniff.py listen SECONDS
    Listen on the mDNS group for SECONDS and print "OURS ALL": how many
    packets mention _socketplane (queries or answers), and how many came.
usage: mdns_sniff.py send COUNT
    Send COUNT mDNS queries for _sniffcontrol._udp.local. (not ours), 0.2 s
    apart: the listener on the same LAN must count them, or it is deaf.
"""

import socket
import struct
import sys
import time

GROUP = ("224.0.0.251", 5353)


def listen(seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("", GROUP[1]))
    mreq = struct.pack("4s4s", socket.inet_aton(GROUP[0]), socket.inet_aton("0.0.0.0"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    deadline = time.monotonic() + seconds
    total = 0
    ours = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, _ = s.recvfrom(9000)
        except socket.timeout:
            break
        total += 1
        if b"_socketplane" in data:
            ours += 1
    print(f"{ours} {total}")


def query(name):
    header = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return header + labels + b"\x00" + struct.pack("!HH", 12, 1)  # PTR, IN


def send(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    packet = query("_sniffcontrol._udp.local.")
    for _ in range(count):
        s.sendto(packet, GROUP)
        time.sleep(0.2)


def main():
    mode, n = sys.argv[1], sys.argv[2]
    if mode == "listen":
        listen(float(n))
    elif mode == "send":
        send(int(n))
    else:
        sys.exit("usage: mdns_sniff.py listen SECONDS | send COUNT")


if __name__ == "__main__":
    main()
