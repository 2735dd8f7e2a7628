# An epoll server whose daemon dies: once the daemon is gone, accept() must
# fail (ECONNABORTED) and the listener must stop polling ready, so an event
# loop idles instead of spinning. Bounded in time throughout.
import errno, os, select, socket, sys, time

host, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(4)
l.setblocking(False)
ep = select.epoll()
ep.register(l.fileno(), select.EPOLLIN)
print("listening", flush=True)
# Wait for the test to kill the daemon: it creates the marker file then.
give_up = time.time() + 60
while not os.path.exists(marker) and time.time() < give_up:
    time.sleep(0.05)
deadline = time.time() + 10
wakeups = 0
while time.time() < deadline:
    ev = ep.poll(1.0)
    if not ev:
        print("quiet after %d wakeups" % wakeups, flush=True)
        sys.exit(0)
    wakeups += 1
    try:
        l.accept()
        print("accept succeeded after the daemon died", flush=True)
        sys.exit(1)
    except OSError as e:
        if wakeups == 1:
            print("accept failed: %s" % errno.errorcode.get(e.errno, e.errno), flush=True)
    if wakeups > 1000:
        print("spinning: %d wakeups" % wakeups, flush=True)
        sys.exit(1)
print("still waking after 10 s (%d wakeups)" % wakeups, flush=True)
sys.exit(1)
