"""Test server for the golden captures: each path answers with one framing."""
import gzip
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import socket


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path.startswith("/chunked-gzip"):
            data = gzip.compress(b'{"invoices":[' + b",".join(b'{"id":%d}' % i for i in range(200)) + b"]}")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 100):
                part = data[i:i + 100]
                self.wfile.write(b"%x;ext=1\r\n" % len(part) + part + b"\r\n")
            self.wfile.write(b"0\r\nX-Trailer: done\r\n\r\n")
        elif self.path.startswith("/not-modified"):
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        elif self.path.startswith("/close"):
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"read until close\n" * 50)
            self.close_connection = True
        else:
            payload = b'{"customer":"cus_8a7F3k","path":"%s"}' % self.path.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

    do_HEAD = do_GET

    def do_POST(self):
        data = self.body()
        payload = b'{"received":%d}' % len(data)
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    cls = V6Server if ":" in host else ThreadingHTTPServer
    cls((host, port), Handler).serve_forever()
