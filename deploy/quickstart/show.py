"""Prints what Prometheus holds for the quickstart metric (JSON from /api/v1/query on stdin)."""
import datetime
import json
import sys

result = json.load(sys.stdin).get("data", {}).get("result", [])
if not result:
    print("  no samples in Prometheus yet")
for series in result:
    m = series["metric"]
    ts, value = series["values"][-1]
    at = datetime.datetime.fromtimestamp(float(ts), datetime.timezone.utc).strftime("%H:%M:%S")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(m.items()) if k != "__name__")
    print(f"  {m['__name__']}{{{labels}}}: {len(series['values'])} samples, newest {value} at {at}Z")
