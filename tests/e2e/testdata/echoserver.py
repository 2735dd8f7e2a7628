"""A line echo server (a thread per connection), the peer of the bash
/dev/tcp and stdio clients. Usage: echoserver.py HOST PORT"""
import socket
import sys
import threading

host, port = sys.argv[1], int(sys.argv[2])


def serve(c):
    with c:
        f = c.makefile("rb")
        for line in f:
            c.sendall(b"echo: " + line)


l = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(16)
print("listening", flush=True)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
