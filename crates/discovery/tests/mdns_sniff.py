#!/usr/bin/env python3
"""Listen on the mDNS group for SECONDS and print how many packets mention
_socketplane (queries or answers). Used to prove nothing of ours leaks onto
an interface other than the underlay.

usage: mdns_sniff.py SECONDS
"""

import socket
import struct
import sys
import time


def main():
    seconds = float(sys.argv[1])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("", 5353))
    mreq = struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton("0.0.0.0"))
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


if __name__ == "__main__":
    main()
