#!/usr/bin/env bash
# The whole pipeline on this machine: duckdb-kql (a real KQL engine behind the Kusto REST API) with
# live demo data, a real Prometheus receiving remote write, and `adxexporter run` in standalone mode
# reading deploy/quickstart/. Prints the series as they arrive. Ctrl-C stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
cd "$root"
KQL_PORT=${KQL_PORT:-31415} PROM_PORT=${PROM_PORT:-19090} METRICS_PORT=${METRICS_PORT:-18080} HEALTH_PORT=${HEALTH_PORT:-18081}
say() { printf '\033[1m[quickstart]\033[0m %s\n' "$*" >&2; }
for port in "$KQL_PORT" "$PROM_PORT" "$METRICS_PORT" "$HEALTH_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    say "port $port is in use: free it or set KQL_PORT/PROM_PORT/METRICS_PORT/HEALTH_PORT"; exit 1
  fi
done

say "1/4 installing the peers (apt: prometheus; pip: duckdb-kql) if missing"
tests/peers/setup.sh
say "2/4 building adxexporter (cargo build; a few minutes the first time)"
cargo build --quiet --bin adxexporter

work=$(mktemp -d /tmp/adxexporter-quickstart.XXXXXX)
pids=()
cleanup() {
  say "stopping (SIGTERM: adxexporter drains and exits)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  say "logs and WAL kept in $work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

wait_http() { # url name
  for _ in $(seq 1 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  say "$2 did not come up; see $work/$2.log"; exit 1
}

say "3/4 starting duckdb-kql on :$KQL_PORT and Prometheus on :$PROM_PORT"
.venv/bin/duckdb-kql serve --init deploy/quickstart/live.sql -p "$KQL_PORT" >"$work/duckdb-kql.log" 2>&1 &
pids+=($!)
printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' >"$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --web.enable-remote-write-receiver >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$KQL_PORT/" duckdb-kql
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" prometheus

say "4/4 starting adxexporter run --manifests deploy/quickstart (WAL in $work/wal)"
target/debug/adxexporter run --manifests deploy/quickstart \
  --kusto-endpoint "memory=http://127.0.0.1:$KQL_PORT" --kusto-auth none \
  --remote-write-endpoint "http://127.0.0.1:$PROM_PORT/api/v1/write" \
  --cluster-labels region=local,environment=quickstart \
  --wal-dir "$work/wal" --metrics-port "$METRICS_PORT" --health-probe-port "$HEALTH_PORT" \
  2>"$work/adxexporter.log" &
pids+=($!)
wait_http "http://127.0.0.1:$HEALTH_PORT/readyz" adxexporter
say "ready. Self-metrics: http://127.0.0.1:$METRICS_PORT/metrics  Prometheus UI: http://127.0.0.1:$PROM_PORT"
say "a one-minute window is exported once it is complete; Ctrl-C to stop"

query="http://127.0.0.1:$PROM_PORT/api/v1/query?query=quickstart_cpu_percent_avg%5B15m%5D"
while true; do
  body=$(curl -s "$query" || true)
  printf '%s\n' "$body" | .venv/bin/python deploy/quickstart/show.py || true
  grep -o '"watermark": "[^"]*"' "$work/wal/status.json" 2>/dev/null | head -n1 | sed 's/^/  status: /' || true
  kill -0 "${pids[2]}" 2>/dev/null || { say "adxexporter exited; see $work/adxexporter.log"; exit 1; }
  sleep 15
done
