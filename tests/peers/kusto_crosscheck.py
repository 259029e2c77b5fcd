"""Runs KQL queries through the official azure-kusto-data client and prints comparable JSON.

Usage: kusto_crosscheck.py URL DATABASE QUERIES_JSON
Prints one JSON array, one entry per query: {"columns": [[name, type], ...], "rows": [[cell, ...], ...]}
or {"error": "..."}. Cells are normalised to text the Rust test can compare exactly:
null; bool "true"/"false"; int/long decimal text; real repr (or Kusto's "NaN"/"Infinity"/"-Infinity");
decimal str(Decimal); datetime "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC); timespan whole microseconds;
guid/string as is; dynamic compact JSON with sorted keys.
"""

import datetime as dt
import json
import sys
from decimal import Decimal

from azure.kusto.data import KustoClient, KustoConnectionStringBuilder


def cell(value, column_type):
    if value is None:
        return None
    t = column_type.lower()
    if t == "bool":
        return "true" if value else "false"
    if t in ("int", "long"):
        return str(int(value))
    if t == "real":
        return value if isinstance(value, str) else repr(float(value))
    if t == "decimal":
        return str(Decimal(value))
    if t == "datetime":
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if t == "timespan":
        return str(value // dt.timedelta(microseconds=1))
    if t == "dynamic":
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def main():
    url, database, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    client = KustoClient(KustoConnectionStringBuilder.with_no_authentication(url))
    out = []
    for query in queries:
        try:
            table = client.execute(database, query).primary_results[0]
        except Exception as e:  # the Rust side only compares successes
            out.append({"error": str(e)})
            continue
        columns = [[c.column_name, c.column_type] for c in table.columns]
        rows = [[cell(row[i], c.column_type) for i, c in enumerate(table.columns)] for row in table]
        out.append({"columns": columns, "rows": rows})
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
