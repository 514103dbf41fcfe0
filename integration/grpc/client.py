"""A gRPC client for the reverse-tunnel tests (grpcio, raw bytes messages, see server.py).

Usage: client.py --port P --node NODE --mode MODE [options]

Connects to 127.0.0.1:P with --channels channels, each its own HTTP/2 connection (cleartext,
prior knowledge), spreads the calls over them round-robin, sends every call with metadata
x-remote-node-id: NODE and checks every answer byte by byte. Modes:

  unary          --count calls of Unary, payload sizes from 0 to --max-size (seeded), --concurrency
                 calls at a time; each answer must equal its request and carry the
                 trailing metadata x-served-by: --expect-served-by (default NODE)
  bidi           --streams concurrent Bidi streams of --messages messages of --size bytes; at most
                 --window messages of a stream are unanswered at any time (1: strict ping-pong, so
                 every echo must come back before the next message is sent); echoes must arrive in
                 order
  server-stream  --streams concurrent ServerStream calls of --messages messages of --size bytes each
  client-stream  --streams concurrent ClientStream calls of --messages messages of --size bytes each

--expect-code CODE (e.g. UNAVAILABLE): every call must FAIL with that status instead (unary mode).

Prints one JSON line (mode, ok, failed, errors, codes, checksums, messages_per_s, ...) on stdout and
exits 0 only if every call did what was expected.
"""

import argparse
import hashlib
import json
import queue
import random
import struct
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "/rt.test.Echo/"
MAX_MESSAGE = 8 * 1024 * 1024


def fill(i, size):
    """Must equal server.py's fill()."""
    pattern = struct.pack(">I", i) + bytes([(i * 7 + 1) & 0xFF]) * 4
    return (pattern * (size // len(pattern) + 1))[:size]


def stream_message(stream, seq, size):
    head = struct.pack(">II", stream, seq)
    body = bytes([(stream * 31 + seq) & 0xFF]) * max(0, size - len(head))
    return (head + body)[: max(size, len(head))]


class Outcome:
    """Counts and errors shared by the worker threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.errors = []
        self.codes = {}
        self.served_by = set()
        self.seen_node = set()
        self.latencies_ms = []

    def code(self, code):
        name = code.name if code is not None else "NONE"
        with self.lock:
            self.codes[name] = self.codes.get(name, 0) + 1

    def good(self):
        with self.lock:
            self.ok += 1

    def bad(self, what):
        with self.lock:
            self.failed += 1
            if len(self.errors) < 8:
                self.errors.append(what)

    def metadata(self, call):
        served = dict(call.trailing_metadata() or ()).get("x-served-by")
        seen = dict(call.initial_metadata() or ()).get("x-seen-node")
        with self.lock:
            self.served_by.add(served)
            self.seen_node.add(seen)
        return served

    def finish(self, what, call, problem, expect_served_by):
        """One call's or stream's end: its metadata is recorded; it counts as failed with
        `problem` (a description, or None) or a trailing x-served-by other than expected, else
        as good."""
        served = self.metadata(call)
        if problem:
            self.bad(f"{what}: {problem}")
        elif served != expect_served_by:
            self.bad(f"{what}: trailing x-served-by {served!r}, expected {expect_served_by!r}")
        else:
            self.good()


def run_each(n, workers, one):
    """Runs one(0) .. one(n - 1) on `workers` threads and waits for all."""
    with futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(n)))


def rpc_error(e):
    details = e.details() if hasattr(e, "details") else str(e)
    return f"{e.code().name}: {details}" if hasattr(e, "code") else repr(e)


def run_unary(args, channels, md, out, digests):
    calls = [c.unary_unary(SERVICE + "Unary") for c in channels]
    rng = random.Random(args.seed)
    sizes = []
    for i in range(args.count):
        if i % 50 == 49:
            sizes.append(args.max_size)
        elif i % 50 == 0:
            sizes.append(0)
        else:
            sizes.append(min(args.max_size, int(2 ** rng.uniform(0, 16))))
    payloads = [rng.randbytes(n) for n in sizes]
    sent = hashlib.sha256()
    for p in payloads:
        sent.update(hashlib.sha256(p).digest())
    digests["sent_sha256"] = sent.hexdigest()
    got = [None] * args.count

    def one(i):
        t0 = time.monotonic()
        try:
            call = calls[i % len(calls)]
            resp, c = call.with_call(payloads[i], metadata=md, timeout=args.deadline)
        except grpc.RpcError as e:
            out.code(e.code())
            if args.expect_code and e.code().name == args.expect_code:
                with out.lock:
                    out.latencies_ms.append((time.monotonic() - t0) * 1000)
                    digests.setdefault("details", e.details())
                out.good()
            else:
                out.bad(f"call {i} ({sizes[i]} bytes): {rpc_error(e)}")
            return
        out.code(c.code())
        with out.lock:
            out.latencies_ms.append((time.monotonic() - t0) * 1000)
        if args.expect_code:
            out.bad(f"call {i}: status OK ({c.details()!r}), expected {args.expect_code}")
            return
        if resp is None:
            # Status OK without a message: a trailers-only answer with grpc-status 0.
            out.bad(f"call {i}: status OK but no response message (grpc-message {c.details()!r})")
            return
        got[i] = hashlib.sha256(resp).digest()
        problem = None
        if resp != payloads[i]:
            problem = f"answer of {len(resp)} bytes differs from the {sizes[i]} bytes sent"
        out.finish(f"call {i}", c, problem, args.expect_served_by)

    run_each(args.count, args.concurrency, one)
    received = hashlib.sha256()
    for d in got:
        received.update(d or b"")
    digests["received_sha256"] = received.hexdigest()
    digests["bytes_sent"] = sum(sizes)
    digests["max_payload"] = max(sizes) if sizes else 0
    return args.count


def run_bidi(args, channels, md, out, digests):
    calls = [c.stream_stream(SERVICE + "Bidi") for c in channels]

    def one(s):
        msgs = [stream_message(s, j, args.size) for j in range(args.messages)]
        q = queue.Queue()
        sent_at = [0.0] * args.messages

        def requests():
            while True:
                m = q.get()
                if m is None:
                    return
                yield m

        sent = 0

        def send_next():
            nonlocal sent
            sent_at[sent] = time.monotonic()
            q.put(msgs[sent])
            sent += 1
            if sent == args.messages:
                q.put(None)

        for _ in range(min(args.window, args.messages)):
            send_next()
        if args.messages == 0:
            q.put(None)
        lat = []
        got = 0
        responses = calls[s % len(calls)](requests(), metadata=md, timeout=args.deadline)
        try:
            for resp in responses:
                if got >= args.messages:
                    out.bad(f"stream {s}: more echoes than messages sent")
                    responses.cancel()
                    return
                if resp != msgs[got]:
                    out.bad(f"stream {s}: echo {got} differs (out of order or corrupted)")
                    responses.cancel()
                    return
                lat.append((time.monotonic() - sent_at[got]) * 1000)
                got += 1
                if sent < args.messages:
                    # Window: the next message goes out only now, after this echo arrived.
                    send_next()
        except grpc.RpcError as e:
            out.code(e.code())
            out.bad(f"stream {s} after {got} echoes: {rpc_error(e)}")
            q.put(None)
            return
        out.code(responses.code())
        with out.lock:
            out.latencies_ms.extend(lat)
        problem = f"{got} echoes for {args.messages} messages" if got != args.messages else None
        out.finish(f"stream {s}", responses, problem, args.expect_served_by)

    run_each(args.streams, args.streams, one)
    digests["bytes_sent"] = args.streams * args.messages * args.size
    return args.streams * args.messages


def run_server_stream(args, channels, md, out, digests):
    calls = [c.unary_stream(SERVICE + "ServerStream") for c in channels]
    expected = [fill(i, args.size) for i in range(args.messages)]
    want = hashlib.sha256(b"".join(expected)).hexdigest()
    digests["expected_sha256_per_stream"] = want

    def one(s):
        h = hashlib.sha256()
        n = 0
        call = calls[s % len(calls)]
        responses = call(struct.pack(">II", args.messages, args.size), metadata=md, timeout=args.deadline)
        try:
            for resp in responses:
                if n >= args.messages or resp != expected[n]:
                    out.bad(f"stream {s}: message {n} unexpected ({len(resp)} bytes)")
                    responses.cancel()
                    return
                h.update(resp)
                n += 1
        except grpc.RpcError as e:
            out.code(e.code())
            out.bad(f"stream {s} after {n} messages: {rpc_error(e)}")
            return
        out.code(responses.code())
        problem = None
        if n != args.messages or h.hexdigest() != want:
            problem = f"{n} messages, checksum {h.hexdigest()}"
        out.finish(f"stream {s}", responses, problem, args.expect_served_by)

    run_each(args.streams, args.streams, one)
    digests["bytes_received"] = args.streams * args.messages * args.size
    return args.streams * args.messages


def run_client_stream(args, channels, md, out, digests):
    calls = [c.stream_unary(SERVICE + "ClientStream") for c in channels]

    def one(s):
        msgs = [stream_message(s, j, args.size) for j in range(args.messages)]
        want = hashlib.sha256(b"".join(msgs)).digest() + struct.pack(">I", args.messages)
        try:
            resp, c = calls[s % len(calls)].with_call(iter(msgs), metadata=md, timeout=args.deadline)
        except grpc.RpcError as e:
            out.code(e.code())
            out.bad(f"stream {s}: {rpc_error(e)}")
            return
        out.code(c.code())
        problem = None
        if resp is None:
            problem = f"status OK but no response message (grpc-message {c.details()!r})"
        elif resp != want:
            problem = f"server saw other bytes ({resp.hex()})"
        out.finish(f"stream {s}", c, problem, args.expect_served_by)

    run_each(args.streams, args.streams, one)
    digests["bytes_sent"] = args.streams * args.messages * args.size
    return args.streams * args.messages


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(len(v) * p))], 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--mode", required=True, choices=["unary", "bidi", "server-stream", "client-stream"])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--max-size", type=int, default=1024 * 1024)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--deadline", type=float, default=30.0, help="per call, seconds")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--expect-code", default=None)
    ap.add_argument("--expect-served-by", default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.expect_served_by is None:
        args.expect_served_by = args.node
    if args.expect_code and args.mode != "unary":
        ap.error("--expect-code is for --mode unary")
    if args.window < 1 or args.channels < 1:
        ap.error("--window and --channels must be >= 1")

    out = Outcome()
    digests = {}
    md = (("x-remote-node-id", args.node),)
    # A local subchannel pool per channel: each channel opens its own connection (by default
    # channels to one target share one).
    channels = [
        grpc.insecure_channel(
            f"127.0.0.1:{args.port}",
            options=(
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.enable_retries", 0),
                ("grpc.use_local_subchannel_pool", 1),
            ),
        )
        for _ in range(args.channels)
    ]
    result = {"mode": args.mode, "node": args.node}
    calls = 0
    messages = 0
    start = time.monotonic()
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
        start = time.monotonic()
        if args.mode == "unary":
            messages = run_unary(args, channels, md, out, digests)
            calls = args.count
        elif args.mode == "bidi":
            messages = run_bidi(args, channels, md, out, digests)
            calls = args.streams
        elif args.mode == "server-stream":
            messages = run_server_stream(args, channels, md, out, digests)
            calls = args.streams
        else:
            messages = run_client_stream(args, channels, md, out, digests)
            calls = args.streams
    except grpc.FutureTimeoutError:
        out.bad(f"no HTTP/2 connection to 127.0.0.1:{args.port} within {args.connect_timeout}s")
    except Exception as e:  # a bug in the client itself still gives a JSON line and exit 1
        out.bad(f"client error: {e!r}")
    finally:
        for channel in channels:
            channel.close()
    seconds = time.monotonic() - start
    result.update(
        {
            "calls": calls,
            "ok": out.ok,
            "failed": out.failed,
            "errors": out.errors,
            "codes": out.codes,
            "served_by": sorted(x for x in out.served_by if x is not None),
            "seen_node": sorted(x for x in out.seen_node if x is not None),
            "messages": messages,
            "seconds": round(seconds, 3),
            "messages_per_s": round(messages / seconds, 1) if seconds > 0 else None,
            "latency_ms_p50": percentile(out.latencies_ms, 0.5),
            "latency_ms_p99": percentile(out.latencies_ms, 0.99),
            "latency_ms_max": percentile(out.latencies_ms, 1.0),
        }
    )
    result.update(digests)
    print(json.dumps(result, sort_keys=True), flush=True)
    success = out.failed == 0 and out.ok == calls and calls > 0
    if args.mode == "unary" and not args.expect_code:
        success = success and digests.get("sent_sha256") == digests.get("received_sha256")
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
