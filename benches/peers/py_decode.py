"""Peer side of `run decode`: the official azure-kusto-data client's v2 decode of an in-memory body.

Times, per run: json.loads of the bytes + KustoResponseDataSetV2 + reading every value of every
primary row (the SDK converts cells lazily, so reading them is part of decoding). This is what
KustoClient.execute does after the HTTP response arrives. Prints one JSON line.
"""
import json
import sys
import time

from azure.kusto.data.response import KustoResponseDataSetV2


def main():
    body_path, runs = sys.argv[1], int(sys.argv[2])
    with open(body_path, "rb") as f:
        body = f.read()
    secs, rows = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        ds = KustoResponseDataSetV2(json.loads(body))
        rows = 0
        for row in ds.primary_results[0]:
            for i in range(6):
                row[i]
            rows += 1
        secs.append(time.perf_counter() - t)
        del ds
    print(json.dumps({"bench": "decode", "impl": "azure-kusto-data", "rows": rows, "bytes": len(body),
                      "median_s": sorted(secs)[len(secs) // 2], "runs_s": secs}))


if __name__ == "__main__":
    main()
