#!/usr/bin/env python3
"""A scriptable OTLP/HTTP metrics receiver for tests, decoding with the official opentelemetry-proto
package (google.protobuf: a protobuf stack independent of prost).

Usage: otlp_sink.py PORT [LOG.jsonl] [--decode-remote-write]

  GET  /           200 (readiness)
  GET  /received   JSON array, one object per export request seen (also appended to LOG.jsonl)
  POST /control    {"script": [entry, ...]}: each later export request consumes one entry, then 200.
                   entry: {"status": 429, "retry_after": "2", "body": "text"} | {"drop": true}
                          | {"status": 200, "partial_rejected": 3, "message": "x"}
  POST <any path>  an export request: gzip/deflate per Content-Encoding; /api/v1/write (snappy, remote
                   write) is answered by the same script and recorded by size only, unless
                   --decode-remote-write: then decoded too (see below).
  Every record has raw_bytes, the decompressed body size.

Each record: path, status answered, headers, and for OTLP the decoded resource attributes, scopes and
metrics {name, kind, description, unit, points}; values are strings: repr() of the double, or "NaN",
"+Inf", "-Inf". Gauge and sum points: {attrs, time_unix_nano, start_time_unix_nano, value, value_kind};
a sum also has temporality ("delta"/"cumulative"/"unspecified") and monotonic; a histogram has
temporality and points {attrs, time_unix_nano, start_time_unix_nano, count, sum (null when unset),
bucket_counts, explicit_bounds}.

With --decode-remote-write a remote-write record has "remote_write": {timeseries: [{labels: [[name,
value]], samples: [[timestamp_ms, value]]}], metadata: [{type, family, help, unit}], fields: the
top-level field numbers of the WriteRequest in order}, decoded with google.protobuf from message
types built here with the field numbers of prometheus/prompb/remote.proto and types.proto (no code
shared with the exporter's encoder).
"""
import gzip
import json
import math
import socket
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

LOCK = threading.Lock()
SCRIPT = []
RECEIVED = []
LOG_PATH = None
DECODE_REMOTE_WRITE = False
TEMPORALITY = {
    metrics_pb2.AGGREGATION_TEMPORALITY_UNSPECIFIED: "unspecified",
    metrics_pb2.AGGREGATION_TEMPORALITY_DELTA: "delta",
    metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def number(x):
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)  # shortest round-trip text: exact, unlike JSON number parsing in some decoders


def attrs_of(p):
    return [[kv.key, any_value(kv.value)] for kv in p.attributes]


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
                metric = {"name": m.name, "kind": kind, "description": m.description, "unit": m.unit}
                points = []
                if kind in ("gauge", "sum"):
                    for p in getattr(m, kind).data_points:
                        value_kind = p.WhichOneof("value")
                        points.append({
                            "attrs": attrs_of(p),
                            "time_unix_nano": p.time_unix_nano,
                            "start_time_unix_nano": p.start_time_unix_nano,
                            "value": number(p.as_double) if value_kind == "as_double" else p.as_int,
                            "value_kind": value_kind,
                        })
                if kind == "sum":
                    metric["temporality"] = TEMPORALITY[m.sum.aggregation_temporality]
                    metric["monotonic"] = m.sum.is_monotonic
                if kind == "histogram":
                    metric["temporality"] = TEMPORALITY[m.histogram.aggregation_temporality]
                    for p in m.histogram.data_points:
                        points.append({
                            "attrs": attrs_of(p),
                            "time_unix_nano": p.time_unix_nano,
                            "start_time_unix_nano": p.start_time_unix_nano,
                            "count": p.count,
                            "sum": number(p.sum) if p.HasField("sum") else None,
                            "bucket_counts": list(p.bucket_counts),
                            "explicit_bounds": [number(b) for b in p.explicit_bounds],
                        })
                metric["points"] = points
                scope["metrics"].append(metric)
            res["scopes"].append(scope)
        out["resources"].append(res)
    return out


def remote_write_request_class():
    """prometheus.WriteRequest (remote write 1.0) built from its field numbers: WriteRequest
    {timeseries = 1, metadata = 3}, TimeSeries {labels = 1, samples = 2}, Label {name = 1,
    value = 2}, Sample {value = 1, timestamp = 2}, MetricMetadata {type = 1,
    metric_family_name = 2, help = 4, unit = 5}."""
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="otlp_sink_remote_write.proto", package="prometheus", syntax="proto3")

    def message(name, fields):
        m = f.message_type.add(name=name)
        for number, field, type_, repeated, type_name in fields:
            d = m.field.add(name=field, number=number, type=type_,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                d.type_name = type_name
        return m

    message("WriteRequest", [
        (1, "timeseries", F.TYPE_MESSAGE, True, ".prometheus.TimeSeries"),
        (3, "metadata", F.TYPE_MESSAGE, True, ".prometheus.MetricMetadata"),
    ])
    message("TimeSeries", [
        (1, "labels", F.TYPE_MESSAGE, True, ".prometheus.Label"),
        (2, "samples", F.TYPE_MESSAGE, True, ".prometheus.Sample"),
    ])
    message("Label", [(1, "name", F.TYPE_STRING, False, None), (2, "value", F.TYPE_STRING, False, None)])
    message("Sample", [(1, "value", F.TYPE_DOUBLE, False, None), (2, "timestamp", F.TYPE_INT64, False, None)])
    meta = message("MetricMetadata", [
        (1, "type", F.TYPE_ENUM, False, ".prometheus.MetricMetadata.MetricType"),
        (2, "metric_family_name", F.TYPE_STRING, False, None),
        (4, "help", F.TYPE_STRING, False, None),
        (5, "unit", F.TYPE_STRING, False, None),
    ])
    enum = meta.enum_type.add(name="MetricType")
    for i, name in enumerate(["UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM", "SUMMARY", "INFO", "STATESET"]):
        enum.value.add(name=name, number=i)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


def read_varint(raw, at):
    shift = value = 0
    while True:
        b = raw[at]
        at += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, at


def top_level_fields(raw):
    """Field numbers of a message's top-level fields, in wire order (to see fields no schema names)."""
    fields, at = [], 0
    while at < len(raw):
        key, at = read_varint(raw, at)
        fields.append(key >> 3)
        wire = key & 7
        if wire == 0:
            _, at = read_varint(raw, at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            n, at = read_varint(raw, at)
            at += n
        elif wire == 5:
            at += 4
        else:
            raise ValueError("wire type %d" % wire)
    return fields


def decode_remote_write(raw):
    req = remote_write_request_class()()
    req.ParseFromString(raw)
    names = req.DESCRIPTOR.fields_by_name["metadata"].message_type.enum_types_by_name["MetricType"]
    return {
        "timeseries": [
            {"labels": [[l.name, l.value] for l in ts.labels],
             "samples": [[s.timestamp, number(s.value)] for s in ts.samples]}
            for ts in req.timeseries
        ],
        "metadata": [
            {"type": names.values_by_number[m.type].name, "family": m.metric_family_name,
             "help": m.help, "unit": m.unit}
            for m in req.metadata
        ],
        "fields": top_level_fields(raw),
    }


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
            elif DECODE_REMOTE_WRITE:
                record["remote_write"] = decode_remote_write(raw)
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
    global LOG_PATH, DECODE_REMOTE_WRITE
    args = [a for a in sys.argv[1:] if a != "--decode-remote-write"]
    DECODE_REMOTE_WRITE = len(args) < len(sys.argv) - 1
    port = int(args[0])
    LOG_PATH = args[1] if len(args) > 1 else None
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
