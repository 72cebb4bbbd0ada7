"""A tiny OTLP/HTTP trace collector for the world-service end-to-end benchmark (benchmark-only).

    python _otlp_sink.py PORT RECORD_FILE

Listens on ``127.0.0.1:PORT``, answers every ``POST /v1/traces`` with ``200`` and an empty
``ExportTraceServiceResponse`` (HTTP/1.1 keep-alive, as a collector does), and appends one line
per export -- the body size in bytes and the number of spans in it -- to ``RECORD_FILE``. It runs
in its own process so that receiving spans costs the load generator nothing. Stopped by SIGTERM.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TextIO

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    record: ClassVar[TextIO]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        ok = self.path.rstrip("/").endswith("/v1/traces")
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
        if ok:
            request = ExportTraceServiceRequest.FromString(body)
            spans = sum(
                len(scope.spans)
                for resource in request.resource_spans
                for scope in resource.scope_spans
            )
            self.record.write(f"{len(body)} {spans}\n")
            self.record.flush()

    def log_message(self, format: str, *args: Any) -> None:
        return


def main(argv: list[str]) -> int:
    port, record_path = int(argv[1]), argv[2]
    with open(record_path, "a", encoding="utf-8") as record:
        Handler.record = record
        with ThreadingHTTPServer(("127.0.0.1", port), Handler) as server:
            server.daemon_threads = True
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
