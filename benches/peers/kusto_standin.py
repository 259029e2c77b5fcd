"""A fast Kusto stand-in for the peer benches: answers `POST /v2/rest/query` from a pre-generated
Kusto v2 response template (written by `peerbench.py` with the perf-anchors column layout).

The template holds two placeholders that are filled per request, so each window and each exporter
gets distinct samples without running a query engine: `@@TS@@` becomes the window start taken from
the query text (`let _startTime=datetime(...)`, which adxexporter prepends to every query) and
`@@EXP@@` becomes the exporter id from the body's `Exporter == "<id>"` filter. Anything else is a
400 with a Kusto-style error body, so a mismatch fails loudly instead of returning wrong data.

Usage: kusto_standin.py TEMPLATE PORT_FILE   (binds 127.0.0.1:0 and writes the port to PORT_FILE)
"""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

START = re.compile(r"let _startTime=datetime\(([^)]+)\)")
EXPORTER = re.compile(r'Exporter == "([^"]+)"')


def kusto_error(message):
    return json.dumps({"error": {"code": "BadRequest", "message": message}}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    template = b""
    answered = 0

    def do_POST(self):
        request = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, body = 400, kusto_error(f"only POST /v2/rest/query is served, not {self.path}")
        if self.path == "/v2/rest/query":
            csl = json.loads(request).get("csl", "")
            start, exporter = START.search(csl), EXPORTER.search(csl)
            if start is None or exporter is None:
                body = kusto_error("the query has no `let _startTime=datetime(...)` or no `Exporter == \"id\"`")
            else:
                ts = start.group(1)
                if "." not in ts:  # v2 datetimes carry 7 fraction digits
                    ts = ts.rstrip("Z") + ".0000000Z"
                status = 200
                body = self.template.replace(b"@@TS@@", ts.encode()).replace(b"@@EXP@@", exporter.group(1).encode())
                Handler.answered += 1
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    template_path, port_file = sys.argv[1], sys.argv[2]
    with open(template_path, "rb") as f:
        Handler.template = f.read()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
