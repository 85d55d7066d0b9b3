"""The Anthropic backend at the HTTP layer: the real SDK, replaying Messages API responses.

No Anthropic server is reachable here, so an ``httpx2.MockTransport`` (the HTTP
library the SDK is built on) answers with JSON fixtures from
``tests/fixtures/anthropic/`` and records every request the SDK sends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agentloop.backends import BackendOptions, ChatRequest, Message, resolve_backend
from agentloop.backends.anthropic_backend import AnthropicBackend, anthropic_cost_usd, message_params
from agentloop.errors import BackendError, BackendUnavailableError, MissingAPIKeyError

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
MODEL = "claude-sonnet-5-5"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class FakeAPI:
    """Answers from a script of (status, fixture, headers); the last entry repeats."""

    def __init__(self, *script: tuple[int, str, dict[str, str]] | Callable[[dict], tuple[int, str]]):
        self.script = list(script)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if callable(step):
            status, name = step(json.loads(request.content))
            headers: dict[str, str] = {}
        else:
            status, name, headers = step
        return httpx2.Response(status, json=fixture(name), headers=headers)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def ok(name: str = "message_end_turn") -> tuple[int, str, dict[str, str]]:
    return (200, name, {})


def make_backend(api: Callable[[httpx2.Request], httpx2.Response], **options: Any) -> AnthropicBackend:
    # MockTransport holds no sockets, so a test that fails before aclose() leaks nothing.
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(api))
    return AnthropicBackend(MODEL, BackendOptions(api_key="sk-ant-test", **options), http_client=client)


async def test_system_prompt_goes_in_the_system_field():
    api = FakeAPI(ok())
    b = make_backend(api)
    req = ChatRequest(
        messages=[Message("system", "Answer tersely."), Message("user", "Capital of France?")],
        max_tokens=16,
        temperature=0.2,
        seed=7,
    )
    r = await b.generate(req)
    assert r.texts == ["Paris is the capital of France."]
    assert r.completions[0].finish_reason == "stop"
    (sent,) = api.bodies
    assert sent["system"] == "Answer tersely."
    assert sent["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert sent["model"] == MODEL and sent["max_tokens"] == 16 and sent["temperature"] == 0.2
    # top_p only when it differs from 1.0; seed has no API field and is dropped.
    assert "top_p" not in sent and "seed" not in sent
    assert api.requests[0].url.path == "/v1/messages"
    headers = api.requests[0].headers
    assert "sk-ant-test" in headers.get("x-api-key", "") + headers.get("authorization", "")
    await b.aclose()


async def test_n_is_concurrent_requests_with_summed_usage():
    api = FakeAPI(ok())
    b = make_backend(api)
    r = await b.generate(ChatRequest.from_prompt("Capital of France?", n=3, max_tokens=16))
    assert len(api.requests) == 3 and len(r.completions) == 3
    assert r.usage.prompt_tokens == 3 * 21 and r.usage.completion_tokens == 3 * 9
    assert r.usage.llm_calls == 3
    assert [c.completion_tokens for c in r.completions] == [9, 9, 9]
    assert r.usage.cost_usd == pytest.approx(3 * (21 * 2.00 + 9 * 10.00) / 1e6)
    await b.aclose()


async def test_stop_maps_to_stop_sequences_and_finish_reasons():
    api = FakeAPI(ok("message_stop_sequence"), ok("message_max_tokens"))
    b = make_backend(api)
    r = await b.generate(ChatRequest.from_prompt("SQL?", stop=[";", "\n\n"], max_tokens=64))
    assert api.bodies[0]["stop_sequences"] == [";", "\n\n"]
    assert r.completions[0].finish_reason == "stop"
    r = await b.generate(ChatRequest.from_prompt("A story", max_tokens=8))
    assert "stop_sequences" not in api.bodies[1]
    assert r.completions[0].finish_reason == "length"
    await b.aclose()


async def test_rate_limit_is_retried_after_the_server_delay():
    api = FakeAPI((429, "error_rate_limit", {"retry-after-ms": "20"}), ok())
    b = make_backend(api, max_retries=2)
    start = time.monotonic()
    r = await b.generate(ChatRequest.from_prompt("Hi", max_tokens=8))
    assert len(api.requests) == 2 and r.texts == ["Paris is the capital of France."]
    assert time.monotonic() - start < 5
    await b.aclose()


async def test_rejected_key_is_a_clear_error_and_not_retried():
    api = FakeAPI((401, "error_authentication", {}))
    b = make_backend(api, max_retries=3)
    with pytest.raises(
        BackendError, match=r"HTTP 401 authentication_error: invalid x-api-key.*ANTHROPIC_API_KEY"
    ):
        await b.generate(ChatRequest.from_prompt("Hi", max_tokens=8))
    assert len(api.requests) == 1
    await b.aclose()


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY"):
        resolve_backend(f"anthropic:{MODEL}")


async def test_model_that_refuses_temperature_is_retried_without_it():
    def refuse_sampling(body: dict) -> tuple[int, str]:
        if "temperature" in body or "top_p" in body or "top_k" in body:
            return 400, "error_temperature_deprecated"
        return 200, "message_end_turn"

    api = FakeAPI(refuse_sampling)
    b = make_backend(api)
    req = ChatRequest.from_prompt("Hi", max_tokens=8, top_p=0.9, extra={"top_k": 20})
    r = await b.generate(req)
    assert r.texts == ["Paris is the capital of France."]
    assert len(api.requests) == 2 and "temperature" in api.bodies[0]
    assert not {"temperature", "top_p", "top_k"} & set(api.bodies[1])
    # Remembered: the next call leaves them out from the start.
    await b.generate(req)
    assert len(api.requests) == 3
    await b.aclose()


async def test_temperature_with_top_p_falls_back_to_temperature():
    def one_of_them(body: dict) -> tuple[int, str]:
        if "temperature" in body and "top_p" in body:
            return 400, "error_temperature_and_top_p"
        return 200, "message_end_turn"

    api = FakeAPI(one_of_them)
    b = make_backend(api)
    await b.generate(ChatRequest.from_prompt("Hi", max_tokens=8, temperature=0.5, top_p=0.9))
    assert api.bodies[1]["temperature"] == 0.5 and "top_p" not in api.bodies[1]
    await b.aclose()


async def test_other_bad_requests_surface_the_server_message():
    api = FakeAPI((400, "error_invalid_request", {}))
    b = make_backend(api)
    with pytest.raises(BackendError, match="HTTP 400 invalid_request_error: messages: at least one message"):
        await b.generate(ChatRequest.from_prompt("Hi", max_tokens=8))
    assert len(api.requests) == 1 and not b.omitted
    await b.aclose()


async def test_unreachable_api_is_backend_unavailable():
    def down(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    b = make_backend(down, max_retries=0, base_url="http://127.0.0.1:9/proxy")
    with pytest.raises(BackendUnavailableError, match=r"http://127.0.0.1:9/proxy.*--base-url"):
        await b.generate(ChatRequest.from_prompt("Hi", max_tokens=8))
    await b.aclose()


async def test_base_url_option_is_honoured():
    api = FakeAPI(ok())
    b = make_backend(api, base_url="http://proxy.internal:8080/anthropic")
    await b.generate(ChatRequest.from_prompt("Hi", max_tokens=8))
    assert str(api.requests[0].url) == "http://proxy.internal:8080/anthropic/v1/messages"
    await b.aclose()


def test_raw_prompt_is_one_user_message_and_temperature_is_clamped():
    req = ChatRequest(raw_prompt="Complete: 2 + 2 =", max_tokens=4, temperature=1.5)
    params = message_params(req, MODEL)
    assert params["messages"] == [{"role": "user", "content": "Complete: 2 + 2 ="}]
    # 1.5 is clamped to Anthropic's maximum, 1.0, which is also the API default: not sent.
    assert "system" not in params and "extra_body" not in params
    assert message_params(req.replace(temperature=0.3), MODEL)["extra_body"] == {"temperature": 0.3}


def test_prices_cover_cache_reads_and_unknown_models():
    assert anthropic_cost_usd("claude-haiku-4-5", 1_000_000, 1_000_000) == pytest.approx(6.0)
    assert anthropic_cost_usd("claude-haiku-4-5-20251001", 0, 0, cache_read=1_000_000) == pytest.approx(0.1)
    assert anthropic_cost_usd("claude-unknown", 10, 10) is None
