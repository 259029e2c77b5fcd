#!/usr/bin/env python3
"""A scriptable OTLP/HTTP metrics receiver for tests, decoding with the official opentelemetry-proto
package (google.protobuf: a protobuf stack independent of prost).

Usage: otlp_sink.py PORT [LOG.jsonl]

  GET  /           200 (readiness)
  GET  /received   JSON array, one object per export request seen (also appended to LOG.jsonl)
  POST /control    {"script": [entry, ...]}: each later export request consumes one entry, then 200.
                   entry: {"status": 429, "retry_after": "2", "body": "text"} | {"drop": true}
                          | {"status": 200, "partial_rejected": 3, "message": "x"}
  POST <any path>  an export request: gzip/deflate per Content-Encoding; /api/v1/write (snappy, remote
                   write) is answered by the same script and recorded by size only.
  Every record has raw_bytes, the decompressed body size.

Each record: path, status answered, headers, and for OTLP the decoded resource attributes, scopes and
metrics with points {attrs, time_unix_nano, value}; values are strings: repr() of the double, or "NaN", "+Inf", "-Inf".
"""
import gzip
import json
import math
import socket
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

LOCK = threading.Lock()
SCRIPT = []
RECEIVED = []
LOG_PATH = None


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def number(x):
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)  # shortest round-trip text: exact, unlike JSON number parsing in some decoders


def decode_metrics(raw):
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    req.ParseFromString(raw)
    out = {"resources": []}
    for rm in req.resource_metrics:
        res = {"attrs": {kv.key: any_value(kv.value) for kv in rm.resource.attributes}, "scopes": []}
        for sm in rm.scope_metrics:
            scope = {"name": sm.scope.name, "version": sm.scope.version, "metrics": []}
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                points = []
                if kind in ("gauge", "sum"):
                    for p in getattr(m, kind).data_points:
                        value_kind = p.WhichOneof("value")
                        points.append({
                            "attrs": [[kv.key, any_value(kv.value)] for kv in p.attributes],
                            "time_unix_nano": p.time_unix_nano,
                            "value": number(p.as_double) if value_kind == "as_double" else p.as_int,
                            "value_kind": value_kind,
                        })
                scope["metrics"].append({"name": m.name, "kind": kind, "points": points})
            res["scopes"].append(scope)
        out["resources"].append(res)
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("otlp_sink: " + (fmt % args) + "\n")

    def reply(self, status, body=b"", content_type="text/plain", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self.reply(200, b"otlp_sink ready")
        elif path == "/received":
            with LOCK:
                body = json.dumps(RECEIVED).encode()
            self.reply(200, body, "application/json")
        else:
            self.reply(404, b"not found")

    def do_POST(self):
        body = self.read_body()
        if self.path == "/control":
            with LOCK:
                SCRIPT[:] = json.loads(body).get("script", [])
            self.reply(200, b"ok")
            return
        with LOCK:
            entry = SCRIPT.pop(0) if SCRIPT else {"status": 200}
        record = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "answer": entry,
        }
        if entry.get("drop"):
            self.save(record)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            raw = self.decompress(body)
            record["raw_bytes"] = len(raw)
            if not self.path.endswith("/api/v1/write"):
                record.update(decode_metrics(raw))
        except Exception as e:  # a decode failure is what the test needs to see
            record["decode_error"] = repr(e)
            self.save(record)
            self.reply(400, ("cannot decode: %r" % e).encode())
            return
        self.save(record)
        status = entry.get("status", 200)
        headers = []
        if "retry_after" in entry:
            headers.append(("Retry-After", entry["retry_after"]))
        if 200 <= status < 300 and not self.path.endswith("/api/v1/write"):
            resp = metrics_service_pb2.ExportMetricsServiceResponse()
            if "partial_rejected" in entry:
                resp.partial_success.rejected_data_points = entry["partial_rejected"]
                resp.partial_success.error_message = entry.get("message", "")
            self.reply(status, resp.SerializeToString(), "application/x-protobuf", headers)
        else:
            self.reply(status, entry.get("body", "").encode(), "text/plain", headers)

    def decompress(self, body):
        enc = (self.headers.get("Content-Encoding") or "").lower()
        if enc == "gzip":
            return gzip.decompress(body)
        if enc == "deflate":
            return zlib.decompress(body)
        if enc == "snappy":
            import cramjam
            return bytes(cramjam.snappy.decompress_raw(body))
        return body

    def save(self, record):
        with LOCK:
            RECEIVED.append(record)
            if LOG_PATH:
                with open(LOG_PATH, "a") as f:
                    f.write(json.dumps(record) + "\n")


def main():
    global LOG_PATH
    port = int(sys.argv[1])
    LOG_PATH = sys.argv[2] if len(sys.argv) > 2 else None
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
