# server: accept connections and hold them, sending nothing (bounded).
# client: connect and block in recv(); report how recv ended.
# pollclient: connect, go non-blocking, say "connected", then wait for the
# marker file (argv[4]) to appear and poll+recv until recv fails; report
# the error and how many non-blocking recvs said EAGAIN first (bounded).
import errno, os, select, socket, sys, time

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
elif mode == "pollclient":
    s = socket.create_connection((host, port), timeout=10)
    s.setblocking(False)
    print("connected", flush=True)
    t0 = time.time()
    while not os.path.exists(sys.argv[4]) and time.time() - t0 < 60:
        time.sleep(0.05)
    eagain = 0
    while eagain < 1000:
        try:
            d = s.recv(10)
            print("recv returned %r after %d EAGAIN" % (d, eagain), flush=True)
            break
        except BlockingIOError:
            eagain += 1
            select.select([s], [], [], 5)
        except OSError as e:
            print("recv failed: %s after %d EAGAIN" % (errno.errorcode.get(e.errno, e.errno), eagain), flush=True)
            break
    else:
        print("recv spun: %d EAGAIN" % eagain, flush=True)
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
