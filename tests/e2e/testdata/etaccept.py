"""Issue 11 case 11: an edge-triggered epoll server that accepts exactly
one connection per listener event (as some event loops do), reads each
connection until EAGAIN, answers "ping" with "pong".
Usage: etaccept.py HOST PORT"""
import select
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(1024)
l.setblocking(False)
ep = select.epoll()
ep.register(l.fileno(), select.EPOLLIN | select.EPOLLET)
conns = {}
print("listening", flush=True)
while True:
    for fd, ev in ep.poll(10):
        if fd == l.fileno():
            try:
                c, _ = l.accept()  # one per event, on purpose
            except BlockingIOError:
                continue
            c.setblocking(False)
            conns[c.fileno()] = c
            ep.register(c.fileno(), select.EPOLLIN | select.EPOLLET)
            continue
        c = conns[fd]
        data, closed = b"", False
        while True:
            try:
                b = c.recv(4096)
            except BlockingIOError:
                break
            except OSError:
                closed = True
                break
            if not b:
                closed = True
                break
            data += b
        if b"ping" in data:
            try:
                c.send(b"pong")
            except OSError:
                closed = True
        if closed:
            ep.unregister(fd)
            c.close()
            del conns[fd]
