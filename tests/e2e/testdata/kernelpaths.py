# Exercises kernel paths a preloaded program must keep: unix sockets, pipes,
# DNS (UDP to the resolver). With an argument HOST:PORT it also makes one
# TCP connection there (through NUSE when the rules say so).
import os, socket, sys

a, b = socket.socketpair()
a.sendall(b"u" * 100000)
got = b""
while len(got) < 100000:
    got += b.recv(65536)
assert got == b"u" * 100000, "unix socketpair"

srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
path = "/tmp/nuse-kernelpaths-%d.sock" % os.getpid()
srv.bind(path)
srv.listen(1)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(path)
s2, _ = srv.accept()
c.sendall(b"hello")
assert s2.recv(5) == b"hello", "unix stream"
os.unlink(path)

r, w = os.pipe()
os.write(w, b"pipe!")
assert os.read(r, 5) == b"pipe!", "pipe"

addr = socket.getaddrinfo("svc.nuse.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
assert addr == "10.77.0.2", "dns answer " + addr

if len(sys.argv) > 1:
    host, port = sys.argv[1].rsplit(":", 1)
    t = socket.create_connection((host, int(port)), timeout=10)
    t.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = t.recv(100)
    assert data.startswith(b"HTTP/1."), data
    t.close()
print("kernel paths ok", flush=True)
