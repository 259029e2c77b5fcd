"""Peer side of `run otlp`: the OpenTelemetry Python OTLP exporter's encoder on the same points.

The body's rows become SDK `MetricsData` (one Gauge per metric name, a data point per row with the
row's timestamp and attributes ServiceName/Region/Host, resource `cluster=anchor`) like our
transform does; that part is untimed. Timed, per stage: `encode_metrics` + `SerializeToString`
(what OTLPMetricExporter.export does before compressing), then also gzip at level 1 and at level 9
(the exporter's `GzipFile` default). Prints one JSON line per stage.
"""
import datetime
import gzip
import json
import sys
import time

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (Gauge, Metric, MetricsData, NumberDataPoint,
                                              ResourceMetrics, ScopeMetrics)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def nanos(ts):
    # "2026-01-01T00:01:00.1234567Z": whole seconds + 7 fraction digits (100 ns ticks).
    secs, frac = ts.rstrip("Z").split(".")
    dt = datetime.datetime.fromisoformat(secs).replace(tzinfo=datetime.timezone.utc)
    return (int((dt - EPOCH).total_seconds()) * 10**7 + int(frac.ljust(7, "0"))) * 100


def metrics_data(body):
    frames = json.loads(body)
    primary = next(f for f in frames if f.get("TableKind") == "PrimaryResult")
    by_name = {}
    for ts, name, service, region, host, value in primary["Rows"]:
        by_name.setdefault(name, []).append(NumberDataPoint(
            attributes={"ServiceName": service, "Region": region, "Host": host},
            start_time_unix_nano=0, time_unix_nano=nanos(ts), value=float(value)))
    metrics = [Metric(name=n, description="", unit="", data=Gauge(data_points=p)) for n, p in by_name.items()]
    scope = ScopeMetrics(scope=InstrumentationScope("adxexporter"), metrics=metrics, schema_url="")
    rm = ResourceMetrics(resource=Resource({"cluster": "anchor"}), scope_metrics=[scope], schema_url="")
    return MetricsData(resource_metrics=[rm]), sum(len(p) for p in by_name.values())


def main():
    body_path, runs = sys.argv[1], int(sys.argv[2])
    with open(body_path, "rb") as f:
        data, points = metrics_data(f.read())
    for level in (None, 1, 9):
        secs, size = [], 0
        for _ in range(runs):
            t = time.perf_counter()
            out = encode_metrics(data).SerializeToString()
            if level is not None:
                out = gzip.compress(out, compresslevel=level)
            secs.append(time.perf_counter() - t)
            size = len(out)
        stage = "protobuf" if level is None else f"protobuf+gzip{level}"
        print(json.dumps({"bench": "otlp", "impl": "opentelemetry-exporter-otlp-proto-common", "stage": stage,
                          "points": points, "bytes": size, "median_s": sorted(secs)[len(secs) // 2],
                          "runs_s": secs}), flush=True)


if __name__ == "__main__":
    main()
