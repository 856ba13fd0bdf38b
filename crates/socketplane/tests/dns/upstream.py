# A tiny upstream resolver for the DNS tests: answers A for one name,
# NXDOMAIN for every other (no recursion, standard library only).
import socket, sys

ADDR, PORT, NAME, ANSWER = sys.argv[1], int(sys.argv[2]), sys.argv[3].lower(), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ADDR, PORT))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    if len(data) < 12:
        continue
    # The question: labels up to the zero byte, then type and class.
    i, labels = 12, []
    while i < len(data) and data[i] != 0:
        n = data[i]
        labels.append(data[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    question = data[12:i + 5]
    qtype = int.from_bytes(data[i + 1:i + 3], "big")
    name = ".".join(labels)
    flags = 0x8180  # response, RD, RA
    if name == NAME and qtype == 1:
        answer = b"\xc0\x0c" + (1).to_bytes(2, "big") + (1).to_bytes(2, "big") \
            + (30).to_bytes(4, "big") + (4).to_bytes(2, "big") + socket.inet_aton(ANSWER)
        counts = (1).to_bytes(2, "big") + (1).to_bytes(2, "big") + b"\0\0\0\0"
    else:
        answer = b""
        flags |= 0 if name == NAME else 3  # NXDOMAIN
        counts = (1).to_bytes(2, "big") + b"\0\0\0\0\0\0"
    s.sendto(data[:2] + flags.to_bytes(2, "big") + counts + question + answer, peer)
