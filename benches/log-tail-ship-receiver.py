#!/usr/bin/env python3
"""A cheap Elasticsearch stand-in for benches/log-tail-ship.sh.

It answers `GET /` with a version document (rsyslog's omelasticsearch asks)
and every `POST …/_bulk` as Elasticsearch does when every item succeeded:
`"errors":false` and one item per action, in order, under the body's action
(`create` or `index`) with status 201. With `filter_path` (Filebeat and
log-tail-ship send `errors,items.*.error,items.*.status`) only the named
fields are kept, as Elasticsearch does; without it each item is the full one.
So a shipper's acknowledgement path runs as it would against Elasticsearch.

It never parses the documents: it counts newlines (two lines per event) with
bytes.count over large reads, one thread per keep-alive connection, so it
costs far less than the shippers it measures. `GET /stats` returns
`events bytes`.

usage: log-tail-ship-receiver.py PORT_FILE
"""
import socket
import sys
import threading
from urllib.parse import parse_qs, urlsplit

lock = threading.Lock()
events = 0
body_bytes = 0

READ = 4 << 20
FULL_ITEM = (
    '{"_index":"bench","_id":"0123456789abcdefghij","_version":1,"result":"created",'
    '"_shards":{"total":1,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}'
)


def bulk_response(action, n, filter_path):
    """Elasticsearch's answer to n successful actions, filtered as asked."""
    if filter_path is None:
        item = f'{{"{action}":{FULL_ITEM}}}'.encode()
        head = b'{"took":1,"errors":false,"items":['
    else:
        keep = set(filter_path.split(","))
        item = f'{{"{action}":{{"status":201}}}}' if "items.*.status" in keep else "{}"
        item = item.encode()
        fields = []
        if "took" in keep:
            fields.append(b'"took":1')
        if "errors" in keep:
            fields.append(b'"errors":false')
        head = b"{" + b",".join(fields) + (b',"items":[' if fields else b'"items":[')
    return head + b",".join([item] * n) + b"]}"


def serve(conn):
    global events, body_bytes
    buf = bytearray(READ)
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
            method, target = lines[0].split(" ")[:2]
            headers = {}
            for l in lines[1:]:
                k, _, v = l.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0"))
            if headers.get("expect", "").lower() == "100-continue":
                # libcurl (rsyslog's omelasticsearch) waits a second for this otherwise.
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            got = min(len(pending), length)
            first = bytes(pending[:got])
            newlines = first.count(b"\n")
            pending = pending[got:]
            while got < length:
                n = conn.recv_into(view, min(READ, length - got))
                if n == 0:
                    return
                if len(first) < 16:
                    first += bytes(view[: 16 - len(first)])
                newlines += buf.count(b"\n", 0, n)
                got += n
            url = urlsplit(target)
            if method == "GET" and url.path == "/stats":
                with lock:
                    body = f"{events} {body_bytes}\n".encode()
            elif method == "GET":
                body = b'{"version":{"number":"8.11.0"},"tagline":"You Know, for Search"}'
            else:
                with lock:
                    events += newlines // 2
                    body_bytes += length
                action = "index" if first.startswith(b'{"index"') else "create"
                filter_path = parse_qs(url.query).get("filter_path", [None])[0]
                body = bulk_response(action, newlines // 2, filter_path)
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
