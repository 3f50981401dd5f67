#!/usr/bin/env python3
"""Load generators for benches/tcp-proxy.sh (std library only).

  echo-server PORT                 threaded echo server on 127.0.0.1
  latency ADDR RATE SECONDS        request/response over one connection at a
                                   fixed rate; prints p50 p99 in microseconds
  connrate ADDR SECONDS THREADS    connect, 1-byte echo, close, in a loop;
                                   prints connections per second
  idle ADDR COUNT                  opens COUNT connections, echoes one byte on
                                   each, prints "ready" and holds them until
                                   stdin closes
"""
import selectors
import socket
import sys
import threading
import time


def echo_server(port):
    # One thread and epoll: 10k idle connections cost no threads.
    sel = selectors.DefaultSelector()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4096)
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is srv:
                try:
                    c, _ = srv.accept()
                except OSError:
                    continue
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                continue
            try:
                b = s.recv(65536)
            except OSError:
                b = b""
            if not b:
                sel.unregister(s)
                s.close()
                continue
            s.setblocking(True)
            try:
                s.sendall(b)
            except OSError:
                pass
            s.setblocking(False)


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def latency(target, rate, seconds):
    s = socket.create_connection(addr(target))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * 64
    interval = 1.0 / rate
    samples = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        # open loop: requests leave on schedule, not when the last one returned
        due = start + i * interval
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        t0 = time.perf_counter_ns()
        s.sendall(msg)
        got = 0
        while got < len(msg):
            got += len(s.recv(65536))
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    print(f"{p(0.50):.1f} {p(0.99):.1f}")


def connrate(target, seconds, threads):
    a = addr(target)
    count = [0] * threads
    stop = time.perf_counter() + seconds

    def work(k):
        while time.perf_counter() < stop:
            s = socket.create_connection(a)
            s.sendall(b"x")
            s.recv(1)
            s.close()
            count[k] += 1

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"{sum(count) / (time.perf_counter() - t0):.0f}")


def idle(target, count):
    a = addr(target)
    conns = []
    for _ in range(count):
        s = socket.create_connection(a)
        s.sendall(b"x")
        s.recv(1)
        conns.append(s)
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "echo-server":
        echo_server(int(args[0]))
    elif cmd == "latency":
        latency(args[0], float(args[1]), float(args[2]))
    elif cmd == "connrate":
        connrate(args[0], float(args[1]), int(args[2]))
    elif cmd == "idle":
        idle(args[0], int(args[1]))
    else:
        sys.exit(__doc__)
