"""The HTTP/2 test app for hypercorn: a bare ASGI app (no framework) with the routes of node_h2.js.

Run: hypercorn --workers 0 --bind 127.0.0.1:PORT h2_asgi:app (from this directory). On a plain
port hypercorn serves HTTP/1.1, h2c with prior knowledge and h2c by Upgrade; with --certfile and
--keyfile, TLS with ALPN h2 and http/1.1.

Routes (any method):
  /                 200, small body
  /items/<id>       200, small JSON body
  /status/<code>    that status (100-199 and unknown codes: 400), small body (none for 204, 304)
  /big?kb=N         200, N KiB body (default 200)
  /slow?ms=N        200 after N ms (default 100)
  anything else     404
No /reset: an ASGI app cannot reset its stream (hypercorn drops a stream whose app fails after the
response started, without RST_STREAM or END_STREAM).
"""
import asyncio
from urllib.parse import parse_qs


async def reply(send, status, body=b"", content_type=b"text/plain"):
    if status in (204, 304):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    # The request body, if any, is read and dropped.
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())

    def param(name, default):
        return int(query.get(name, [default])[0])

    if path == "/":
        await reply(send, 200, b"hello h2\n")
    elif path.startswith("/items/"):
        await reply(send, 200, b'{"item": "%s"}\n' % path[7:].encode(), b"application/json")
    elif path.startswith("/status/"):
        code = path[8:]
        status = int(code) if code.isdigit() and 200 <= int(code) <= 599 else 400
        await reply(send, status, b"status %d\n" % status)
    elif path == "/big":
        await reply(send, 200, b"x" * (param("kb", 200) * 1024), b"application/octet-stream")
    elif path == "/slow":
        await asyncio.sleep(param("ms", 100) / 1000)
        await reply(send, 200, b"slow\n")
    else:
        await reply(send, 404, b"not found\n")
