"""Servers whose processes come and go: the process models the target registry must follow.

Usage: python3 process_models.py MODE [--port N]
  forking   one child process per connection (socketserver.ForkingMixIn); the child serves
            the connection's requests and exits
  daemon    a classic double-forking daemon: fork, setsid, fork, both parents exit; the
            grandchild serves (threaded)
forking prints "LISTENING <port>" on stdout once it accepts connections; daemon first waits
for a line on stdin (so that the agent can attach to the original process), then the
grandchild prints "DAEMON <its pid> <port>". Routes: GET /hello (200), anything else 500.
"""
import argparse
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        status, body = (200, b"hello world\n") if self.path == "/hello" else (500, b"boom\n")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ForkingServer(socketserver.ForkingMixIn, HTTPServer):
    # Reap exited children at once rather than every 40 connections.
    block_on_close = False
    max_children = 64




def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["forking", "daemon"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "forking":
        server = ForkingServer(("127.0.0.1", args.port), Handler)
        print(f"LISTENING {server.server_address[1]}", flush=True)
        server.serve_forever(poll_interval=0.05)
        return
    # daemon: the original process and the first child exit; the grandchild serves.
    sys.stdin.readline()
    if os.fork() > 0:
        os.wait()
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"DAEMON {os.getpid()} {server.server_address[1]}", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
