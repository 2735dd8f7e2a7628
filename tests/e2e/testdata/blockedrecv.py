# server: accept connections and hold them, sending nothing (bounded).
# client: connect and block in recv(); report how recv ended.
import errno, socket, sys, time

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "server":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port))
    l.listen(4)
    print("listening", flush=True)
    held = []
    l.settimeout(120)
    while True:
        try:
            c, _ = l.accept()
        except OSError:
            break
        held.append(c)
else:
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(None)  # block for real
    print("connected", flush=True)
    t0 = time.time()
    try:
        d = s.recv(10)
        print("recv returned %r after %.2fs" % (d, time.time() - t0), flush=True)
    except OSError as e:
        print("recv failed: %s after %.2fs" % (errno.errorcode.get(e.errno, e.errno), time.time() - t0), flush=True)
