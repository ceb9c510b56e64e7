"""A gRPC client on grpcio for the test servers (grpc_server.py, grpc_server.js): raw-bytes calls
to redprobe.test.Echo (channel.unary_unary / unary_stream, no generated code), one after the
other on one insecure channel, counted by the status each call ended with (the client truth).

Usage: python3 grpc_client.py TARGET STEP...
  TARGET  host:port, e.g. 127.0.0.1:50051
  STEP    METHOD:PAYLOAD=COUNT: COUNT calls of METHOD (Unary or ServerStream) with PAYLOAD,
          e.g. Unary:ok=20 Unary:code:5=3 ServerStream:n:3=4 ServerStream:n:2,code:13=2
Prints one JSON line: the calls by method and status code number, e.g.
  {"Unary": {"0": 20, "5": 3}, "ServerStream": {"0": 4, "13": 2}}
and exits 0 whether the calls failed or not (failures are part of the plan); 2 on a bad STEP.
"""
import json
import sys

import grpc

SERVICE = "/redprobe.test.Echo/"


def parse_step(step):
    method_payload, sep, count = step.rpartition("=")
    method, sep2, payload = method_payload.partition(":")
    if not sep or not sep2 or not count.isdigit() or method not in ("Unary", "ServerStream"):
        sys.exit(f"bad step {step!r}: METHOD:PAYLOAD=COUNT, METHOD Unary or ServerStream")
    return method, payload.encode("ascii"), int(count)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    target, steps = sys.argv[1], [parse_step(s) for s in sys.argv[2:]]
    counts = {}
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        calls = {
            "Unary": channel.unary_unary(SERVICE + "Unary"),
            "ServerStream": channel.unary_stream(SERVICE + "ServerStream"),
        }
        for method, payload, count in steps:
            for _ in range(count):
                try:
                    if method == "Unary":
                        calls[method](payload, timeout=30)
                    else:
                        for _message in calls[method](payload, timeout=30):
                            pass
                    code = 0
                except grpc.RpcError as e:
                    code = e.code().value[0]
                by_code = counts.setdefault(method, {})
                by_code[str(code)] = by_code.get(str(code), 0) + 1
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
