#!/usr/bin/env python3
"""A local receiver speaking the Elasticsearch _bulk API, for examples/demo.sh logs.

It answers `GET /` with a version document, and every `POST /_bulk` (or
`/INDEX/_bulk`) with `{"errors":false}` and one 201 item per document, and
prints each document that arrived: `es-receiver: INDEX MESSAGE`.

usage: es-receiver.py PORT_FILE   (binds 127.0.0.1 on an ephemeral port and
writes the port into PORT_FILE once it accepts)
"""
import gzip
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200, {"version": {"number": "8.15.0"}, "tagline": "You Know, for Search"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        # Elasticsearch takes query parameters on _bulk (filter_path, refresh…).
        path = self.path.split("?", 1)[0]
        if not path.endswith("/_bulk"):
            self.reply(404, {"error": "only _bulk is served here"})
            return
        lines = [l for l in body.split(b"\n") if l.strip()]
        items = []
        for action, source in zip(lines[0::2], lines[1::2]):
            (op, meta), = json.loads(action).items()
            doc = json.loads(source)
            index = meta.get("_index", path.strip("/").split("/")[0] or "-")
            print(f"es-receiver: {index} {doc.get('message', doc)}", flush=True)
            items.append({op: {"_index": index, "status": 201, "result": "created"}})
        self.reply(200, {"took": 1, "errors": False, "items": items})

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
# Written after the bind and renamed into place: the file appearing means the
# receiver accepts.
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
