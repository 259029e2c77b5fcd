"""Side-by-side benchmarks of adxexporter against real peers (called by `benches/peers/run NAME`).

Every bench runs both sides in the same invocation, alternating them (ours, peer, ours, peer, ...),
and reports the per-pair ratio with its spread over the repeats; absolute figures on this shared
machine move with the neighbours, the ratio of back-to-back runs is the figure. Results go to
stdout as Markdown rows and to `target/peerbench/results-NAME.json`.

Benches: decode, otlp, wal, push, e2e (see benches/README.md for what each measures).
Every process started here is stopped by its PID before the bench returns.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "target" / "peerbench"
# ADXEXPORTER_BIN: another build of ours (e.g. a baseline commit's) for before/after runs.
OURS = Path(os.environ.get("ADXEXPORTER_BIN") or ROOT / "target" / "release" / "adxexporter")
EXAMPLE = ROOT / "target" / "release" / "examples" / "peerbench"
# PEERBENCH_BASE_EXAMPLE: another build's examples/peerbench (e.g. a baseline commit's) for decode before/after.
BASE_EXAMPLE = os.environ.get("PEERBENCH_BASE_EXAMPLE")
HERE = Path(__file__).resolve().parent
PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")
METRICS = ["http_requests_total", "http_errors_total", "bytes_sent_total", "bytes_received_total", "gc_runs_total",
           "cpu_usage_percent", "memory_usage_bytes", "request_latency_ms", "queue_depth", "disk_used_ratio"]
REGIONS = ["eastus", "eastus2", "westus", "westus2", "centralus", "northeurope", "westeurope", "uksouth",
           "southeastasia", "japaneast"]


def say(*a):
    print("[peerbench]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes and measurement

def proc_cpu(pid):
    """utime + stime of all threads, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (JSON lines of its stdout, peak RSS MiB)."""
    out = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")], rss


def eventually(what, limit_s, probe, interval=0.05):
    deadline = time.monotonic() + limit_s
    while True:
        v = probe()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {limit_s}s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def ok(url):
    try:
        http_get(url, timeout=1)
        return True
    except OSError:
        return False


class Procs:
    """Started processes, stopped by PID (SIGTERM, then SIGKILL) on exit."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, log):
        p = subprocess.Popen(list(map(str, cmd)), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            self.stop(p)


def start_vm(procs, d):
    port = free_port()
    shutil.rmtree(d / "vm", ignore_errors=True)  # a fresh store: counts must come from this run only
    p = procs.start(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={d}/vm",
                     "-retentionPeriod=100y", "-search.latencyOffset=0s", "-search.disableCache"], d / "vm.log")
    eventually("VictoriaMetrics /health", 30, lambda: ok(f"http://127.0.0.1:{port}/health"))
    return p, port


def vm_inserted(port):
    text = http_get(f"http://127.0.0.1:{port}/metrics").decode()
    m = re.search(r'^vm_rows_inserted_total\{type="promremotewrite"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def vm_stored(port, selector, lookback, at_ms=None):
    """Samples VictoriaMetrics holds for `selector` in (at − lookback, at] (default at: now), after a flush."""
    http_get(f"http://127.0.0.1:{port}/internal/force_flush")
    q = urllib.parse.quote(f"sum(count_over_time({selector}[{lookback}]))")
    at = "" if at_ms is None else f"&time={at_ms / 1000:.3f}"
    res = json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/query?query={q}{at}", timeout=60))["data"]["result"]
    return int(float(res[0]["value"][1])) if res else 0


def start_standin(procs, d, template):
    port_file = d / "kusto.port"
    port_file.unlink(missing_ok=True)
    p = procs.start([PY, HERE / "kusto_standin.py", template, port_file], d / "kusto.log")
    eventually("Kusto stand-in port", 30, port_file.exists)
    return p, int(port_file.read_text())


# ---------------------------------------------------------------- data

def body_path(rows):
    path = WORK / "data" / f"kusto_v2_{rows}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        say(f"generating {path.name}")
        subprocess.run([EXAMPLE, "gen-body", str(rows), path.with_suffix(".tmp")], check=True)
        path.with_suffix(".tmp").rename(path)
    return path


def write_template(path, hosts):
    """A v2 response with hosts × 10 rows; `@@TS@@` / `@@EXP@@` are filled by the stand-in."""
    header = [
        {"FrameType": "DataSetHeader", "IsProgressive": False, "Version": "v2.0", "IsFragmented": False,
         "ErrorReportingPlacement": "InData"},
        {"FrameType": "DataTable", "TableId": 0, "TableKind": "QueryProperties", "TableName": "@ExtendedProperties",
         "Columns": [{"ColumnName": "TableId", "ColumnType": "int"}, {"ColumnName": "Key", "ColumnType": "string"},
                     {"ColumnName": "Value", "ColumnType": "dynamic"}],
         "Rows": [[1, "Visualization", "{\"Visualization\":null}"]]},
    ]
    cols = [("timestamp", "datetime"), ("metric_name", "string"), ("ServiceName", "string"), ("Region", "string"),
            ("Host", "string"), ("Exporter", "string"), ("metric_value", "real")]
    rows = []
    for h in range(hosts):
        for m, name in enumerate(METRICS):
            value = float((h * 7919 + m * 104729) % 10**9) if m < 5 else ((h * 31 + m) % 1000) / 7
            rows.append(["@@TS@@", name, f"service-{h % 200:03}", REGIONS[(h // 100) % 10], f"host-{h:04}", "@@EXP@@",
                         value])
    primary = {"FrameType": "DataTable", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult",
               "Columns": [{"ColumnName": n, "ColumnType": t} for n, t in cols], "Rows": rows}
    tail = [{"FrameType": "DataSetCompletion", "HasErrors": False, "Cancelled": False}]
    frames = [json.dumps(f, separators=(",", ":")) for f in header + [primary] + tail]
    path.write_text("[" + ",\n".join(frames) + "]\n")
    return len(rows)


def manifest(name, exporter_id, start_rfc3339):
    return f"""apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata:
  name: {name}
  namespace: bench
spec:
  database: bench
  interval: 1m
  startTime: "{start_rfc3339}"
  maxRows: 100000
  body: |
    Bench | where Exporter == "{exporter_id}"
  transform:
    metricNameColumn: metric_name
    valueColumns: [metric_value]
    timestampColumn: timestamp
    labelColumns: [ServiceName, Region, Host, Exporter]
"""


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def start_ours(procs, d, kusto_port, manifests, rw_port):
    wal = d / "wal"
    shutil.rmtree(wal, ignore_errors=True)
    return procs.start([OURS, "run", "--manifests", manifests, "--kusto-endpoint", f"bench=http://127.0.0.1:{kusto_port}",
                        "--kusto-auth", "none", "--wal-dir", wal,
                        "--remote-write-endpoint", f"http://127.0.0.1:{rw_port}/api/v1/write",
                        "--metrics-port", free_port(), "--health-probe-port", free_port()], d / "adxexporter.log")


# ---------------------------------------------------------------- reporting

def spread(xs):
    return f"{statistics.median(xs):.3g} ({min(xs):.3g}–{max(xs):.3g})" if xs else "–"


def save(name, result):
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"results-{name}.json").write_text(json.dumps(result, indent=1))
    say(f"wrote {WORK / f'results-{name}.json'}")


# ---------------------------------------------------------------- benches

def bench_decode(a):
    body = body_path(a.rows)
    pairs = []
    for i in range(a.repeats):
        say(f"decode pair {i + 1}/{a.repeats}: ours, then azure-kusto-data" + (", then the base build" if BASE_EXAMPLE else ""))
        (ours,), ours_rss = timed([EXAMPLE, "decode", body, a.runs])
        (peer,), peer_rss = timed([PY, HERE / "py_decode.py", body, a.runs])
        assert ours["rows"] == peer["rows"] == a.rows, (ours["rows"], peer["rows"])
        pair = {"ours": ours, "ours_rss_mib": ours_rss, "peer": peer, "peer_rss_mib": peer_rss,
                "ratio": peer["median_s"] / ours["median_s"], "rss_ratio": ours_rss / peer_rss}
        if BASE_EXAMPLE:
            (base,), base_rss = timed([BASE_EXAMPLE, "decode", body, a.runs])
            assert base["rows"] == a.rows, base["rows"]
            pair.update({"base": base, "base_rss_mib": base_rss})
        pairs.append(pair)
    mb = pairs[0]["ours"]["bytes"] / 1e6
    print(f"| Kusto v2 decode, {a.rows:,} rows / {mb:.0f} MB: ours streamed from the file, the peer's in memory | "
          f"{spread([a.rows / p['ours']['median_s'] / 1e6 for p in pairs])} M rows/s, "
          f"peak RSS {spread([p['ours_rss_mib'] for p in pairs])} MiB | "
          f"{spread([a.rows / p['peer']['median_s'] / 1e3 for p in pairs])} k rows/s, "
          f"peak RSS {spread([p['peer_rss_mib'] for p in pairs])} MiB | "
          f"**{spread([p['ratio'] for p in pairs])}× faster, {spread([p['rss_ratio'] for p in pairs])}× the memory** |")
    if BASE_EXAMPLE:
        print(f"| same, base build ({pairs[0]['base']['impl']}) | "
              f"{spread([a.rows / p['base']['median_s'] / 1e6 for p in pairs])} M rows/s, "
              f"peak RSS {spread([p['base_rss_mib'] for p in pairs])} MiB | | "
              f"**{spread([p['peer']['median_s'] / p['base']['median_s'] for p in pairs])}× faster, "
              f"{spread([p['base_rss_mib'] / p['peer_rss_mib'] for p in pairs])}× the memory** |")
    save("decode", pairs)


def bench_otlp(a):
    body = body_path(a.rows)
    pairs = []
    for i in range(a.repeats):
        say(f"otlp pair {i + 1}/{a.repeats}: ours, then opentelemetry-exporter-otlp-proto-common")
        ours, _ = timed([EXAMPLE, "otlp", body, a.runs])
        peer, _ = timed([PY, HERE / "py_otlp.py", body, a.runs])
        pairs.append({"ours": ours, "peer": peer})
    for stage in ("protobuf", "protobuf+gzip1", "protobuf+gzip9"):
        o = [next(x for x in p["ours"] if x["stage"] == stage) for p in pairs]
        q = [next(x for x in p["peer"] if x["stage"] == stage) for p in pairs]
        assert all(x["points"] == a.rows for x in o + q), "both sides must encode every row"
        print(f"| OTLP encode {stage}, {a.rows:,} points | "
              f"{spread([x['points'] / x['median_s'] / 1e6 for x in o])} M points/s, {o[0]['bytes']:,} B | "
              f"{spread([x['points'] / x['median_s'] / 1e3 for x in q])} k points/s, {q[0]['bytes']:,} B | "
              f"**{spread([y['median_s'] / x['median_s'] for x, y in zip(o, q)])}×** |")
    save("otlp", pairs)


CRITERION = re.compile(r"^(append/\S+)\s*\n?\s*time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", re.M)
UNIT = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def bench_wal(a):
    """Runs the existing criterion bench (`benches/wal.rs`) and folds its append pairs into ratios."""
    runs = []
    for i in range(a.repeats):
        say(f"wal run {i + 1}/{a.repeats}: cargo bench --bench wal -- append")
        out = subprocess.run(["cargo", "bench", "--bench", "wal", "--", "append"], cwd=ROOT, capture_output=True,
                             text=True)
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        runs.append({m.group(1): float(m.group(2)) * UNIT[m.group(3)] for m in CRITERION.finditer(out.stdout)})
    for kind in ("prompb", "incompressible"):
        for size in (65536, 524288, 4194304):
            wal = [r.get(f"append/wal_{kind}/{size}") for r in runs]
            raw = [r.get(f"append/raw_{kind}/{size}") for r in runs]
            if None in wal + raw:
                continue
            print(f"| WAL append + commit, {kind} {size // 1024} KiB | {spread([w * 1e3 for w in wal])} ms/record | "
                  f"raw write + fdatasync: {spread([r * 1e3 for r in raw])} ms | "
                  f"**{spread([r / w for w, r in zip(wal, raw)])}×** (raw/ours; ≥ 1 = ours faster) |")
    save("wal", runs)


def run_ours_push(d, windows, template, rows):
    # Exactly `windows` complete windows are due at start-up (a window is due once its end <= now).
    start = int(time.time() // 60 * 60_000) - windows * 60_000
    manifests = d / "manifests"
    shutil.rmtree(manifests, ignore_errors=True)
    manifests.mkdir(parents=True)
    (manifests / "push.yaml").write_text(manifest("push", "e0000", rfc3339(start)))
    expected = windows * rows
    with Procs() as procs:
        _, vm_port = start_vm(procs, d)
        _, kusto_port = start_standin(procs, d, template)
        ours = start_ours(procs, d, kusto_port, manifests, vm_port)
        t0 = time.monotonic()
        eventually(f"{expected} samples in VictoriaMetrics from adxexporter", 900,
                   lambda: ours.poll() is None and vm_inserted(vm_port) >= expected or ours.poll() is not None)
        if ours.poll() is not None:
            sys.exit(f"adxexporter exited: {(d / 'adxexporter.log').read_text()[-3000:]}")
        cpu, hwm, secs = proc_cpu(ours.pid), proc_hwm_mib(ours.pid), time.monotonic() - t0
        inserted = vm_inserted(vm_port)
        procs.stop(ours)
        # The `windows` windows (samples stamped with their window start) arrived, each exactly
        # once; a window that became due meanwhile may be partly delivered at the stop.
        # A loaded VictoriaMetrics may still be registering new series after the flush: poll.
        stored_now = lambda: vm_stored(vm_port, '{Exporter="e0000"}', f"{windows * 60 + 1}s", start + windows * 60_000 - 1)
        eventually(f"{expected} samples stored (ours)", 60, lambda: stored_now() >= expected, interval=0.5)
        stored = stored_now()
        assert stored == expected, (stored, expected)
    return {"start_ms": start, "windows": windows, "cpu_s": cpu, "peak_rss_mib": hwm, "delivered_at_cpu_read": inserted, "stored": stored,
            "wall_s": secs, "cpu_us_per_sample": cpu / inserted * 1e6}


def run_vmagent_push(d, bodies, samples, extra):
    files = sorted(bodies.glob("*.bin"))
    with Procs() as procs:
        _, vm_port = start_vm(procs, d)
        queue = d / "vmagent-queue"
        shutil.rmtree(queue, ignore_errors=True)
        port = free_port()
        agent = procs.start(["vmagent", f"-httpListenAddr=127.0.0.1:{port}",
                             f"-remoteWrite.url=http://127.0.0.1:{vm_port}/api/v1/write",
                             f"-remoteWrite.tmpDataPath={queue}", "-remoteWrite.flushInterval=100ms", *extra],
                            d / "vmagent.log")
        eventually("vmagent /health", 30, lambda: ok(f"http://127.0.0.1:{port}/health"))
        cpu0 = proc_cpu(agent.pid)
        t0 = time.monotonic()
        conn = __import__("http.client").client.HTTPConnection("127.0.0.1", port)
        for f in files:
            conn.request("POST", "/api/v1/write", body=f.read_bytes(),
                         headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                                  "X-Prometheus-Remote-Write-Version": "0.1.0"})
            r = conn.getresponse()
            r.read()
            assert r.status == 204, (f, r.status)
        conn.close()
        eventually(f"{samples} samples in VictoriaMetrics via vmagent", 300, lambda: vm_inserted(vm_port) >= samples)
        cpu, hwm, secs = proc_cpu(agent.pid) - cpu0, proc_hwm_mib(agent.pid), time.monotonic() - t0
        inserted = vm_inserted(vm_port)
        procs.stop(agent)
        eventually(f"{samples} samples stored (vmagent)", 60, lambda: vm_stored(vm_port, '{Exporter="e0000"}', "6h") >= samples, interval=0.5)
        stored = vm_stored(vm_port, '{Exporter="e0000"}', "6h")
        assert stored == samples == inserted, (stored, samples, inserted)
    return {"cpu_s": cpu, "peak_rss_mib": hwm, "delivered_at_cpu_read": inserted, "stored": stored,
            "wall_s": secs, "cpu_us_per_sample": cpu / inserted * 1e6}


# vmagent's file-backed queue is always on; by default blocks stay in memory unless the remote is
# slow, so the second mode caps vmagent's memory to push every block through the file queue.
VMAGENT_MODES = {"vmagent": [], "vmagent -memory.allowedBytes=1MB": ["-memory.allowedBytes=1MB"]}


def bench_push(a):
    d = WORK / "push"
    d.mkdir(parents=True, exist_ok=True)
    template = d / "template.json"
    rows = write_template(template, a.hosts)
    pairs = []
    for i in range(a.repeats):
        say(f"push pair {i + 1}/{a.repeats}: adxexporter (WAL+fsync → VM), then vmagent (queue → VM)")
        ours = run_ours_push(d, a.windows, template, rows)
        # vmagent gets exactly the bodies we sent for the same windows (same labels, values, timestamps).
        bodies = d / "bodies"
        shutil.rmtree(bodies, ignore_errors=True)
        start = ours["start_ms"]
        meta = json.loads(subprocess.run([EXAMPLE, "rw-bodies", template, bodies, str(start), "60000", str(a.windows),
                                          "e0000"],
                                         check=True, capture_output=True, text=True).stdout)
        pair = {"ours": ours}
        for key, extra in VMAGENT_MODES.items():
            pair[key] = run_vmagent_push(d, bodies, meta["samples"], extra)
        pairs.append(pair)
        say(json.dumps(pair))
    for key in VMAGENT_MODES:
        print(f"| durable push, {a.windows} windows × {rows:,} samples into VictoriaMetrics, vs {key} | "
              f"{spread([p['ours']['cpu_us_per_sample'] for p in pairs])} CPU-µs/sample, "
              f"peak RSS {spread([p['ours']['peak_rss_mib'] for p in pairs])} MiB | "
              f"{spread([p[key]['cpu_us_per_sample'] for p in pairs])} CPU-µs/sample, "
              f"peak RSS {spread([p[key]['peak_rss_mib'] for p in pairs])} MiB | "
              f"**{spread([p[key]['cpu_us_per_sample'] / p['ours']['cpu_us_per_sample'] for p in pairs])}×** |")
    save("push", pairs)


def stored_or_none(port, selector, lookback, at_ms):
    """`vm_stored`, or None while VictoriaMetrics cannot answer (busy, restarting): a probe, not a failure."""
    try:
        return vm_stored(port, selector, lookback, at_ms)
    except (OSError, ValueError, KeyError) as e:
        say(f"VictoriaMetrics did not answer the count ({e}); asking again")
        return None


def bench_e2e(a):
    if a.minutes < 2:
        sys.exit("e2e: --minutes must be at least 2 (the CPU rate is taken after the first minute)")
    d = WORK / "e2e"
    d.mkdir(parents=True, exist_ok=True)
    template = d / "template.json"
    rows = write_template(template, a.hosts)
    manifests = d / "manifests"
    shutil.rmtree(manifests, ignore_errors=True)
    manifests.mkdir()
    # startTime in the future-most complete window: no backlog, steady state from the first minute.
    start = int(time.time() // 60 * 60_000) - 60_000
    for i in range(a.exporters):
        (manifests / f"e{i:04}.yaml").write_text(manifest(f"e{i:04}", f"e{i:04}", rfc3339(start)))
    per_window = a.exporters * rows
    log = d / "adxexporter.log"
    samples = []
    with Procs() as procs:
        _, vm_port = start_vm(procs, d)
        _, kusto_port = start_standin(procs, d, template)
        ours = start_ours(procs, d, kusto_port, manifests, vm_port)
        t0 = time.monotonic()
        # Sample CPU/RSS every 5 s; report per minute of wall time after the first (startup) minute.
        while time.monotonic() - t0 < a.minutes * 60:
            if ours.poll() is not None:
                sys.exit(f"e2e: adxexporter exited ({ours.returncode}) during the run; its log ({log}) ends:\n"
                         f"{log.read_text()[-3000:]}")
            try:
                inserted = vm_inserted(vm_port)
            except OSError:
                inserted = None  # a busy VictoriaMetrics: the timeline only informs
            samples.append({"t": time.monotonic() - t0, "cpu_s": proc_cpu(ours.pid), "rss_mib": proc_rss_mib(ours.pid),
                            "inserted": inserted})
            time.sleep(5)
        hwm = proc_hwm_mib(ours.pid)
        # The count is taken over a fixed set of windows, the ones complete (due: ingestionDelay is 0)
        # when the measurement ended, never over "whatever arrived so far": windows keep becoming due
        # every minute, and the next minute's 1,000 windows arrive over a few seconds, so an open-ended
        # count read mid-delivery is a partial window (the `(570800, 100000)` failure). Samples carry
        # their window start as timestamp, so the range (start − 1 s, last] holds exactly these windows.
        last = int(time.time() // 60 * 60_000) - 60_000
        windows = (last - start) // 60_000 + 1
        expected = windows * per_window
        selector, lookback = '{Exporter=~"e.*"}', f"{(last - start) // 1000 + 1}s"
        say(f"waiting until VictoriaMetrics holds the {windows} windows {rfc3339(start)}..{rfc3339(last)}: "
            f"{expected:,} samples")
        deadline = time.monotonic() + a.settle_s
        stored = None
        while True:
            if ours.poll() is not None:
                sys.exit(f"e2e: adxexporter exited ({ours.returncode}) before its windows were delivered; "
                         f"its log ({log}) ends:\n{log.read_text()[-3000:]}")
            stored = stored_or_none(vm_port, selector, lookback, last)
            if stored is not None and stored >= expected:
                break
            if time.monotonic() > deadline:
                sys.exit(f"e2e: after {a.settle_s} s VictoriaMetrics holds {stored} of the {expected:,} samples of "
                         f"the {windows} windows {rfc3339(start)}..{rfc3339(last)} ({a.exporters} exporters × "
                         f"{rows} rows): not delivered; see {log} and {d / 'vm.log'}")
            time.sleep(1)
        procs.stop(ours)
        # Settled: nothing of these windows is in flight any more; read again after the stop.
        after = stored_or_none(vm_port, selector, lookback, last)
    if stored != expected or after != expected:
        sys.exit(f"e2e: the {windows} windows {rfc3339(start)}..{rfc3339(last)} should hold {expected:,} samples "
                 f"({a.exporters} exporters × {rows} rows each), VictoriaMetrics holds {stored} (before the stop) "
                 f"and {after} (after): {'duplicates' if max(stored, after or 0) > expected else 'missing samples'}")
    minutes = [s for s in samples if s["t"] >= 60]
    if len(minutes) < 2:
        sys.exit(f"e2e: only {len(minutes)} CPU readings after the first minute; nothing to report")
    rate = (minutes[-1]["cpu_s"] - minutes[0]["cpu_s"]) / (minutes[-1]["t"] - minutes[0]["t"]) * 60
    result = {"exporters": a.exporters, "rows_per_window": rows, "windows": windows, "first_window": rfc3339(start),
              "last_window": rfc3339(last), "stored_samples": stored, "cpu_s_per_minute_steady": rate,
              "cpu_s_total": samples[-1]["cpu_s"], "rss_mib_steady": [s["rss_mib"] for s in minutes],
              "peak_rss_mib": hwm, "timeline": samples}
    print(f"| end to end: {a.exporters} exporters × 1 min × {rows} rows, {a.minutes} min | "
          f"{rate:.2f} CPU-s per minute ({rate / 60 * 100:.1f} % of one core), "
          f"{rate / per_window * 1e6:.1f} CPU-µs per sample; RSS {min(result['rss_mib_steady']):.0f}–"
          f"{max(result['rss_mib_steady']):.0f} MiB, peak {hwm:.0f} MiB | {windows} windows × "
          f"{per_window:,} samples all in VictoriaMetrics, each exactly once | – |")
    save("e2e", result)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    s = sub.add_parser("decode")
    s.add_argument("--rows", type=int, default=1_000_000)
    s.add_argument("--runs", type=int, default=3, help="in-process repeats per side (median)")
    s.add_argument("--repeats", type=int, default=3, help="process pairs, alternating")
    s = sub.add_parser("otlp")
    s.add_argument("--rows", type=int, default=100_000)
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--repeats", type=int, default=3)
    s = sub.add_parser("wal")
    s.add_argument("--repeats", type=int, default=2)
    s = sub.add_parser("push")
    s.add_argument("--windows", type=int, default=100)
    s.add_argument("--hosts", type=int, default=1000, help="rows per window = 10 × hosts")
    s.add_argument("--repeats", type=int, default=3)
    s = sub.add_parser("e2e")
    s.add_argument("--exporters", type=int, default=1000)
    s.add_argument("--hosts", type=int, default=10, help="rows per exporter window = 10 × hosts")
    s.add_argument("--minutes", type=int, default=5, help="measured minutes (at least 2)")
    s.add_argument("--settle-s", type=int, default=180,
                   help="how long the windows complete at the end may take to arrive before the bench fails")
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    globals()[f"bench_{a.bench}"](a)


if __name__ == "__main__":
    main()
