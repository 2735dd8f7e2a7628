# Sends SIZE deterministic bytes to ADDR:5001 and checks the digest the sink returns.
import socket, hashlib, sys, random, time
size = int(sys.argv[2]); rng = random.Random(7); h = hashlib.sha256()
for i in range(50):
    try:
        c = socket.create_connection((sys.argv[1], 5001), timeout=60); break
    except OSError:
        time.sleep(0.2)
t = time.time(); n = 0
while n < size:
    b = rng.randbytes(min(1 << 16, size - n)); h.update(b); c.sendall(b); n += len(b)
c.shutdown(socket.SHUT_WR)
d = b""
while len(d) < 32:
    x = c.recv(64)
    if not x: break
    d += x
el = time.time() - t
ok = d == h.digest()
print("client bytes", n, "sha256", h.hexdigest(), "server-digest-match", ok, "secs %.2f" % el, flush=True)
sys.exit(0 if ok else 1)
