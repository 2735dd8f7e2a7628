"""Issue 11 case 2: a server that hands each connection to a child program
as its stdin and stdout, without fork: subprocess (vfork + exec inside
CPython) or os.posix_spawn (glibc's posix_spawn, file actions that dup2
the socket), alternating. The handler (sh) knows nothing about sockets.
Usage: spawnsrv.py HOST PORT"""
import os
import socket
import subprocess
import sys

host, port = sys.argv[1], int(sys.argv[2])
l = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(16)
print("listening", flush=True)
handler = ["sh", "-c", 'read line; echo "hello $line from $0"']
n = 0
while True:
    c, _ = l.accept()
    if n % 2 == 0:
        p = subprocess.Popen(handler + ["subprocess"], stdin=c, stdout=c, close_fds=True)
        c.close()
        p.wait()
    else:
        pid = os.posix_spawnp("sh", handler + ["posix_spawn"], os.environ,
                              file_actions=[(os.POSIX_SPAWN_DUP2, c.fileno(), 0),
                                            (os.POSIX_SPAWN_DUP2, c.fileno(), 1)])
        c.close()
        os.waitpid(pid, 0)
    n += 1
