"""OpenTelemetry traces: the span tree and GenAI attributes (SDK in-memory exporter), content only on
opt-in, no planted secret in any span, and one real OTLP/HTTP export decoded by a local receiver.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs agentloop[otel]")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from agentloop import tracing  # noqa: E402
from agentloop.backends import ChatRequest, FunctionBackend  # noqa: E402
from agentloop.runs.runner import RunSpec, run_suite  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "sk-PLANTED-0123456789abcdef"


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


view_runs = load("view_runs")


@pytest.fixture()
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.configure(provider=provider, content=False)
    try:
        yield memory
    finally:
        tracing.disable()


def by_name(spans: Any, prefix: str) -> list[Any]:
    return [s for s in spans if s.name.startswith(prefix)]


def children(spans: Any, parent: Any) -> list[Any]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_off_by_default_and_free() -> None:
    assert not tracing.enabled()
    assert tracing.span("x") is tracing.span("y")  # one shared no-op context
    assert tracing.round_scope(object(), 0) is tracing.span("z")


def test_span_tree_and_genai_attributes(exporter: InMemorySpanExporter, tmp_path: Path) -> None:
    spec = RunSpec(graph="iad", backend="function", limit=3, n=2, rounds=2, concurrency=2, max_tokens=64)
    backend = view_runs.text2sql_backend({1}, after_feedback={0})
    asyncio.run(run_suite(spec, run_dir=tmp_path / "run", backend=backend))
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "agentloop.run")
    assert run.name == "agentloop.run text2sql" and run.parent is None
    tasks = children(spans, run)
    assert sorted(t.attributes["agentloop.task.id"] for t in tasks) == ["dev-0", "dev-1", "dev-2"]
    assert {t.name for t in tasks} == {"invoke_agent iad"}
    for task in tasks:
        rounds = children(spans, task)
        assert {r.name for r in rounds} == {"agentloop.round"}
        assert len(rounds) == task.attributes["agentloop.rounds"]
        for rnd in rounds:
            calls = by_name(children(spans, rnd), "chat ")
            verifies = by_name(children(spans, rnd), "agentloop.verify")
            assert calls and len(verifies) == rnd.attributes["agentloop.round.candidates"] == 2
    # The exec verifier runs a candidate's SQL (and the gold's) through the tool, once per distinct
    # query in a task: every tool span is inside a verifier span.
    verify_ids = {v.context.span_id for v in by_name(spans, "agentloop.verify")}
    tools = by_name(spans, "execute_tool sql")
    assert tools and all(t.parent.span_id in verify_ids for t in tools)
    assert tools[0].attributes["gen_ai.tool.name"] == "sql"
    (first, *_) = by_name(spans, "chat ")
    a = first.attributes
    assert first.name == f"{a['gen_ai.operation.name']} {a['gen_ai.request.model']}" == "chat function"
    assert a["gen_ai.provider.name"] == "function"
    assert a["gen_ai.request.temperature"] == 0.7 and a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.choice.count"] == 2
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert first.kind.name == "CLIENT"
    # No text without the opt-in: neither the prompt, the completion nor the SQL.
    for s in spans:
        assert not {"gen_ai.input.messages", "gen_ai.output.messages", "db.query.text"} & set(s.attributes)


def test_content_only_on_opt_in_and_no_secret_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    otel_run = load("otel_run")
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    tracing.configure(provider=provider, content=True)
    try:
        asyncio.run(otel_run.main(str(tmp_path / "run"), KEY))
    finally:
        tracing.disable()
    spans = memory.get_finished_spans()
    calls = by_name(spans, "chat gpt-test")
    assert calls and all("Question:" in s.attributes["gen_ai.input.messages"] for s in calls)
    assert "SELECT count(*) FROM singer" in calls[0].attributes["gen_ai.output.messages"]
    assert calls[0].attributes["server.address"] == "127.0.0.1" and calls[0].attributes["server.port"] == 9
    assert by_name(spans, "execute_tool sql")[0].attributes["db.query.text"].startswith("SELECT")
    assert KEY not in everything(spans)


def test_memory_retrieval_has_its_own_span(exporter: InMemorySpanExporter, tmp_path: Path) -> None:
    def model(request: ChatRequest) -> str:
        if "memory of lessons" in request.messages[-1].content:
            lesson = {
                "title": "Questions about singers",
                "situation": "a question about singers, their name, country and age",
                "suggestion": "Read the singer table.",
                "cues": ["singers", "age", "country"],
                "kind": "strategy",
            }
            return json.dumps({"concepts": [lesson]})
        return "```sql\nSELECT count(*) FROM singer\n```"

    memory = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    spec = RunSpec(graph="greedy", backend="function", limit=2, concurrency=1, max_tokens=64, memory=memory)
    asyncio.run(run_suite(spec, run_dir=tmp_path / "run", backend=FunctionBackend(model)))
    spans = exporter.get_finished_spans()
    tasks = {t.context.span_id: t for t in by_name(spans, "invoke_agent")}
    retrievals = by_name(spans, "agentloop.memory.retrieve")
    assert len(retrievals) == 2 and all(r.parent.span_id in tasks for r in retrievals)
    assert [r.attributes["agentloop.memory.lessons"] for r in retrievals] == [0, 1]  # task 2 sees task 1's
    # The abstraction that wrote the lesson is a backend call too, inside its task.
    assert len(by_name(spans, "chat function")) == 4


def test_failures_are_marked_by_type_only(exporter: InMemorySpanExporter, tmp_path: Path) -> None:
    def broken(request: ChatRequest) -> str:
        raise RuntimeError(f"cannot reach http://agent:{KEY}@127.0.0.1/v1")

    spec = RunSpec(graph="greedy", backend="function", limit=1, max_tokens=16)
    with pytest.raises(Exception):  # noqa: B017 - the run aborts: every task failed
        asyncio.run(run_suite(spec, run_dir=tmp_path / "run", backend=FunctionBackend(broken)))
    spans = exporter.get_finished_spans()
    (call,) = by_name(spans, "chat ")
    assert call.status.status_code.name == "ERROR" and call.attributes["error.type"]
    assert KEY not in everything(spans)


def everything(spans: Any) -> str:
    """Every name, attribute, event and resource value of ``spans``, as one string to search."""
    parts = []
    for s in spans:
        parts += [s.name, repr(dict(s.attributes or {})), repr(dict(s.resource.attributes))]
        parts += [f"{e.name} {dict(e.attributes or {})}" for e in s.events]
        parts += [str(s.status.description)]
    return "\n".join(parts)


# --- the wire: OTLP/HTTP protobuf to a receiver on 127.0.0.1 --------------------------------------


class Receiver:
    """A minimal OTLP/HTTP trace receiver: decodes each ExportTraceServiceRequest it is sent."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.requests: list[Any] = []
        self.raw: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                receiver.raw.append(body)
                receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def spans(self) -> list[tuple[Any, Any]]:
        """``(resource, span)`` for every span received."""
        return [
            (rs.resource, span)
            for req in self.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_run_exports_over_otlp_http(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "agentloop-test",
            "OPENAI_API_KEY": KEY,
        }
        proc = subprocess.run(
            [sys.executable, str(FIXTURES / "otel_run.py"), str(tmp_path / "run"), KEY],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        receiver.close()
    received = receiver.spans()
    names = [span.name for _, span in received]
    assert names.count("agentloop.run text2sql") == 1 and names.count("invoke_agent iad") == 2
    assert "chat gpt-test" in names and "agentloop.round" in names and "execute_tool sql" in names
    resource, call = next((r, s) for r, s in received if s.name == "chat gpt-test")
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "agentloop-test"
    attrs = {a.key: a.value for a in call.attributes}
    assert attrs["gen_ai.provider.name"].string_value == "openai"
    assert attrs["gen_ai.request.model"].string_value == "gpt-test"
    assert attrs["gen_ai.request.choice.count"].int_value == 2
    assert attrs["gen_ai.usage.input_tokens"].int_value == 50
    assert attrs["gen_ai.usage.output_tokens"].int_value == 14
    assert "gen_ai.input.messages" not in attrs  # no opt-in
    # One trace: every span descends from the run span.
    ids = {span.span_id for _, span in received}
    (root,) = [span for _, span in received if not span.parent_span_id]
    assert all(span.trace_id == root.trace_id for _, span in received)
    assert all(span.parent_span_id in ids for _, span in received if span is not root)
    assert KEY.encode() not in b"".join(receiver.raw)


def test_an_endpoint_without_the_extra_warns_and_runs_untraced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agentloop.errors import MissingExtraError

    def missing(**_: object) -> None:
        raise MissingExtraError("opentelemetry-sdk", "otel")

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(tracing, "configure", missing)
    monkeypatch.setattr(tracing, "_warned", False)
    assert tracing.configure_from_env() is False
    assert tracing.configure_from_env() is False
    assert [r.message for r in caplog.records].count(
        "OTEL_EXPORTER_OTLP_ENDPOINT is set but tracing is off: the 'opentelemetry-sdk' package is not "
        "installed; install it with: pip install 'agentloop[otel]'"
    ) == 1
