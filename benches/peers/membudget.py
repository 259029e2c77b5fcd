"""Peak RSS of `adxexporter run` with several large windows in flight, with and without
--query-memory-budget (docs/deploy.md#memory-sizing).

A Kusto stand-in (in this process, stdlib only) answers every `POST /v2/rest/query` with one recorded
v2 body of ROWS rows, gzip-compressed as Kusto sends it (so the client streams it: no usable
Content-Length), and accepts every remote-write push. EXPORTERS resources each have WINDOWS
one-minute windows due at start, so up to --max-concurrent-queries windows are queried at once.
The release binary runs until every window is in the WAL; its peak RSS is VmHWM from
/proc/PID/status.

Two row shapes:
  narrow  the benchmark workload (benches/workload/mod.rs): timestamp, metric_name, ServiceName,
          Region, Host, metric_value; ~105 bytes per row, label values repeat.
  wide    narrow plus --extra (default 6) 11-character string columns with a new value in every
          row (ids, request names): ~14 more bytes per row each, one text allocation per cell.

Usage: membudget.py [--shape narrow|wide] [--extra N] [--rows N] [--exporters N] [--windows N]
                    [--budget SIZE|none] [--binary PATH]
Prints one JSON line with the figures. `--budget none` passes a budget far above any window
(64GiB), so it never binds; `--budget omit` passes no flag at all (a binary from before the budget,
e.g. one built from the branch point, given with --binary).
"""
import argparse
import calendar
import gzip
import http.server
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
METRICS = ["http_requests_total", "http_errors_total", "bytes_sent_total", "bytes_received_total",
           "gc_runs_total", "cpu_usage_percent", "memory_usage_bytes", "request_latency_ms", "queue_depth",
           "disk_used_ratio"]
REGIONS = ["eastus", "eastus2", "westus", "westus2", "centralus", "northeurope", "westeurope", "uksouth",
           "southeastasia", "japaneast"]


def body(rows, shape, extra):
    cols = [("timestamp", "datetime"), ("metric_name", "string"), ("ServiceName", "string"),
            ("Region", "string"), ("Host", "string"), ("metric_value", "real")]
    if shape == "wide":
        cols += [(f"attr{k}", "string") for k in range(extra)]
    head = ('[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"},\n'
            '{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult",'
            '"Columns":' + json.dumps([{"ColumnName": n, "ColumnType": t} for n, t in cols],
                                      separators=(",", ":")) + ',"Rows":[')
    parts = [head]
    for i in range(rows):
        step, host, metric = i // 10_000, (i // 10) % 1000, i % 10
        ts = f"2026-01-01T00:{step % 60:02}:{(i // 7) % 60:02}.{i % 10_000_000:07}Z"
        value = float((host * 7919 + metric * 104729 + i) % 10**9) if metric < 5 else (i % 100_000) / 7
        row = (f'["{ts}","{METRICS[metric]}","service-{host % 200:03}","{REGIONS[host // 100]}",'
               f'"host-{host:04}",{value!r}')
        if shape == "wide":
            row += "".join(f',"{k}-{i:09}"' for k in range(extra))
        parts.append(("," if i else "") + row + "]")
    parts.append(']},\n{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]\n')
    return "".join(parts).encode()


class Standin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gz = b""
    queries = 0

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        if self.path == "/v2/rest/query":
            Standin.queries += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(self.gz)))
            self.end_headers()
            try:
                self.wfile.write(self.gz)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a query that gave its budget back hung up
        else:  # remote write: accept and drop
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def scrape(port, prefix):
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    return {l.split(" ")[0]: float(l.split(" ")[1]) for l in text.splitlines() if l.startswith(prefix)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=["narrow", "wide"], default="narrow")
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--extra", type=int, default=6, help="wide: string columns beyond the narrow six")
    p.add_argument("--exporters", type=int, default=4)
    p.add_argument("--windows", type=int, default=2)
    p.add_argument("--budget", default="512MiB")
    p.add_argument("--binary", default=str(ROOT / "target/release/adxexporter"))
    p.add_argument("--expect-over-budget", action="store_true",
                   help="the windows cannot fit: stop once every exporter failed with over_memory_budget")
    a = p.parse_args()

    work = ROOT / "target/membench"
    work.mkdir(parents=True, exist_ok=True)
    extra = a.extra if a.shape == "wide" else 0
    name = f"body-{a.shape}{extra or ''}-{a.rows}"
    cache = work / f"{name}.json.gz"
    if not cache.exists():
        raw = body(a.rows, a.shape, extra)
        cache.write_bytes(gzip.compress(raw, 1))
        (work / f"{name}.len").write_text(str(len(raw)))
    Standin.gz = cache.read_bytes()
    raw_len = int((work / f"{name}.len").read_text())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Standin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    run = work / f"run-{os.getpid()}"
    shutil.rmtree(run, ignore_errors=True)
    (run / "manifests").mkdir(parents=True)
    start_ms = int(time.time() // 60 * 60_000) - a.windows * 60_000
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ms / 1000))
    for e in range(a.exporters):
        (run / "manifests" / f"e{e}.yaml").write_text(f"""apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata:
  name: e{e}
  namespace: bench
spec:
  database: bench
  interval: 1m
  startTime: "{start}"
  body: |
    Bench
  transform:
    metricNameColumn: metric_name
    valueColumns: [metric_value]
    timestampColumn: timestamp
    labelColumns: [ServiceName, Region, Host]
""")
    metrics_port = free_port()
    budget = "64GiB" if a.budget == "none" else a.budget
    flag = [] if a.budget == "omit" else ["--query-memory-budget", budget]
    cmd = [a.binary, "run", "--manifests", str(run / "manifests"), "--kusto-endpoint",
           f"bench=http://127.0.0.1:{port}", "--kusto-auth", "none", "--wal-dir", str(run / "wal"),
           "--remote-write-endpoint", f"http://127.0.0.1:{port}/api/v1/write",
           "--metrics-port", str(metrics_port), "--health-probe-port", str(free_port()),
           "--max-concurrent-queries", str(a.exporters), *flag]
    log = open(run / "adxexporter.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
    end_ms = start_ms + a.windows * 60_000
    peak_rss, done, exit_code = 0, False, None
    deadline = t0 + 900
    try:
        while time.monotonic() < deadline:
            exit_code = proc.poll()
            if exit_code is not None:
                break
            peak_rss = max(peak_rss, proc_status(proc.pid, "VmRSS") or 0)
            status_file = run / "wal" / "status.json"
            try:
                st = json.loads(status_file.read_text())
            except (OSError, ValueError):
                st = {}
            marks = [st.get(f"bench/e{e}", {}).get("watermark") for e in range(a.exporters)]
            if a.expect_over_budget:
                failed = scrape(metrics_port, "adxexporter_queries_total")
                over = [k for k, v in failed.items() if "over_memory_budget" in k and v >= 1]
                if len(over) >= a.exporters:
                    done = True
                    break
                time.sleep(0.2)
                continue
            if all(m and calendar.timegm(time.strptime(m[:19], "%Y-%m-%dT%H:%M:%S")) >= end_ms / 1000
                   for m in marks):
                done = True
                break
            time.sleep(0.05)
        secs = time.monotonic() - t0
        hwm = proc_status(proc.pid, "VmHWM") if exit_code is None else None
        waits = scrape(metrics_port, "adxexporter_query_memory_waits_total")
        failed = {k: v for k, v in scrape(metrics_port, "adxexporter_queries_total").items() if "ok" not in k}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.shutdown()
    text = (run / "adxexporter.log").read_text()
    peaks = [int(l.split("memory_peak=")[1].split()[0]) for l in text.splitlines() if "memory_peak=" in l]
    budget_line = next((l for l in text.splitlines() if "query memory budget" in l), "")
    result = {
        "shape": a.shape, "columns": 6 + extra, "rows": a.rows, "exporters": a.exporters, "windows_each": a.windows,
        "body_mib": round(raw_len / 2**20, 1), "gzip_mib": round(len(Standin.gz) / 2**20, 1),
        "budget": a.budget, "done": done, "exit": exit_code, "seconds": round(secs, 1),
        "peak_rss_mib": round((hwm or 0) / 2**20), "max_sampled_rss_mib": round(peak_rss / 2**20),
        "queries_answered": Standin.queries,
        "accounted_peak_mib": round(max(peaks) / 2**20) if peaks else None, "waits": waits, "failed_queries": failed,
        "loadavg": open("/proc/loadavg").read().split()[:3], "budget_log": budget_line[-120:],
    }
    print(json.dumps(result))
    shutil.rmtree(run, ignore_errors=True)
    sys.exit(0 if done else 1)


if __name__ == "__main__":
    main()
