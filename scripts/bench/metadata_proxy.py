"""A counting reverse proxy for scripts/bench-metadata.sh (not a test of its own).

Forwards every request to UPSTREAM and appends one line per answer to LOG:
"METHOD PATH STATUS BODY_BYTES". The benchmark reads the lines between two marks to say how
many bytes a client downloaded in one step.

Usage: python3 metadata_proxy.py PORT UPSTREAM LOG   (e.g. 18080 http://127.0.0.1:8080 /tmp/log)
"""

import http.client
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, UPSTREAM, LOG = int(sys.argv[1]), urllib.parse.urlsplit(sys.argv[2]), sys.argv[3]
LOCK = threading.Lock()
# Hop-by-hop headers are not forwarded.
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and k.lower() != "host"}
        conn = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        conn.request(self.command, self.path, body=body, headers=headers)
        res = conn.getresponse()
        data = res.read()
        conn.close()
        self.send_response(res.status)
        for k, v in res.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with LOCK, open(LOG, "a") as f:
            f.write(f"{self.command} {self.path} {res.status} {len(data)}\n")

    do_GET = do_POST = do_PUT = do_HEAD = _forward

    def log_message(self, *args) -> None:  # quiet: the log file says what matters
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
