#!/usr/bin/env python3
"""A scriptable OTLP/gRPC metrics receiver for tests: the official `grpcio` server with the
`MetricsService/Export` method, decoding requests with the official opentelemetry-proto package
(google.protobuf, a stack independent of prost and tonic).

Usage: otlp_grpc_sink.py GRPC_PORT CONTROL_PORT [--tls CERT KEY [--client-ca CA]]

  gRPC  /opentelemetry.proto.collector.metrics.v1.MetricsService/Export on GRPC_PORT; with --tls
        over TLS (grpcio's own, BoringSSL: a stack independent of rustls) with the PEM certificate
        and key, and with --client-ca requiring a client certificate issued by that CA (mutual TLS)
  HTTP  GET /            200 (readiness) on CONTROL_PORT
        GET /received    JSON array of the decoded requests (same shape as otlp_sink.py), each with
                         "answer" (the script entry used or "unauthenticated"), "metadata" (the
                         call's metadata) and "peer_cert" (whether a client certificate was
                         verified); grpcio decompresses gzip messages itself
        POST /control    {"script": [entry, ...], "require": {key: regex, ...}}: each later Export
                         consumes one entry, then OK.
                         entry: {"code": "UNAVAILABLE", "message": "x", "retry_delay": 2.5}
                                | {"partial_rejected": 3, "message": "x"}
                         "require" enforces metadata: a call whose value of `key` does not fully
                         match `regex` is refused with UNAUTHENTICATED (before any script entry).
  A failing entry answers that gRPC status; "retry_delay" (seconds) adds a google.rpc.RetryInfo in
  the status details (grpc-status-details-bin), encoded by hand: no googleapis package needed.
"""
import json
import re
import sys
import threading
from concurrent import futures
from http.server import ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import otlp_sink  # noqa: E402  (the decoder and the HTTP control handler)

LOCK = threading.Lock()
SCRIPT = []
REQUIRE = {}
RECEIVED = []


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(tag, payload):
    """A length-delimited protobuf field."""
    return varint(tag << 3 | 2) + varint(len(payload)) + payload


def status_details(code, message, retry_delay):
    """google.rpc.Status{code, message, details: [Any(RetryInfo{retry_delay: Duration})]}."""
    seconds = int(retry_delay)
    nanos = int(round((retry_delay - seconds) * 1e9))
    duration = varint(1 << 3) + varint(seconds) + (varint(2 << 3) + varint(nanos) if nanos else b"")
    retry_info = field(1, duration)
    any_ = field(1, b"type.googleapis.com/google.rpc.RetryInfo") + field(2, retry_info)
    return varint(1 << 3) + varint(code.value[0]) + field(2, message.encode()) + field(3, any_)


def export(raw, context):
    metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
    with LOCK:
        require = dict(REQUIRE)
    allowed = all(re.fullmatch(rx, metadata.get(k, "")) for k, rx in require.items())
    with LOCK:
        entry = (SCRIPT.pop(0) if SCRIPT else {}) if allowed else "unauthenticated"
    record = {"answer": entry, "metadata": metadata, "peer_cert": bool(context.auth_context().get("x509_pem_cert"))}
    record.update(otlp_sink.decode_metrics(raw))
    with LOCK:
        RECEIVED.append(record)
    if not allowed:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "credentials not accepted")
    if "code" in entry:
        code = getattr(grpc.StatusCode, entry["code"])
        message = entry.get("message", "")
        if "retry_delay" in entry:
            details = status_details(code, message, entry["retry_delay"])
            context.set_trailing_metadata((("grpc-status-details-bin", details),))
        context.abort(code, message)
    resp = metrics_service_pb2.ExportMetricsServiceResponse()
    if "partial_rejected" in entry:
        resp.partial_success.rejected_data_points = entry["partial_rejected"]
        resp.partial_success.error_message = entry.get("message", "")
    return resp.SerializeToString()


class Control(otlp_sink.Handler):
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self.reply(200, b"otlp_grpc_sink ready")
        elif path == "/received":
            with LOCK:
                body = json.dumps(RECEIVED).encode()
            self.reply(200, body, "application/json")
        else:
            self.reply(404, b"not found")

    def do_POST(self):
        body = self.read_body()
        if self.path != "/control":
            self.reply(404, b"not found")
            return
        control = json.loads(body)
        with LOCK:
            SCRIPT[:] = control.get("script", [])
            if "require" in control:
                REQUIRE.clear()
                REQUIRE.update(control["require"])
        self.reply(200, b"ok")


def main():
    grpc_port, control_port = int(sys.argv[1]), int(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        # Raw bytes in and out: the request is decoded by hand so a decode error is recorded, not hidden.
        {"Export": grpc.unary_unary_rpc_method_handler(export)},
    )
    server.add_generic_rpc_handlers((handler,))
    args = sys.argv[3:]
    if args[:1] == ["--tls"]:
        cert, key = (open(p, "rb").read() for p in args[1:3])
        client_ca = open(args[4], "rb").read() if args[3:4] == ["--client-ca"] else None
        credentials = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )
        server.add_secure_port(f"127.0.0.1:{grpc_port}", credentials)
    else:
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()
    control = ThreadingHTTPServer(("127.0.0.1", control_port), Control)
    control.daemon_threads = True
    control.serve_forever()


if __name__ == "__main__":
    main()
