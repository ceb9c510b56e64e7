"""An upstream that fails the requests it reads, for the client-side tests.

Usage: python3 bad_upstream.py --mode reset|hang|close
Prints "LISTENING <port>" once it accepts connections. It reads each connection's request
head, then: reset closes it with a reset (SO_LINGER 0); close closes it with a FIN, no
answer; hang never answers (the connection stays open until the client closes it).
"""
import argparse
import socket
import struct
import threading


def serve(conn, mode):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            conn.close()
            return
        data += chunk
    if mode == "reset":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    elif mode == "close":
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the client's close
        conn.close()
    else:
        while conn.recv(4096):
            pass
        conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["reset", "hang", "close"], required=True)
    args = parser.parse_args()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    print("LISTENING %d" % s.getsockname()[1], flush=True)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, args.mode), daemon=True).start()


if __name__ == "__main__":
    main()
