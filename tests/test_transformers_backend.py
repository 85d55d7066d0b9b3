"""The in-process transformers backend, on the real embedded SmolLM2-135M model."""

from __future__ import annotations

import asyncio

import pytest

from agentloop.backends import ChatRequest, Message
from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.errors import AgentloopError
from agentloop.models import embedded_gguf_path, ensure_embedded_model

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model_dir():
    return ensure_embedded_model()


@pytest.fixture(scope="module")
def backend(model_dir):
    b = TransformersBackend(model_dir)
    b.load()
    return b


async def test_n_candidates_come_from_one_call_with_usage(backend):
    r = await backend.generate(ChatRequest.from_prompt("Name a fruit.", n=3, max_tokens=8, seed=0))
    assert len(r.completions) == 3
    assert r.usage.llm_calls == 1
    assert r.usage.prompt_tokens > 5
    assert r.usage.completion_tokens == sum(c.completion_tokens for c in r.completions)
    assert all(1 <= c.completion_tokens <= 8 for c in r.completions)
    assert all(c.finish_reason in ("stop", "length") for c in r.completions)


async def test_seed_makes_sampling_repeatable(backend):
    req = ChatRequest.from_prompt(
        "Write a short poem about rain.", n=2, max_tokens=12, temperature=1.0, seed=123
    )
    a = await backend.generate(req)
    b = await backend.generate(req)
    c = await backend.generate(req.replace(seed=124))
    assert a.texts == b.texts
    assert a.texts != c.texts


async def test_max_tokens_and_length_finish(backend):
    req = ChatRequest.from_prompt(
        "Count from one to one hundred.", n=2, max_tokens=5, extra={"ignore_eos": True}
    )
    r = await backend.generate(req)
    assert [c.completion_tokens for c in r.completions] == [5, 5]
    assert all(c.finish_reason == "length" for c in r.completions)


async def test_stop_strings_end_the_text_before_the_stop(backend):
    req = ChatRequest.from_prompt(
        "List the numbers 1 to 5, one per line.", n=2, max_tokens=40, temperature=0.0, stop=("3",)
    )
    r = await backend.generate(req)
    for c in r.completions:
        assert "3" not in c.text
        assert c.finish_reason == "stop"


async def test_raw_completion_prompt_skips_the_chat_template(backend):
    chat = backend.encode(ChatRequest.from_prompt("The capital of France is"))
    raw = backend.encode(ChatRequest(raw_prompt="The capital of France is"))
    assert len(raw) < len(chat)
    r = await backend.generate(
        ChatRequest(raw_prompt="The capital of France is", max_tokens=4, temperature=0.0)
    )
    assert r.usage.prompt_tokens == len(raw)


async def test_prefix_reuse_is_exact_and_reported(model_dir):
    shared = "You are a careful assistant. " * 20
    first = ChatRequest(
        messages=(Message("system", shared), Message("user", "Say yes.")), max_tokens=6, temperature=0.0
    )
    second = first.replace(messages=(Message("system", shared), Message("user", "Say no, politely.")))
    warm = TransformersBackend(model_dir)
    cold = TransformersBackend(model_dir, prefix_cache_mb=0)
    await warm.generate(first)
    reused = await warm.generate(second)
    fresh = await cold.generate(second)
    assert reused.usage.reused_prompt_tokens > 100
    assert fresh.usage.reused_prompt_tokens == 0
    # Reusing the cached prefix must not change what greedy decoding produces.
    assert reused.texts == fresh.texts


async def test_gguf_file_loads_directly(model_dir):
    gguf = embedded_gguf_path()
    if not gguf.exists():
        pytest.skip("the GGUF is kept by `agentloop models pull`; this model dir predates that")
    b = TransformersBackend(gguf)
    r = await b.generate(ChatRequest.from_prompt("Hi", max_tokens=3, temperature=0.0))
    assert r.usage.completion_tokens >= 1


async def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(AgentloopError, match="model path not found"):
        await TransformersBackend(tmp_path / "missing").generate(ChatRequest.from_prompt("x"))
    with pytest.raises(AgentloopError, match="no config.json"):
        await TransformersBackend(tmp_path).generate(ChatRequest.from_prompt("x"))


@pytest.mark.model
def test_one_backend_serves_two_event_loops_with_concurrent_requests(backend):
    # run_task_sync twice on one backend: each asyncio.run has its own loop, and concurrent
    # requests wait on the backend's lock in both.
    req = ChatRequest.from_prompt("Hi", n=1, max_tokens=2, temperature=0.0)

    async def two():
        return await asyncio.gather(backend.generate(req), backend.generate(req))

    first = asyncio.run(two())
    second = asyncio.run(two())
    assert [r.texts for r in first] == [r.texts for r in second]
