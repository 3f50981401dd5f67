#!/usr/bin/env python3
"""A minimal, fast Elasticsearch stand-in for benches/log-tail-ship.sh.

It answers `GET /` with a version document (rsyslog's omelasticsearch asks)
and every `POST …/_bulk` with `{"errors":false}`, and counts the events it
received (a bulk body holds two lines per event). It never parses the JSON,
so it is not the bottleneck: only the bytes are read. `GET /stats` returns
`events bytes`.

usage: log-tail-ship-receiver.py PORT_FILE
"""
import socket
import sys
import threading

lock = threading.Lock()
events = 0
body_bytes = 0


def serve(conn):
    global events, body_bytes
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    pending = b""
    try:
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                pending += chunk
            head, pending = pending.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = {}
            for l in lines[1:]:
                k, _, v = l.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0"))
            if headers.get("expect", "").lower() == "100-continue":
                # libcurl (rsyslog's omelasticsearch) waits a second for this otherwise.
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            newlines = pending[:length].count(b"\n")
            got = min(len(pending), length)
            pending = pending[got:]
            while got < length:
                n = conn.recv_into(view, min(len(buf), length - got))
                if n == 0:
                    return
                newlines += buf.count(b"\n", 0, n)
                got += n
            if method == "GET" and path == "/stats":
                with lock:
                    body = f"{events} {body_bytes}\n".encode()
            elif method == "GET":
                body = b'{"version":{"number":"8.11.0"},"tagline":"You Know, for Search"}'
            else:
                with lock:
                    events += newlines // 2
                    body_bytes += length
                body = b'{"took":0,"errors":false,"items":[]}'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
    except OSError:
        return
    finally:
        conn.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    with open(sys.argv[1], "w") as f:
        f.write(str(s.getsockname()[1]))
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


main()
