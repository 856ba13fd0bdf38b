# Bad input for the DNS tests, sent to SERVER:53 from a workload:
# `junk` (malformed datagrams and TCP messages), `flood SECONDS`.
import os, socket, struct, sys, time

server, what = sys.argv[1], sys.argv[2]

def query(name, qid=0x1234):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + b"\0\x01\0\x01"

if what == "junk":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for p in [b"", b"\0", os.urandom(5), os.urandom(12), os.urandom(300),
              # a header claiming many records that are not there
              struct.pack(">HHHHHH", 1, 0x0100, 65535, 65535, 65535, 65535),
              # a name that points to itself
              struct.pack(">HHHHHH", 2, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\0\x01\0\x01",
              # oversized: a query padded to 4000 bytes, and to 65000
              query("x" * 60) + os.urandom(4000), query("y") + b"\0" * 65000]:
        try:
            u.sendto(p, (server, 53))
        except OSError:
            pass
    for p in [os.urandom(40), struct.pack(">H", 60000) + os.urandom(60000),
              struct.pack(">H", 65535) + b"\0" * 10]:
        t = socket.create_connection((server, 53), timeout=2)
        try:
            t.sendall(p if len(p) > 40 else struct.pack(">H", len(p)) + p)
            t.settimeout(1)
            t.recv(100)
        except OSError:
            pass
        t.close()
    print("sent")
elif what == "flood":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setblocking(False)
    end, n, q = time.time() + float(sys.argv[3]), 0, query("alpha")
    while time.time() < end:
        try:
            u.sendto(q, (server, 53))
            n += 1
        except BlockingIOError:
            pass
        try:
            while True:
                u.recv(512)
        except BlockingIOError:
            pass
    print(n)
