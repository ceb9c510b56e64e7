"""The gRPC test server on grpcio (gRPC's C core): service redprobe.test.Echo with raw-bytes
methods (generic handlers, no protobuf, no generated code), insecure h2c on 127.0.0.1:$PORT.

Usage: PORT=N python3 grpc_server.py; prints "LISTENING" once it serves.
Methods (the request payload is ASCII):
  Unary         "ok" -> b"ok", status OK; "code:N" -> fails with grpc status code N
                (5 NOT_FOUND, 13 INTERNAL, ...)
  ServerStream  "n:K" -> K messages, then OK; "n:K,code:N" -> K messages, then status code N
Anything else fails with INVALID_ARGUMENT (3). grpc_server.js behaves the same.
"""
import os
import signal
import sys
from concurrent import futures

import grpc

SERVICE = "redprobe.test.Echo"
CODES = {code.value[0]: code for code in grpc.StatusCode}


def parse(payload):
    """The request's fields: "n:3,code:13" -> {"n": 3, "code": 13}; "ok" -> {}."""
    text = payload.decode("ascii", "replace")
    if text == "ok":
        return {}
    fields = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        if not sep or not value.isdigit() or key not in ("n", "code"):
            return None
        fields[key] = int(value)
    return fields


def fail(context, code, details):
    context.abort(CODES.get(code, grpc.StatusCode.UNKNOWN), details)


def unary(request, context):
    fields = parse(request)
    if fields is None or "n" in fields:
        fail(context, 3, f"bad request {request!r}")
    if fields.get("code", 0) != 0:
        fail(context, fields["code"], f"failing with code {fields['code']} as asked")
    return b"ok"


def server_stream(request, context):
    fields = parse(request)
    if fields is None or "n" not in fields:
        fail(context, 3, f"bad request {request!r}")
    for i in range(fields["n"]):
        yield b"message %d" % i
    if fields.get("code", 0) != 0:
        fail(context, fields["code"], f"failing with code {fields['code']} after {fields['n']} messages")


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
    if port == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{os.environ['PORT']}")
    server.start()
    print("LISTENING", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
