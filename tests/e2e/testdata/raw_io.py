# Issue 11 case 3: bytes that go past the preload (raw syscalls) are never
# lost silently. Each case prints one line that raw_test.go checks.
import ctypes, socket, sys, time

libc = ctypes.CDLL(None, use_errno=True)
SYS_read, SYS_write = 0, 1  # x86_64
port = int(sys.argv[1])


def raw_write(fd, b):
    return libc.syscall(SYS_write, fd, b, len(b))


def raw_read(fd, n):
    buf = ctypes.create_string_buffer(n)
    r = libc.syscall(SYS_read, fd, buf, n)
    return buf.raw[:max(r, 0)]


l = socket.socket()
l.bind(("127.0.0.1", port))
l.listen(8)


def pair():
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = l.accept()
    return c, a


def outcome(s):
    """reads until EOF or an error: (how it ended, what it read)"""
    s.settimeout(20)
    data = b""
    try:
        while True:
            d = s.recv(100)
            if not d:
                return "eof", data
            data += d
    except ConnectionResetError:
        return "reset", data
    except socket.timeout:
        return "timeout", data


# 1: a raw write, then the writer waits for an answer in recv
c, a = pair()
c.sendall(b"lib")
raw_write(c.fileno(), b"RAW")
how, got = outcome(c)
phow, pgot = outcome(a)
print("write-wait client=%s peer=%s peer-data=%r" % (how, phow, pgot), flush=True)

# 2: a raw write, then close
c, a = pair()
c.sendall(b"lib")
raw_write(c.fileno(), b"RAW")
c.close()
phow, pgot = outcome(a)
print("write-close peer=%s peer-data=%r" % (phow, pgot), flush=True)

# 3: a raw read, then nothing through the preload for a while
c, a = pair()
a.sendall(b"x")
time.sleep(0.3)
r = raw_read(c.fileno(), 10)
time.sleep(2)
how, got = outcome(c)
phow, pgot = outcome(a)
print("read client=%s raw=%r peer=%s" % (how, r, phow), flush=True)
