"""OTLP trace export, end to end: a server started with `--otlp-endpoint`
sends the invoke path's spans over OTLP/HTTP protobuf to a collector (here a
small one in the test, decoding `ExportTraceServiceRequest`s), continuing
the trace of a caller's W3C `traceparent`; a collector that is not there
costs invokes nothing."""

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from conftest import Server, create, free_port, unique_name, wait_for, wait_ready


class Collector:
    """An OTLP/HTTP receiver of traces on a free port, keeping every span."""

    def __init__(self):
        self.spans = []
        self.resources = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                if ok:
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    with collector.lock:
                        for rs in request.resource_spans:
                            collector.resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
                            for ss in rs.scope_spans:
                                collector.spans.extend(ss.spans)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def attributes(span):
    return {a.key: (a.value.string_value or a.value.bool_value) for a in span.attributes}


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


@pytest.fixture
def otel_env(monkeypatch):
    """The standard variables the server reads: a short batch delay, so
    that spans arrive within the test, and a service name."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
                 "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nimbus-e2e")


def started(tmp_path, endpoint):
    return Server(tmp_path / "data", args=["--otlp-endpoint", endpoint]).start()


def invoke_traced(lam, name, traceparent):
    def add(request, **_):
        request.headers["traceparent"] = traceparent

    lam.meta.events.register("before-sign.lambda.Invoke", add)
    try:
        return lam.invoke(FunctionName=name, Payload=b'{"n": 1}')
    finally:
        lam.meta.events.unregister("before-sign.lambda.Invoke", add)


def test_invoke_spans_reach_the_collector_in_the_callers_trace(tmp_path, collector, otel_env):
    s = started(tmp_path, collector.url)
    try:
        lam = s.client()
        name = unique_name("traced")
        create(lam, name)
        wait_ready(lam, name)
        trace_id, caller = secrets.token_bytes(16), secrets.token_bytes(8)
        r = invoke_traced(lam, name, f"00-{trace_id.hex()}-{caller.hex()}-01")
        assert r["StatusCode"] == 200 and "FunctionError" not in r, r
        request_id = r["ResponseMetadata"]["RequestId"]

        def whole_trace():
            spans = collector.trace(trace_id)
            names = {sp.name for sp in spans}
            return spans if {"request", "worker", "run", "runtime", "reply", "cold_start"} <= names else None

        spans = wait_for(whole_trace, "the invoke's spans at the collector")
        by_id = {sp.span_id: sp for sp in spans}
        [request] = [sp for sp in spans if sp.name == "request"]
        assert request.parent_span_id == caller
        assert attributes(request)["request_id"] == request_id
        assert attributes(request)["function"] == name
        # Every other span hangs, through its parents, from the request span.
        for sp in spans:
            chain = sp
            while chain.span_id != request.span_id:
                assert chain.parent_span_id in by_id, (sp.name, chain.name)
                chain = by_id[chain.parent_span_id]
            assert request.start_time_unix_nano <= sp.start_time_unix_nano <= sp.end_time_unix_nano

        def child(parent, span_name):
            [found] = [sp for sp in spans if sp.name == span_name and sp.parent_span_id == parent.span_id]
            return found

        [worker] = [sp for sp in spans if sp.name == "worker"]
        assert attributes(worker)["function"] == name
        child(worker, "admit")
        cold = child(worker, "cold_start")
        # The first invoke is a cold start: from a template, or a new sandbox.
        start = child(cold, "specialize" if attributes(cold)["template"] else "spawn")
        assert start.end_time_unix_nano <= cold.end_time_unix_nano
        child(cold, "init")
        run = child(worker, "run")
        assert attributes(run)["cold"] is True
        runtime = child(run, "runtime")
        assert runtime.start_time_unix_nano >= cold.end_time_unix_nano
        reply = child(request, "reply")
        assert reply.start_time_unix_nano >= runtime.end_time_unix_nano
        assert {"service.name": "nimbus-e2e"}.items() <= collector.resources[0].items()

        # A second invoke without a traceparent is a trace of its own, warm.
        r = lam.invoke(FunctionName=name, Payload=b"{}")
        request_id = r["ResponseMetadata"]["RequestId"]

        def warm_trace():
            with collector.lock:
                mine = [sp for sp in collector.spans if sp.name == "request"
                        and attributes(sp).get("request_id") == request_id]
            return mine and [sp for sp in collector.trace(mine[0].trace_id)]

        warm = wait_for(lambda: (lambda t: t if t and any(sp.name == "run" for sp in t) else None)(warm_trace()),
                        "the warm invoke's spans")
        assert {sp.trace_id for sp in warm} != {trace_id}
        assert not any(sp.name == "cold_start" for sp in warm)
        assert [attributes(sp)["cold"] for sp in warm if sp.name == "run"] == [False]
    finally:
        s.stop()


def test_an_absent_collector_costs_invokes_nothing(tmp_path, otel_env):
    closed = f"http://127.0.0.1:{free_port()}"
    s = started(tmp_path, closed)
    try:
        lam = s.client()
        name = unique_name("untraced")
        create(lam, name)
        wait_ready(lam, name)
        for i in range(5):
            r = lam.invoke(FunctionName=name, Payload=json.dumps({"i": i}).encode())
            assert r["StatusCode"] == 200 and "FunctionError" not in r, r
            r["Payload"].read()
        # The spans the collector could not take are counted in a warning.
        wait_for(lambda: "cannot send traces to the OTLP collector" in s.output(), "the export warning")
        assert s.proc.poll() is None
    finally:
        s.stop()


def test_the_traces_endpoint_variable_wins_over_the_base_url(tmp_path, collector, otel_env, monkeypatch):
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the full URL and, as in every
    OpenTelemetry SDK, wins over the base one (here a closed port)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.url + "/v1/traces")
    s = started(tmp_path, f"http://127.0.0.1:{free_port()}")
    try:
        lam = s.client()
        name = unique_name("signal")
        create(lam, name)
        wait_ready(lam, name)
        trace_id = secrets.token_bytes(16)
        invoke_traced(lam, name, f"00-{trace_id.hex()}-{secrets.token_bytes(8).hex()}-01")
        wait_for(lambda: any(sp.name == "request" for sp in collector.trace(trace_id)), "the invoke's request span")
    finally:
        s.stop()


def test_an_https_collector_is_refused_at_the_start(tmp_path, otel_env):
    """The build sends plain HTTP only: an https endpoint would fail every
    export, so the node says so and does not start."""
    with pytest.raises(RuntimeError, match="plain HTTP only"):
        started(tmp_path, "https://127.0.0.1:4318")
