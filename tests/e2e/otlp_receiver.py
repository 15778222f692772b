"""An OTLP/HTTP collector in the test process: `POST /v1/traces` and `/v1/metrics` with
protobuf bodies, decoded with the official `opentelemetry-proto` package. Keeps every export
(decoded message + request headers) for the tests to read, and can be told to answer slowly
or with an error, to prove telemetry never delays or fails a gateway request."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                          ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

KINDS = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


class OtlpReceiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.exports = []  # (path, headers dict, decoded message)
        self.status = 200
        self.delay_s = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # head and body are separate writes (py_origin.py)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                kind = KINDS.get(self.path)
                if kind is None:
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                request_type, response_type = kind
                message = request_type.FromString(body)  # raises on a malformed export: a test failure
                with receiver.lock:
                    receiver.exports.append((self.path, {k.lower(): v for k, v in self.headers.items()}, message))
                    status = receiver.status
                payload = response_type().SerializeToString() if status == 200 else b""
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def behave(self, status=200, delay_s=0.0):
        self.status, self.delay_s = status, delay_s

    def of(self, path):
        with self.lock:
            return [(h, m) for p, h, m in self.exports if p == path]

    def spans(self):
        """Every exported span with its resource: [(resource attrs dict, span)]."""
        out = []
        for _, request in self.of("/v1/traces"):
            for rs in request.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out

    def spans_of_trace(self, trace_id_hex):
        return [s for _, s in self.spans() if s.trace_id.hex() == trace_id_hex]

    def metrics(self):
        """Every exported metric: [(resource attrs dict, metric)]."""
        out = []
        for _, request in self.of("/v1/metrics"):
            for rm in request.resource_metrics:
                resource = attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    out.extend((resource, m) for m in sm.metrics)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attrs(key_values) -> dict:
    return {kv.key: value(kv.value) for kv in key_values}
