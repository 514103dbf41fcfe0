"""A gRPC server for the reverse-tunnel tests (grpcio, no generated code: raw bytes messages).

Usage: server.py PORT NODE_ID

Listens on 127.0.0.1:PORT (cleartext HTTP/2), prints "READY <port>" once serving and stops on
SIGTERM or SIGINT. Service rt.test.Echo:

  Unary         returns the request bytes; trailing metadata x-served-by: NODE_ID
  Bidi          echoes every request message as soon as it arrives, in order
  ServerStream  request = 8 bytes (count, size as big-endian u32): answers `count` messages of
                `size` bytes, message i filled by fill(i, size)
  ClientStream  answers sha256(concatenation of the request messages) + message count (u32 BE)

Every call also gets the trailing metadata x-served-by: NODE_ID, and the initial metadata
x-seen-node: the x-remote-node-id the call arrived with (empty if none).
"""

import hashlib
import signal
import struct
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "rt.test.Echo"
MAX_MESSAGE = 8 * 1024 * 1024


def fill(i, size):
    """Deterministic content of server-stream message i (the client checks it)."""
    pattern = struct.pack(">I", i) + bytes([(i * 7 + 1) & 0xFF]) * 4
    return (pattern * (size // len(pattern) + 1))[:size]


def main():
    if len(sys.argv) != 3:
        print("usage: server.py PORT NODE_ID", file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    node = sys.argv[2]

    def metadata(context):
        seen = dict(context.invocation_metadata()).get("x-remote-node-id", "")
        context.send_initial_metadata((("x-seen-node", seen),))
        context.set_trailing_metadata((("x-served-by", node),))

    def unary(request, context):
        metadata(context)
        return request

    def bidi(requests, context):
        metadata(context)
        for message in requests:
            yield message

    def server_stream(request, context):
        metadata(context)
        if len(request) != 8:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request must be 8 bytes: count, size")
        count, size = struct.unpack(">II", request)
        for i in range(count):
            yield fill(i, size)

    def client_stream(requests, context):
        metadata(context)
        digest = hashlib.sha256()
        n = 0
        for message in requests:
            digest.update(message)
            n += 1
        return digest.digest() + struct.pack(">I", n)

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        handlers=(grpc.method_handlers_generic_handler(SERVICE, handlers),),
        options=(
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ),
        maximum_concurrent_rpcs=60,
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound != port:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        return 1
    server.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY {port}", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop(grace=0.5).wait(2)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
