#!/usr/bin/env bash
# Installs every real peer the tests talk to: Prometheus, VictoriaMetrics and faketime (Debian) and a Python
# venv at <repo>/.venv with duckdb-kql, azure-kusto-data, opentelemetry-proto, rotel and grpcio (PyPI).
# Idempotent: a second run only checks. Tests start their own instances on free loopback ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
say() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v victoria-metrics >/dev/null || need_apt+=(victoria-metrics)
command -v promtool >/dev/null || need_apt+=(prometheus)
# libfaketime for the chaos suite's clock-jump scenario (tests/chaos.rs)
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || need_apt+=(faketime)
if ((${#need_apt[@]})); then
  say "apt-get install ${need_apt[*]}"
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$root/tests/peers/requirements.txt" | cut -d' ' -f1)
if [[ ! -x $venv/bin/duckdb-kql || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  say "creating $venv (pip install -r tests/peers/requirements.txt)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/peers/requirements.txt"
  echo "$want" > "$stamp"
fi
say "peers ready: $(prometheus --version 2>&1 | head -n1 | cut -d' ' -f1-3); victoria-metrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null); $("$venv/bin/duckdb-kql" --version 2>/dev/null || echo duckdb-kql)"
