#!/usr/bin/python3
"""Loopback HTTP(S) server for the storage tests: serves files under --root with
misbehaviours chosen by the path's first segment. Prints "PORT <n>" on stdout once it
listens on 127.0.0.1; exits when stdin closes (the test died) or after --lifetime s.

  /ok/<file>             the file, with Content-Length
  /redirect/<n>/<rest>   302 to /redirect/<n-1>/<rest>, and at n == 1 to /<rest>
  /relredirect/<rest>    302 with a relative Location "../../<rest>" resolving to /<rest>
  /absredirect/<rest>    301 with an absolute Location http(s)://127.0.0.1:<port>/<rest>
  /loop                  302 to /loop, forever
  /cut/<file>            full Content-Length, half the bytes, then the connection closes
  /wrong/<file>          right length, every byte inverted
  /corrupt/<name>/<file> the file, except that when its last path segment is <name>
                         the middle byte is inverted (a shard whose HDF5 structure is
                         intact but one piece's checksum fails)
  /slow/<file>           sleeps --slow s before answering
  /stall/<file>          header and half the body, then sleeps --slow s
  /chunked/<file>        the file in chunked transfer encoding (no Content-Length)
  /chunkcut/<file>       chunked, the connection closes after half the bytes
  /noclen/<file>         no Content-Length: the body ends when the connection closes
  /noclencut/<file>      no Content-Length, half the bytes, then the connection closes
  /long/<file>           Content-Length of half the file, then all of it (one write)
  /endless/<file>        no Content-Length, zeros for ever (until the client hangs up)
  /hugeclen/<file>       Content-Length 10**12, then zeros for ever
  /trickle/<ms>/<file>   the file with Content-Length, one byte every <ms> milliseconds
  /crosshost/<rest>      302 to the same server under another host name, localhost
  /downgrade/<rest>      302 to http://127.0.0.1:<port>/<rest> (from https: a downgrade)
  /status/<code>         that status, empty body
  /flaky/<k>/<file>      the first k requests of this path and query are cut, later ones
                         are /ok (vary the query to start over)
  /stats                 the number of requests served so far (not counting /stats)
  /stats/json            {"total": n, "<path?query>": n, ...}: the requests so far, per
                         path and query as the client sent them (not counting /stats)
"""
import argparse
import http.server
import json
import os
import socketserver
import ssl
import sys
import threading
import time

LOCK = threading.Lock()
COUNTS = {"total": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dtrain-test"

    def log_message(self, fmt, *args):  # quiet: the test prints what matters
        pass

    def _file(self, rel):
        path = os.path.realpath(os.path.join(self.server.root, rel))
        root = os.path.realpath(self.server.root)
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    def _send(self, code, body=b"", headers=()):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _redirect(self, code, location):
        self._send(code, b"", [("Location", location)])

    def _partial(self, data, stall):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if stall:
            time.sleep(self.server.slow)
        self.close_connection = True

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        parts = path.lstrip("/").split("/")
        mode, rest = parts[0], "/".join(parts[1:])
        if mode == "stats":
            with LOCK:
                if rest == "json":
                    return self._send(200, json.dumps(COUNTS).encode(),
                                      [("Content-Type", "application/json")])
                return self._send(200, str(COUNTS["total"]).encode())
        with LOCK:
            COUNTS["total"] += 1
            COUNTS[self.path] = COUNTS.get(self.path, 0) + 1  # per path and query
            seen = COUNTS[self.path]
        if mode == "ok":
            data = self._file(rest)
            return self._send(200, data) if data is not None else self._send(404)
        if mode == "redirect":
            n, tail = int(parts[1]), "/".join(parts[2:])
            return self._redirect(302, f"/redirect/{n - 1}/{tail}" if n > 1 else f"/{tail}")
        if mode == "relredirect":
            # e.g. /relredirect/ok/a -> "../../ok/a", which resolves to /ok/a
            return self._redirect(302, "../" * (rest.count("/") + 1) + rest)
        if mode == "absredirect":
            scheme = "https" if self.server.tls else "http"
            return self._redirect(301, f"{scheme}://127.0.0.1:{self.server.server_port}/{rest}")
        if mode == "loop":
            return self._redirect(302, "/loop")
        if mode == "crosshost":
            scheme = "https" if self.server.tls else "http"
            return self._redirect(302, f"{scheme}://localhost:{self.server.server_port}/{rest}")
        if mode == "downgrade":
            return self._redirect(302, f"http://127.0.0.1:{self.server.server_port}/{rest}")
        if mode in ("endless", "hugeclen"):
            self.send_response(200)
            if mode == "hugeclen":
                self.send_header("Content-Length", str(10**12))
            self.send_header("Connection", "close")
            self.end_headers()
            zeros = bytes(1 << 16)
            try:
                while True:
                    self.wfile.write(zeros)
            except OSError:
                pass  # the client gave up, as it should
            self.close_connection = True
            return None
        if mode == "trickle":
            ms, tail = int(parts[1]), "/".join(parts[2:])
            data = self._file(tail)
            if data is None:
                return self._send(404)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    time.sleep(ms / 1000.0)
            except OSError:
                pass
            self.close_connection = True
            return None
        if mode == "status":
            return self._send(int(rest))
        if mode == "flaky":
            k, tail = int(parts[1]), "/".join(parts[2:])
            data = self._file(tail)
            if data is None:
                return self._send(404)
            return self._partial(data, False) if seen <= k else self._send(200, data)
        if mode == "corrupt":
            name, tail = parts[1], "/".join(parts[2:])
            data = self._file(tail)
            if data is None:
                return self._send(404)
            if tail.rsplit("/", 1)[-1] == name and data:
                mid = len(data) // 2
                data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
            return self._send(200, data)
        data = self._file(rest)
        if data is None:
            return self._send(404)
        if mode == "cut":
            return self._partial(data, False)
        if mode == "stall":
            return self._partial(data, True)
        if mode in ("chunked", "chunkcut"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            end = len(data) if mode == "chunked" else len(data) // 2
            for i in range(0, end, 300):
                piece = data[i:min(i + 300, end)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if mode == "chunked":
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
            return None
        if mode in ("noclen", "noclencut"):
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data if mode == "noclen" else data[: len(data) // 2])
            self.close_connection = True
            return None
        if mode == "long":
            head = ("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                    % (len(data) // 2)).encode()
            self.wfile.write(head + data)  # one write: the extra bytes arrive with the body
            self.close_connection = True
            return None
        if mode == "wrong":
            return self._send(200, bytes(b ^ 0xFF for b in data))
        if mode == "slow":
            time.sleep(self.server.slow)
            return self._send(200, data)
        return self._send(404)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    tls = None

    def finish_request(self, request, client_address):
        if self.tls is not None:  # handshake in the handler thread, not in accept()
            request = self.tls.wrap_socket(request, server_side=True)
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request, client_address):
        pass  # clients that reject our certificate or hang up are expected


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--slow", type=float, default=5.0)
    ap.add_argument("--lifetime", type=float, default=300.0)
    args = ap.parse_args()
    server = Server(("127.0.0.1", 0), Handler)
    server.root, server.slow = args.root, args.slow
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.tls = ctx
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_port}", flush=True)

    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    time.sleep(args.lifetime)
    os._exit(0)


if __name__ == "__main__":
    main()
