"""The demo and test HTTP server: a threaded http.server with known routes.

Usage: python3 app.py [--port N] [--bind ADDR] [--peek] [--one-at-a-time]
Prints "LISTENING <port>" on stdout once it accepts connections (port 0 picks a free one).

Routes (GET unless noted):
  /hello              200, small body
  /users/<id>[?ms=N]  200 (the route folds to /users/{id}), after N ms
  /missing            404
  /error              500
  /sleep?ms=N         sleeps N ms, then 200
  /chunked            200, chunked body in several writes
  /big?kb=N           200, N KiB body written in 16 KiB writes
  /http10             200 without Content-Length, then the connection closes
  /partial?ms=N       announces a 1000-byte body, sends 10 bytes, waits N ms, closes
  /cl-list            200 with "Content-Length: 5, 5" (a valid list of one length)
  /folded             200 with a folded (obsolete line folding) header
  POST /echo          reads the Content-Length body, answers 201 with its size
  POST /early         answers 413 before it reads the body, then reads it
  /call?port=P&paths=/a,POST:/b[&timeout_ms=N]
                      an outgoing call to http://127.0.0.1:P<path> for each path, in order,
                      with http.client on one keep-alive connection (a new one after a
                      call that failed; POST sends a 1000-byte body; a path's own & is %26);
                      answers 200 with one line per call: its status, or the name of the
                      exception it raised
With --head-body, HEAD is answered like GET, body included (as `do_HEAD = do_GET` does).
With --one-at-a-time, one connection is served at a time (http.server's HTTPServer): the
others wait in the listener's accept queue, as on a saturated prefork server.
"""
import argparse
import http.client
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY the body waits for
    # the client's delayed ACK (~40 ms), which the client sees and the server does not.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        if self.server.peek:
            # Like servers that sniff for TLS: look at the first bytes before reading them.
            self.request.recv(16, socket.MSG_PEEK)

    def reply(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and (self.command != "HEAD" or self.server.head_body):
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path
        if path == "/hello":
            self.reply(200, b"hello world\n")
        elif path.startswith("/users/"):
            time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
            self.reply(200, b'{"user": "%s"}\n' % path[7:].encode())
        elif path == "/missing":
            self.reply(404, b"not found\n")
        elif path == "/error":
            self.reply(500, b"internal error\n")
        elif path == "/sleep":
            time.sleep(int(query.get("ms", ["50"])[0]) / 1000)
            self.reply(200, b"slept\n")
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first part\n", b"second part\n", b"third\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/big":
            kb = int(query.get("kb", ["256"])[0])
            self.send_response(200)
            self.send_header("Content-Length", str(kb * 1024))
            self.end_headers()
            block = b"x" * 16384
            left = kb * 1024
            while left > 0:
                n = min(left, len(block))
                self.wfile.write(block[:n])
                left -= n
        elif path == "/cl-list":
            self.send_response(200)
            self.send_header("Content-Length", "5, 5")
            self.end_headers()
            self.wfile.write(b"hello")
        elif path == "/folded":
            self.send_response(200)
            self.send_header("X-Folded", "first line\r\n  continued")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")
        elif path == "/http10":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"delimited by close\n")
            self.close_connection = True
        elif path == "/call":
            self.reply(200, call(query).encode())
        elif path == "/partial":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only this\n")
            time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
            self.close_connection = True
        else:
            self.reply(404, b"no such route\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        if urlsplit(self.path).path == "/early":
            self.reply(413, b"too large\n")
            self.rfile.read(length)
            return
        body = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path == "/echo":
            self.reply(201, b"%d\n" % len(body))
        else:
            self.reply(404, b"no such route\n")


def call(query):
    """The /call route: outgoing requests, one line of outcome each."""
    port = int(query["port"][0])
    timeout = int(query.get("timeout_ms", ["5000"])[0]) / 1000
    conn, lines = None, []
    for spec in query["paths"][0].split(","):
        method, _, target = spec.rpartition(":")
        method = method or "GET"
        body = b"b" * 1000 if method == "POST" else None
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, target, body=body)
            r = conn.getresponse()
            r.read()
            lines.append(str(r.status))
        except Exception as e:  # the outcome is the answer
            lines.append(type(e).__name__)
            conn.close()
            conn = None
    if conn:
        conn.close()
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--peek", action="store_true", help="MSG_PEEK each connection's first bytes")
    parser.add_argument("--head-body", action="store_true", help="answer HEAD with the body too")
    parser.add_argument("--one-at-a-time", action="store_true", help="serve one connection at a time")
    args = parser.parse_args()
    ThreadingHTTPServer.daemon_threads = True
    kind = HTTPServer if args.one_at_a_time else ThreadingHTTPServer
    server = kind((args.bind, args.port), Handler)
    server.peek = args.peek
    server.head_body = args.head_body
    print("LISTENING %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
