"""The backend contract, the registry, the test doubles and the response cache."""

from __future__ import annotations

import asyncio

import pytest

from agentloop.backends import (
    BackendOptions,
    ChatRequest,
    FunctionBackend,
    Message,
    ScriptedBackend,
    Usage,
    resolve_backend,
)
from agentloop.backends.cache import CachedBackend
from agentloop.backends.testing import ScriptExhaustedError
from agentloop.errors import UnknownBackendError


def test_request_validates_its_fields():
    with pytest.raises(ValueError, match="n must be"):
        ChatRequest.from_prompt("hi", n=0)
    with pytest.raises(ValueError, match="temperature"):
        ChatRequest.from_prompt("hi", temperature=3.0)
    with pytest.raises(ValueError, match="messages or a raw_prompt"):
        ChatRequest()
    with pytest.raises(ValueError, match="role"):
        ChatRequest(messages=({"role": "tool", "content": "x"},))  # type: ignore[arg-type]


def test_request_accepts_dict_messages_and_exposes_system():
    req = ChatRequest(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])  # type: ignore[arg-type]
    assert req.messages[1] == Message("user", "hi")
    assert req.system == "be brief"


def test_cache_key_changes_with_every_sampling_field():
    base = ChatRequest.from_prompt("hi", n=2, seed=1)
    keys = {
        base.cache_key("b"),
        base.replace(n=3).cache_key("b"),
        base.replace(seed=2).cache_key("b"),
        base.replace(temperature=0.1).cache_key("b"),
        base.replace(stop=("x",)).cache_key("b"),
        base.replace(extra={"top_k": 5}).cache_key("b"),
        base.cache_key("other-backend"),
    }
    assert len(keys) == 7
    assert base.cache_key("b") == ChatRequest.from_prompt("hi", n=2, seed=1).cache_key("b")


def test_usage_adds_up():
    total = Usage(prompt_tokens=3, completion_tokens=4, llm_calls=1) + Usage(
        prompt_tokens=1, completion_tokens=1, llm_calls=1, cost_usd=0.5
    )
    assert (total.prompt_tokens, total.completion_tokens, total.llm_calls, total.cost_usd) == (4, 5, 2, 0.5)
    assert total.total_tokens == 9


def test_unknown_backend_suggests_the_closest_id():
    with pytest.raises(UnknownBackendError, match="Did you mean 'openai'"):
        resolve_backend("opena:gpt-4o")
    with pytest.raises(
        UnknownBackendError, match="Known backends: anthropic, llamacpp, openai, transformers, vllm"
    ):
        resolve_backend("zzz")


def test_registry_resolves_lazily_without_loading_models(tmp_path):
    # Building the transformers backend must not load a model: that happens on first use.
    backend = resolve_backend(f"transformers:{tmp_path}", options=BackendOptions(device="cpu"))
    assert backend.id == f"transformers:{tmp_path}"
    assert backend._model is None  # type: ignore[attr-defined]


async def test_scripted_backend_plays_turns_and_records_requests():
    backend = ScriptedBackend(["a b c", ["x", "y"], RuntimeError("boom")])
    r1 = await backend.generate(ChatRequest.from_prompt("one two", n=3))
    assert r1.texts == ["a b c"] * 3
    assert r1.usage.prompt_tokens == 2 and r1.usage.completion_tokens == 9
    r2 = await backend.generate(ChatRequest.from_prompt("q", n=4))
    assert r2.texts == ["x", "y"]  # fewer than asked, on purpose
    with pytest.raises(RuntimeError, match="boom"):
        await backend.generate(ChatRequest.from_prompt("q"))
    with pytest.raises(ScriptExhaustedError):
        await backend.generate(ChatRequest.from_prompt("q"))
    assert [r.n for r in backend.requests] == [3, 4, 1, 1]


async def test_doubles_truncate_at_max_tokens_and_stop():
    backend = FunctionBackend(lambda req: "one two three four STOP five")
    r = await backend.generate(ChatRequest.from_prompt("q", max_tokens=2))
    assert r.texts == ["one two"] and r.completions[0].finish_reason == "length"
    r = await backend.generate(ChatRequest.from_prompt("q", stop=(" STOP",)))
    assert r.texts == ["one two three four"] and r.usage.completion_tokens == 4


async def test_function_backend_awaits_async_functions():
    async def fn(req: ChatRequest) -> list[str]:
        await asyncio.sleep(0)
        return [f"answer {i}" for i in range(req.n)]

    r = await FunctionBackend(fn).generate(ChatRequest.from_prompt("q", n=3))
    assert r.texts == ["answer 0", "answer 1", "answer 2"]


async def test_cache_answers_repeats_at_zero_token_cost(tmp_path):
    inner = FunctionBackend(lambda req: [f"c{i}" for i in range(req.n)])
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    req = ChatRequest.from_prompt("hello world", n=2, seed=7)
    first = await cached.generate(req)
    second = await cached.generate(req)
    assert first.usage.completion_tokens > 0 and not first.usage.cached
    assert second.texts == first.texts
    assert second.usage.cached and second.usage.total_tokens == 0 and second.usage.llm_calls == 0
    assert inner.calls == 1
    await cached.generate(req.replace(seed=8))
    assert inner.calls == 2
    await cached.aclose()
    # The cache persists across processes (a new wrapper on the same file).
    again = CachedBackend(FunctionBackend(lambda req: "never"), tmp_path / "cache.sqlite")
    assert (await again.generate(req)).texts == first.texts
    await again.aclose()


async def test_cache_does_not_freeze_short_answers(tmp_path):
    inner = ScriptedBackend([["only one"], ["a", "b"]])
    cached = CachedBackend(inner, tmp_path / "c.sqlite")
    req = ChatRequest.from_prompt("q", n=2, seed=3)
    assert len((await cached.generate(req)).completions) == 1
    assert (await cached.generate(req)).texts == ["a", "b"]
    assert (await cached.generate(req)).usage.cached
    await cached.aclose()


async def test_cached_seedless_sampling_keeps_its_diversity_and_replays_in_order(tmp_path):
    counter = iter(range(1000))
    inner = FunctionBackend(lambda req: f"sample {next(counter)}")
    cached = CachedBackend(inner, tmp_path / "c.sqlite")
    req = ChatRequest.from_prompt("q", n=1, temperature=0.8)  # no seed: each call samples anew
    first = [(await cached.generate(req)).texts[0] for _ in range(4)]
    assert len(set(first)) == 4  # n requests of n=1 give n different candidates
    await cached.aclose()
    again = CachedBackend(FunctionBackend(lambda req: "never"), tmp_path / "c.sqlite")
    replay = await asyncio.gather(*(again.generate(req) for _ in range(4)))
    assert [r.texts[0] for r in replay] == first and all(r.usage.cached for r in replay)
    # Greedy requests are deterministic: one stored answer serves them all.
    greedy = ChatRequest.from_prompt("q", n=1, temperature=0.0)
    texts = {(await again.generate(greedy)).texts[0] for _ in range(3)}
    assert texts == {"never"} and (await again.generate(greedy)).usage.cached
    await again.aclose()


def test_loop_lock_survives_a_new_event_loop():
    from agentloop.backends._aio import LoopLock

    async def contend(lock):
        async def hold():
            async with lock:
                await asyncio.sleep(0.001)  # a waiter binds a plain asyncio.Lock to this loop

        await asyncio.gather(*(hold() for _ in range(3)))

    plain = asyncio.Lock()
    asyncio.run(contend(plain))
    with pytest.raises(RuntimeError, match="different event loop"):
        asyncio.run(contend(plain))
    ours = LoopLock()
    asyncio.run(contend(ours))
    asyncio.run(contend(ours))


def test_a_cached_backend_serves_several_event_loops(tmp_path):
    # The lock is made per loop: contention in one asyncio.run, then in another, both work.
    cached = CachedBackend(FunctionBackend(lambda req: "x"), tmp_path / "c.sqlite")
    req = ChatRequest.from_prompt("q", n=1, seed=1)

    async def burst():
        return await asyncio.gather(*(cached.generate(req) for _ in range(8)))

    assert len(asyncio.run(burst())) == 8
    assert len(asyncio.run(burst())) == 8
    asyncio.run(cached.aclose())
