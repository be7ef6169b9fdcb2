#!/usr/bin/env python3
"""A minimal OTLP/HTTP trace receiver for the mcp-probe tests.

Decodes every `POST /v1/traces` body (`application/x-protobuf`) with the official
OpenTelemetry protobuf definitions (PyPI `opentelemetry-proto`, installed by setup.sh
into the `otlp/` venv) and appends one JSON line per span to --out:

  {"resource": {attr: value}, "scope": {"name", "version"}, "name", "kind",
   "trace_id", "span_id", "parent_span_id" (hex), "trace_state", "flags",
   "start_time_unix_nano", "end_time_unix_nano", "attributes": {attr: value},
   "status": {"code", "message"}}

Answers 200 with an empty ExportTraceServiceResponse; 415 for another content type and
400 for a body that does not decode (those requests are also logged to --out as
{"error": ...}). Binds 127.0.0.1 only, prints READY when listening, exits 0 on SIGTERM.

Run: $MCP_ENV/otlp/bin/python tests/mcp/otlp_receiver.py --port PORT --out spans.jsonl
"""

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True

from google.protobuf.message import DecodeError  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LOCK = threading.Lock()


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def spans_of(request):
    for rs in request.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = {"name": ss.scope.name, "version": ss.scope.version}
            for s in ss.spans:
                yield {
                    "resource": resource,
                    "scope": scope,
                    "name": s.name,
                    "kind": s.kind,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "trace_state": s.trace_state,
                    "flags": s.flags,
                    "start_time_unix_nano": s.start_time_unix_nano,
                    "end_time_unix_nano": s.end_time_unix_nano,
                    "attributes": attrs(s.attributes),
                    "status": {"code": s.status.code, "message": s.status.message},
                }


class Handler(BaseHTTPRequestHandler):
    out_path = ""

    def log_message(self, *_a):  # keep stderr quiet
        pass

    def write(self, records):
        with LOCK, open(self.out_path, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, sort_keys=True) + "\n")

    def reply(self, status, body=b"", ctype="application/x-protobuf"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            self.write([{"error": f"path {self.path}"}])
            return self.reply(404, b"not found\n", "text/plain")
        ctype = self.headers.get("Content-Type", "")
        if ctype != "application/x-protobuf":
            self.write([{"error": f"content type {ctype!r}"}])
            return self.reply(415, b"protobuf only\n", "text/plain")
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as e:
            self.write([{"error": f"decode: {e}"}])
            return self.reply(400, b"bad protobuf\n", "text/plain")
        self.write(list(spans_of(request)))
        self.reply(200, ExportTraceServiceResponse().SerializeToString())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    Handler.out_path = a.out
    open(a.out, "a").close()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("READY", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
