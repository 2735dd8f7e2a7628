"""Issue 11 case 2: an inetd-style server. It accepts, forks, and the child
dup2()s the connection onto stdin and stdout and execs a handler that knows
nothing about sockets (sh reading a line and echoing a greeting).
Usage: minetd.py HOST PORT"""
import os
import signal
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies
l = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(16)
print("listening", flush=True)
while True:
    c, _ = l.accept()
    if os.fork() == 0:
        l.close()
        os.dup2(c.fileno(), 0)
        os.dup2(c.fileno(), 1)
        c.close()
        os.execvp("sh", ["sh", "-c", 'read line; echo "hello $line"'])
    c.close()
