# Receives one TCP stream on ADDR:5001, answers with its SHA-256, prints it.
import socket, hashlib, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
c.sendall(h.digest()); c.close()
print("server bytes", n, "sha256", h.hexdigest(), flush=True)
