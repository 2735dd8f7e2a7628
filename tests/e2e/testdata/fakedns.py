# A tiny DNS server for tests: answers every A query with one address.
# usage: fakedns.py LISTEN_ADDR ANSWER_ADDR   (UDP port 53; bounded life)
import socket, struct, sys, time

listen, answer = sys.argv[1], socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((listen, 53))
s.settimeout(1.0)
deadline = time.time() + 300
print("fakedns ready", flush=True)
while time.time() < deadline:
    try:
        q, peer = s.recvfrom(512)
    except socket.timeout:
        continue
    if len(q) < 12:
        continue
    qid, flags, qd = struct.unpack(">HHH", q[:6])
    # walk the question name
    i = 12
    while i < len(q) and q[i] != 0:
        i += q[i] + 1
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0] if i + 3 <= len(q) else 0
    question = q[12:i + 5]
    if qtype == 1:
        ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + answer
        hdr = struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    else:
        ans = b""
        hdr = struct.pack(">HHHHHH", qid, 0x8180, 1, 0, 0, 0)
    s.sendto(hdr + question + ans, peer)
