"""The OpenAI-compatible backend against a real ``transformers serve`` (no mocks)."""

from __future__ import annotations

import json
import time

import pytest

from agentloop.backends import BackendOptions, ChatRequest, resolve_backend
from agentloop.backends.cache import CachedBackend
from agentloop.backends.openai_backend import OpenAIBackend, openai_cost_usd
from agentloop.errors import BackendError, BackendUnavailableError, MissingAPIKeyError

# transformers serve samples only when the model's generation config says so, and
# SmolLM2's does not: ask for it through `extra` (sent as extra_body).
SAMPLE = {"generation_config": json.dumps({"do_sample": True})}


@pytest.fixture
async def backend(transformers_server, embedded_model_dir):
    # The server is pinned to the model path, so that path is the model name.
    b = OpenAIBackend(str(embedded_model_dir), BackendOptions(base_url=transformers_server))
    yield b
    await b.aclose()


@pytest.mark.server
@pytest.mark.model
async def test_server_that_ignores_n_is_topped_up(backend):
    r = await backend.generate(ChatRequest.from_prompt("Name a fruit.", n=2, max_tokens=8, **_sampled()))
    assert len(r.completions) == 2
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    # One n=2 request came back with a single choice, so one n=1 request topped it up.
    assert r.usage.llm_calls == 2
    assert backend.server_ignores_n
    assert r.usage.completion_tokens == sum(c.completion_tokens for c in r.completions)

    # Now the backend knows: n=3 goes straight to three concurrent n=1 requests.
    r = await backend.generate(ChatRequest.from_prompt("Name a fruit.", n=3, max_tokens=8, **_sampled()))
    assert len(r.completions) == 3
    assert r.usage.llm_calls == 3


@pytest.mark.server
@pytest.mark.model
async def test_greedy_n_is_one_request_repeated(backend):
    r = await backend.generate(ChatRequest.from_prompt("Name a fruit.", n=3, max_tokens=6, temperature=0.0))
    assert r.usage.llm_calls == 1
    assert len(r.completions) == 3 and len(set(r.texts)) == 1


@pytest.mark.server
@pytest.mark.model
async def test_raw_prompt_uses_the_completions_endpoint(backend):
    raw = await backend.generate(
        ChatRequest(raw_prompt="The capital of France is", max_tokens=8, temperature=0)
    )
    chat = await backend.generate(
        ChatRequest.from_prompt("The capital of France is", max_tokens=8, temperature=0)
    )
    assert raw.texts[0].strip()
    assert raw.completions[0].finish_reason in ("stop", "length")
    # No chat template around the raw prompt: only its own handful of tokens.
    assert 0 < raw.usage.prompt_tokens < 10 < chat.usage.prompt_tokens


@pytest.mark.server
@pytest.mark.model
async def test_stop_ends_the_text_without_the_stop_string(backend):
    req = ChatRequest(raw_prompt="1, 2, 3, 4, 5,", max_tokens=16, temperature=0)
    full = await backend.generate(req)
    assert "8" in full.texts[0]  # the model does count on
    r = await backend.generate(req.replace(stop=("8",)))
    assert r.completions[0].finish_reason == "stop"
    assert r.texts[0].rstrip().endswith("7,") and "8" not in r.texts[0]


@pytest.mark.server
@pytest.mark.model
async def test_greedy_and_seeded_sampling_repeat(backend):
    greedy = ChatRequest.from_prompt("Tell me a word.", max_tokens=10, temperature=0.0, seed=1)
    assert (await backend.generate(greedy)).texts == (await backend.generate(greedy)).texts
    # The server seeds torch per request, so one sampled request at a time repeats.
    seeded = ChatRequest.from_prompt("Tell me a word.", max_tokens=10, seed=5, **_sampled())
    assert (await backend.generate(seeded)).texts == (await backend.generate(seeded)).texts


@pytest.mark.server
@pytest.mark.model
async def test_server_error_names_status_and_message(backend):
    # transformers serve rejects fields it does not know, with a 422.
    with pytest.raises(BackendError, match=r"HTTP 422.*top_k"):
        await backend.generate(ChatRequest.from_prompt("Hi", max_tokens=4, extra={"top_k": 5}))


@pytest.mark.server
@pytest.mark.model
async def test_cache_answers_repeat_at_zero_tokens(backend, tmp_path):
    cached = CachedBackend(backend, tmp_path / "cache.sqlite")
    req = ChatRequest.from_prompt("Name a colour.", max_tokens=6, temperature=0.0)
    first = await cached.generate(req)
    second = await cached.generate(req)
    assert first.usage.total_tokens > 0 and not first.usage.cached
    assert second.usage.cached and second.usage.total_tokens == 0 and second.usage.llm_calls == 0
    assert second.texts == first.texts
    cached._db.close()  # not cached.aclose(): the backend fixture closes the client


@pytest.mark.server
@pytest.mark.model
def test_generate_sync_works_twice(transformers_server, embedded_model_dir):
    # Each call runs its own event loop; the client must follow it.
    b = OpenAIBackend(str(embedded_model_dir), BackendOptions(base_url=transformers_server))
    req = ChatRequest.from_prompt("Hi", max_tokens=4, temperature=0.0)
    assert b.generate_sync(req).texts == b.generate_sync(req).texts


async def test_unreachable_server_fails_fast_and_says_what_to_check(unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}/v1"  # nothing listens there
    b = OpenAIBackend("m", BackendOptions(base_url=url, max_retries=1))
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError) as err:
        await b.generate(ChatRequest.from_prompt("Hi", max_tokens=4))
    assert time.monotonic() - start < 10
    assert url in str(err.value) and "--base-url" in str(err.value)
    await b.aclose()


def test_missing_key_for_the_openai_endpoint_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        resolve_backend("openai:gpt-4o-mini")


def test_local_server_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    b = resolve_backend("openai:some-model")
    assert isinstance(b, OpenAIBackend) and not b.official and b.id == "openai:some-model"


def test_prices_are_per_million_and_unknown_models_cost_none():
    assert openai_cost_usd("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert openai_cost_usd("gpt-4o-mini-2024-07-18", 2_000_000, 0) == pytest.approx(0.30)
    assert openai_cost_usd("my-local-model", 10, 10) is None


def _sampled() -> dict:
    return {"temperature": 1.0, "extra": SAMPLE}
