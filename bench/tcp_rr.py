#!/usr/bin/env python3
"""TCP request/response latency: a 1-byte ping-pong on one connection.

  tcp_rr.py serve ADDR PORT            echo every byte back (one client at a time)
  tcp_rr.py client ADDR PORT SAMPLES   print "p50_us p99_us" of SAMPLES round trips

Python adds the same few microseconds to every path; compare paths measured
by the same run, not absolute values.
"""
import socket
import sys
import time


def serve(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(4)
    while True:
        c, _ = s.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with c:
            while True:
                b = c.recv(1)
                if not b:
                    break
                c.sendall(b)


def client(addr, port, samples):
    c = socket.create_connection((addr, port), timeout=5)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(100):  # warm-up: ARP, caches
        c.sendall(b"x")
        c.recv(1)
    lat = []
    clock = time.perf_counter_ns
    for _ in range(samples):
        t0 = clock()
        c.sendall(b"x")
        if not c.recv(1):
            raise SystemExit("server closed")
        lat.append(clock() - t0)
    c.close()
    lat.sort()
    p50 = lat[len(lat) // 2] / 1e3
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3
    print(f"{p50:.1f} {p99:.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
