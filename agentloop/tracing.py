"""OpenTelemetry traces of runs, following the GenAI semantic conventions (``agentloop[otel]``).

Off unless :func:`configure` turns it on (``agentloop run --otel``, or
``OTEL_EXPORTER_OTLP_ENDPOINT`` set when a run starts). Off, every hook here is one check
of a module global. On, a run is a tree of spans::

    agentloop.run text2sql
      invoke_agent iad                      one per task
        agentloop.memory.retrieve           with concept memory
        agentloop.round                     one per round
          chat gpt-4o-mini                  one per backend call (TracingBackend)
          agentloop.verify                  one per verified candidate
            execute_tool sql                the SQL tool, as the verifier runs it

Backend-call spans carry the ``gen_ai.*`` request and usage attributes. Prompt and
completion text are recorded only when the user opts in (``--otel-content``, or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``), as the conventions require.
Nothing here reads or records credentials: a server is recorded by host and port only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

from agentloop.errors import MissingExtraError
from agentloop.types import Backend, ChatRequest, ChatResponse, ScorePrompt, ScoreResponse

__all__ = [
    "CONTENT_ENV",
    "TracingBackend",
    "capture_content",
    "configure",
    "configure_from_env",
    "disable",
    "enabled",
    "end_round",
    "flush",
    "round_scope",
    "set_attributes",
    "span",
    "verify",
]

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_SCOPE = "agentloop"

# The tracer while tracing is on; None is "off", and every hook checks only this.
_tracer: Any = None
_capture = False
_provider: Any = None  # the SDK provider configure() made (flushed and shut down here), if any
_NULL: AbstractContextManager[None] = nullcontext()
_warned = False
log = logging.getLogger(__name__)


def enabled() -> bool:
    return _tracer is not None


def capture_content() -> bool:
    """Whether prompt and completion text go into spans (an opt-in)."""
    return _tracer is not None and _capture


def configure(*, provider: Any = None, content: bool | None = None) -> None:
    """Turn tracing on.

    ``provider`` is an OpenTelemetry ``TracerProvider`` (tests pass one with an in-memory
    exporter). Without it, an application's own global provider is used when it set one;
    else agentloop makes an SDK provider that batches spans to OTLP/HTTP, configured by the
    standard ``OTEL_EXPORTER_OTLP_*`` variables (default ``http://localhost:4318``) and named
    by ``OTEL_SERVICE_NAME`` (default ``agentloop``). ``content`` records prompt and
    completion text (default: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """
    global _tracer, _capture, _provider
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise MissingExtraError("opentelemetry-sdk", "otel") from exc
    if provider is None:
        current = trace.get_tracer_provider()
        if type(current).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
            provider = _sdk_provider()
            trace.set_tracer_provider(provider)
            _provider = provider
        else:
            provider = current
    _tracer = provider.get_tracer(_SCOPE)
    _capture = _env_true(CONTENT_ENV) if content is None else content


def configure_from_env() -> bool:
    """Turn tracing on if an OTLP endpoint is set in the environment; returns whether it is on.

    Without ``agentloop[otel]`` installed it warns once and leaves tracing off: a variable set
    for other programs must not stop a run (``--otel`` asks for tracing, and fails instead).
    """
    global _warned
    if _tracer is None and any(os.environ.get(k) for k in _ENDPOINT_ENVS):
        try:
            configure()
        except MissingExtraError as exc:
            if not _warned:
                _warned = True
                log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but tracing is off: %s", exc)
    return _tracer is not None


def flush(timeout_ms: int = 10_000) -> None:
    """Export every finished span now (a short-lived process exits before a batch would go)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def disable() -> None:
    """Turn tracing off (flushing and shutting down a provider :func:`configure` made)."""
    global _tracer, _provider, _capture
    if _provider is not None:
        _provider.shutdown()
    _tracer, _provider, _capture = None, None, False


def span(name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False) -> Any:
    """A context manager: a span that is current inside the block, or nothing when tracing is off.

    ``None`` attribute values are left out. An exception escaping the block marks the span
    as an error, with its type as ``error.type`` (never its message).
    """
    if _tracer is None:
        return _NULL
    return _span(name, attributes, client)


@contextmanager
def _span(name: str, attributes: Mapping[str, Any] | None, client: bool) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
    # Exceptions are recorded by type only: a message may quote a URL with its credentials.
    with _tracer.start_as_current_span(
        name, attributes=_clean(attributes), kind=kind, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("error.type", type(exc).__qualname__)
            current.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise


def set_attributes(target: Any, attributes: Mapping[str, Any]) -> None:
    """Add attributes to a span from :func:`span` (a no-op for the ``None`` it yields when off)."""
    if target is not None:
        target.set_attributes(_clean(attributes))


async def verify(task: Any, candidate: Any) -> Any:
    """``task.verify(candidate)`` inside a verifier span that records the verdict's score.

    Callers check :func:`enabled` first, so that with tracing off a candidate costs one call.
    """
    with span("agentloop.verify", {"agentloop.candidate": candidate.index}) as current:
        verdict = await task.verify(candidate)
        set_attributes(current, {"agentloop.verify.score": getattr(verdict, "score", None)})
        return verdict


# --- rounds: one span across the propose, verify and select nodes --------------------------


def round_scope(ctx: Any, number: int | None = None) -> Any:
    """Make the round's span current inside the block; ``number`` starts a new round span.

    The span lives on the loop context (``ctx.trace_round``) because a round spans several
    graph nodes; :func:`end_round` ends it.
    """
    if _tracer is None:
        return _NULL
    return _round_scope(ctx, number)


@contextmanager
def _round_scope(ctx: Any, number: int | None) -> Iterator[Any]:
    from opentelemetry import trace

    if number is not None:
        end_round(ctx)
        ctx.trace_round = _tracer.start_span("agentloop.round", attributes={"agentloop.round": number + 1})
    current = ctx.trace_round
    if current is None:
        yield None
        return
    with trace.use_span(current, end_on_exit=False):
        yield current


def end_round(ctx: Any, attributes: Mapping[str, Any] | None = None) -> None:
    """End the round's span (if one is open), adding ``attributes`` first."""
    if _tracer is None:
        return
    current = getattr(ctx, "trace_round", None)
    if current is None:
        return
    if attributes:
        current.set_attributes(_clean(attributes))
    current.end()
    ctx.trace_round = None


# --- backend calls ---------------------------------------------------------------------------


class TracingBackend(Backend):
    """Wraps a backend so that every call is a GenAI client span (``chat MODEL``).

    Capabilities and attributes are the wrapped backend's, so suites and policies see
    the same backend.
    """

    def __init__(self, inner: Backend):
        self._inner = inner
        self.id = inner.id
        self.constraint_kinds = inner.constraint_kinds
        self.supports_score = inner.supports_score
        provider, _, rest = inner.id.partition(":")
        self._provider_name = provider or inner.id
        self._model = str(getattr(inner, "model", "") or rest or inner.id)
        self._server = _server(getattr(inner, "base_url", None))

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def _constraint_hint(self) -> str:
        return self._inner._constraint_hint()

    def _attributes(self, operation: str) -> dict[str, Any]:
        return {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": self._provider_name,
            "gen_ai.request.model": self._model,
            **self._server,
        }

    async def generate(self, request: ChatRequest) -> ChatResponse:
        operation = "text_completion" if request.raw_prompt is not None else "chat"
        attributes = self._attributes(operation) | {
            "gen_ai.request.temperature": request.temperature,
            "gen_ai.request.top_p": request.top_p,
            "gen_ai.request.max_tokens": request.max_tokens,
            "gen_ai.request.choice.count": request.n,
            "gen_ai.request.seed": request.seed,
            "gen_ai.request.stop_sequences": list(request.stop) or None,
            "agentloop.request.constraint": request.constraint.kind
            if request.constraint is not None
            else None,
        }
        if _capture:
            attributes["gen_ai.input.messages"] = _input_messages(request)
        with span(f"{operation} {self._model}", attributes, client=True) as s:
            response = await self._inner.generate(request)
            u = response.usage
            reasons = [c.finish_reason for c in response.completions if c.finish_reason]
            out = {
                "gen_ai.response.model": response.model or None,
                "gen_ai.response.finish_reasons": reasons or None,
                "gen_ai.usage.input_tokens": u.prompt_tokens,
                "gen_ai.usage.output_tokens": u.completion_tokens,
                "agentloop.response.choices": len(response.completions),
                "agentloop.response.cached": u.cached or None,
            }
            if _capture:
                out["gen_ai.output.messages"] = _output_messages(response)
            set_attributes(s, out)
            return response

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        attributes = self._attributes("text_completion") | {
            "agentloop.request.kind": "score",
            "agentloop.request.continuations": len(continuations),
        }
        with span(f"text_completion {self._model}", attributes, client=True) as s:
            response = await self._inner.score(prompt, continuations)
            set_attributes(s, {"gen_ai.usage.input_tokens": response.usage.prompt_tokens})
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __repr__(self) -> str:
        return f"<TracingBackend {self._inner!r}>"


# --- internals -------------------------------------------------------------------------------


def _sdk_provider() -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise MissingExtraError("opentelemetry-exporter-otlp-proto-http", "otel") from exc
    name = os.environ.get("OTEL_SERVICE_NAME") or "agentloop"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {k: v for k, v in attributes.items() if v is not None}


def _server(base_url: Any) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of a base URL: never its user, password, path or query."""
    if not isinstance(base_url, str) or not base_url:
        return {}
    try:
        parts = urlsplit(base_url)
        return {"server.address": parts.hostname, "server.port": parts.port}
    except ValueError:
        return {}


def _input_messages(request: ChatRequest) -> str:
    if request.raw_prompt is not None:
        messages = [{"role": "user", "parts": [{"type": "text", "content": request.raw_prompt}]}]
    else:
        messages = [
            {"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in request.messages
        ]
    return json.dumps(messages, ensure_ascii=False)


def _output_messages(response: ChatResponse) -> str:
    return json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": c.text}],
                "finish_reason": c.finish_reason or "stop",
            }
            for c in response.completions
        ],
        ensure_ascii=False,
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
