"""A test server that reads and writes its sockets through every syscall redprobe hooks.

Usage: python3 syscalls.py; prints "LISTENING <port>" once it accepts connections.
Connection i reads with READERS[i % 4] and writes with WRITERS[i % 6]; each connection
answers keep-alive GETs with 200 "ok <path>" until the client closes.
"""
import os
import socket
import sys
import tempfile
import threading


def read_recv(s):
    return s.recv(65536)


def read_recvmsg(s):
    return s.recvmsg(65536)[0]


def read_readv(s):
    # A first buffer of 2 bytes: the request line starts across two iovecs.
    a, b = bytearray(2), bytearray(65536)
    n = os.readv(s.fileno(), [a, b])
    return (bytes(a) + bytes(b))[:n]


def read_read(s):
    return os.read(s.fileno(), 65536)


READERS = [read_recv, read_recvmsg, read_readv, read_read]


def write_send(s, head, body):
    s.sendall(head + body)


def write_sendmsg(s, head, body):
    s.sendmsg([head, body])


def write_writev(s, head, body):
    os.writev(s.fileno(), [head[:5], head[5:], body])


def write_write(s, head, body):
    os.write(s.fileno(), head)
    os.write(s.fileno(), body)


def write_sendfile(s, head, body):
    s.sendall(head)
    with tempfile.TemporaryFile() as f:
        f.write(body)
        f.flush()
        os.sendfile(s.fileno(), f.fileno(), 0, len(body))


def write_splice(s, head, body):
    s.sendall(head)
    r, w = os.pipe()
    try:
        os.write(w, body)
        os.splice(r, s.fileno(), len(body))
    finally:
        os.close(r)
        os.close(w)


WRITERS = [write_send, write_sendmsg, write_writev, write_write, write_sendfile, write_splice]


def serve(conn, i):
    reader, writer = READERS[i % len(READERS)], WRITERS[i % len(WRITERS)]
    pending = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in pending:
                data = reader(conn)
                if not data:
                    return
                pending += data
            head, pending = pending.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1]
            body = b"ok " + path + b"\n"
            writer(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body)


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print("LISTENING %d" % listener.getsockname()[1], flush=True)
    i = 0
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn, i), daemon=True).start()
        i += 1


if __name__ == "__main__":
    sys.exit(main())
