"""The client of etaccept.py: a burst of N connections at once, each sends
"ping" and waits for "pong". Several connections arriving between two of
the server's epoll_wait calls make one edge on Linux too, so when nothing
has been answered for a while the client makes one more (throw-away)
connection: on Linux each arrival is a new edge, and the server accepts
the oldest waiting connection. It passes when all N are answered within
30 s. Usage: etburst.py HOST PORT N"""
import selectors
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sel = selectors.DefaultSelector()
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, port))
    sel.register(s, selectors.EVENT_WRITE)
served = pokes = failed = 0
start = last = time.time()
while served + failed < n and time.time() - start < 30:
    events = sel.select(0.02)
    for key, mask in events:
        s = key.fileobj
        if mask & selectors.EVENT_WRITE:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                print("connect failed:", err)
                failed += 1
                sel.unregister(s)
                s.close()
                continue
            s.send(b"ping")
            sel.modify(s, selectors.EVENT_READ)
        else:
            try:
                d = s.recv(16)
            except OSError as e:
                print("recv failed:", e)
                d = b""
            if d == b"pong":
                served += 1
                last = time.time()
            else:
                failed += 1
            sel.unregister(s)
            s.close()
    if not events and time.time() - last > 0.03 and pokes < 400:
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as e:
            print("poke failed:", e)
        pokes += 1
        last = time.time()
print(f"served {served}/{n} failed {failed} in {time.time() - start:.1f} s ({pokes} extra connections)")
sys.exit(0 if served == n else 1)
