"""The llamacpp backend on the real llama.cpp engine, serving the embedded SmolLM2-135M GGUF."""

from __future__ import annotations

import asyncio
import re
import sys
import threading

import pytest

from agentloop.backends import ChatRequest, Constraint, UnsupportedCapabilityError, resolve_backend
from agentloop.errors import AgentloopError, MissingExtraError, ModelPullError, UnknownBackendError

pytest.importorskip("xllamacpp", reason="the llamacpp extra: pip install 'agentloop[llamacpp]'")

from agentloop.backends.llamacpp_backend import ContextOverflowError, LlamaCppBackend  # noqa: E402

pytestmark = pytest.mark.model

CAPITAL = "The capital of the United Kingdom is"


@pytest.fixture(scope="module")
def gguf():
    from agentloop.models import ensure_embedded_gguf

    return ensure_embedded_gguf()


@pytest.fixture(scope="module")
def backend(gguf):
    # Small on purpose: 4 slots over one 4096-token pool keeps the engine's start and memory low.
    b = LlamaCppBackend(gguf, parallel=4, ctx=4096, threads=2)
    b.load()
    yield b
    asyncio.run(b.aclose())


async def test_n_candidates_come_from_one_call_with_usage(backend):
    r = await backend.generate(
        ChatRequest.from_prompt("Name a fruit.", n=3, max_tokens=8, seed=0, temperature=1.0)
    )
    assert len(r.completions) == 3
    assert r.usage.llm_calls == 1
    assert r.usage.prompt_tokens > 5
    # Every candidate's tokens, not one sample's (which is all the engine reports).
    assert r.usage.completion_tokens == sum(c.completion_tokens for c in r.completions)
    assert all(1 <= c.completion_tokens <= 8 for c in r.completions)
    assert all(c.finish_reason in ("stop", "length") for c in r.completions)
    assert len(set(r.texts)) > 1


async def test_seed_makes_sampling_repeatable(backend):
    req = ChatRequest.from_prompt(
        "Write a short poem about rain.", n=2, max_tokens=12, temperature=1.0, seed=123
    )
    a = await backend.generate(req)
    b = await backend.generate(req)
    c = await backend.generate(req.replace(seed=124))
    assert a.texts == b.texts
    assert a.texts != c.texts


async def test_more_candidates_than_slots_are_split_and_stay_seeded(backend):
    req = ChatRequest.from_prompt("Name an animal.", n=6, max_tokens=6, temperature=1.0, seed=7)
    a = await backend.generate(req)
    b = await backend.generate(req)
    assert len(a.completions) == 6
    assert a.texts == b.texts
    # The second chunk is not a copy of the first: each chunk has its own seed.
    assert a.texts[:2] != a.texts[4:6]


async def test_max_tokens_and_length_finish(backend):
    req = ChatRequest.from_prompt(
        "Count from one to one hundred.", n=2, max_tokens=5, temperature=0.0, extra={"ignore_eos": True}
    )
    r = await backend.generate(req)
    assert [c.completion_tokens for c in r.completions] == [5, 5]
    assert all(c.finish_reason == "length" for c in r.completions)


async def test_stop_strings_end_the_text_before_the_stop(backend):
    free = ChatRequest.from_prompt("List the numbers 1 to 5, one per line.", max_tokens=30, temperature=0.0)
    assert "3" in (await backend.generate(free)).texts[0]  # the stop would fire
    r = await backend.generate(free.replace(stop=("3",)))
    assert "3" not in r.texts[0]
    assert r.completions[0].finish_reason == "stop"


async def test_raw_completion_prompt_skips_the_chat_template(backend):
    raw = ChatRequest(raw_prompt="The capital of France is", max_tokens=4, temperature=0.0)
    chat = ChatRequest.from_prompt("The capital of France is", max_tokens=4, temperature=0.0)
    r_raw, r_chat = await backend.generate(raw), await backend.generate(chat)
    assert r_raw.usage.prompt_tokens == len(backend.tokenize("The capital of France is"))
    assert r_chat.usage.prompt_tokens > r_raw.usage.prompt_tokens
    assert "Paris" in r_raw.texts[0]


async def test_regex_constraint_holds_for_every_candidate(backend):
    c = Constraint.regex(r"[0-9]{3}-[a-z]{2}")
    r = await backend.generate(
        ChatRequest.from_prompt("Write a code.", n=4, max_tokens=12, temperature=1.0, seed=1, constraint=c)
    )
    assert len(r.completions) == 4
    assert all(c.matches(t) for t in r.texts), r.texts


async def test_grammar_constraint_is_a_lark_grammar(backend):
    lark = 'start: "The answer is " NUM "."\nNUM: /[1-9][0-9]?/'
    req = ChatRequest.from_prompt("What is 6 times 7?", n=3, max_tokens=12, temperature=0.8, seed=2)
    r = await backend.generate(req.replace(constraint=Constraint.grammar(lark)))
    assert all(re.fullmatch(r"The answer is [1-9][0-9]?\.", t) for t in r.texts), r.texts


async def test_a_bad_grammar_is_refused_in_one_line(backend):
    req = ChatRequest.from_prompt("x", max_tokens=4, constraint=Constraint.grammar("start: ((("))
    with pytest.raises(UnsupportedCapabilityError, match="invalid grammar constraint") as info:
        await backend.generate(req)
    assert "\n" not in str(info.value)


async def test_choice_draws_whole_options_and_greedy_is_the_argmax_of_score(backend):
    options = [" London", " Paris", " Berlin"]
    scores = await backend.score(CAPITAL, options)
    greedy = ChatRequest(
        raw_prompt=CAPITAL, max_tokens=8, temperature=0.0, constraint=Constraint.choice(options)
    )
    r = await backend.generate(greedy)
    assert r.texts == [options[scores.best(normalize=False)]] == [" London"]
    sampled = greedy.replace(n=8, temperature=1.5, seed=4)
    a, b = await backend.generate(sampled), await backend.generate(sampled)
    assert set(a.texts) <= set(options) and a.texts == b.texts


async def test_sql_under_the_schema_grammar_of_the_largest_database(backend):
    from agentloop.suites.text2sql.data import load_text2sql
    from agentloop.suites.text2sql.grammar import schema_grammar, sql_accepted

    example = max(load_text2sql(None), key=lambda e: e.db_path.stat().st_size)
    grammar = schema_grammar(example.db_path, after_select=True, newlines=False, max_items=6)
    prompt = f"-- {example.question}\nSQL: SELECT"
    req = ChatRequest(raw_prompt=prompt, n=2, max_tokens=48, temperature=0.7, seed=3)
    r = await backend.generate(req.replace(constraint=Constraint.grammar(grammar)))
    for c in r.completions:
        assert c.text.strip(), "the grammar must not silently stop the row"
        if c.finish_reason == "stop":
            assert sql_accepted(example.db_path, "SELECT" + c.text), c.text


async def test_score_is_exact_and_ranks_sensibly(backend):
    s = await backend.score(CAPITAL, [" London", " Paris", " Berlin, obviously.", ""])
    assert [x.num_tokens for x in s] == [1, 1, 4, 0]
    assert s[0].logprob > s[1].logprob > s[2].logprob
    assert s[3].logprob == 0.0 and s[3].mean_logprob == 0.0
    # The forced token's log-probability is the model's own: the unconstrained top-1 value.
    top = backend._handle({"prompt": CAPITAL, "max_tokens": 1, "temperature": 0.0, "logprobs": 5})
    first = top["choices"][0]["logprobs"]["content"][0]
    assert first["token"] == " London"
    assert s[0].logprob == pytest.approx(first["logprob"], abs=1e-4)
    # Several tokens: the sum of what greedy decoding reports for the same tokens.
    out = backend._handle({"prompt": CAPITAL, "max_tokens": 2, "temperature": 0.0, "logprobs": 1})
    steps = out["choices"][0]["logprobs"]["content"]
    text = "".join(e["token"] for e in steps)
    assert backend.tokenize(text) == [e["id"] for e in steps]
    (again,) = (await backend.score(CAPITAL, [text])).scores
    assert again.num_tokens == 2
    assert again.logprob == pytest.approx(sum(e["logprob"] for e in steps), abs=1e-3)


async def test_score_takes_chat_messages_and_reuses_the_prompt(backend):
    msgs = [{"role": "user", "content": "What is the capital of the United Kingdom?"}]
    s = await backend.score(msgs, ["London", "Paris", "Berlin"])
    assert s.best(normalize=False) == 0
    assert s.usage.prompt_tokens > 10
    assert s.usage.reused_prompt_tokens >= 2 * (s.usage.prompt_tokens - 1)


async def test_concurrent_tasks_share_the_engine(backend, monkeypatch):
    reqs = [
        ChatRequest.from_prompt(
            f"Tell me about {w}.", n=1, max_tokens=32, temperature=1.0, seed=i, extra={"ignore_eos": True}
        )
        for i, w in enumerate(["cats", "dogs", "rain", "tea"])
    ]
    # Count the engine calls in flight at once: concurrent tasks must all be inside the
    # engine together (its slots batch them), not queued behind one another.
    # (How much faster that is, is measured by benchmarks/bench_llamacpp.py, not here.)
    lock, now, peak = threading.Lock(), [0], [0]
    handle = backend._handle

    def counting(payload):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        try:
            return handle(payload)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(backend, "_handle", counting)
    alone = [await backend.generate(r) for r in reqs]
    assert peak[0] == 1
    together = await asyncio.gather(*(backend.generate(r) for r in reqs))
    assert peak[0] == 4
    assert [len(r.completions) for r in together] == [1] * 4
    assert all(r.usage.completion_tokens == 32 for r in together + alone)


def test_one_backend_serves_two_event_loops(backend):
    req = ChatRequest.from_prompt("Hi", max_tokens=3, temperature=0.0)

    async def two():
        return await asyncio.gather(backend.generate(req), backend.generate(req))

    first, second = asyncio.run(two()), asyncio.run(two())
    assert [r.texts for r in first] == [r.texts for r in second]


async def test_context_overflow_is_one_line(gguf):
    small = LlamaCppBackend(gguf, parallel=1, ctx=256, threads=2)
    try:
        with pytest.raises(
            ContextOverflowError, match=r"prompt is 30\d tokens but .* holds at most 256"
        ) as info:
            await small.generate(ChatRequest(raw_prompt="word " * 300, max_tokens=4))
        assert "\n" not in str(info.value)
    finally:
        await small.aclose()


async def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(AgentloopError, match="model file not found"):
        await LlamaCppBackend(tmp_path / "missing.gguf").generate(ChatRequest.from_prompt("x"))
    with pytest.raises(AgentloopError, match="is a directory"):
        await LlamaCppBackend(f"{tmp_path}/").generate(ChatRequest.from_prompt("x"))
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(AgentloopError, match="is not a GGUF file"):
        await LlamaCppBackend(fake).generate(ChatRequest.from_prompt("x"))


def test_a_missing_extra_names_the_install_command(monkeypatch, gguf):
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'agentloop\[llamacpp\]'"):
        LlamaCppBackend(gguf).load()


def test_ids_options_and_model_names_resolve_lazily(monkeypatch, tmp_path):
    b = resolve_backend("llamacpp?parallel=2&ctx=1024&threads=1")
    assert isinstance(b, LlamaCppBackend) and b.id == "llamacpp"
    assert (b.parallel, b.ctx, b.threads) == (2, 1024, 1)
    assert b._server is None  # nothing starts before the first request
    assert resolve_backend("llamacpp:/models/x.gguf").id == "llamacpp:/models/x.gguf"
    with pytest.raises(AgentloopError, match="unknown llamacpp backend option 'slots'"):
        resolve_backend("llamacpp?slots=2")
    with pytest.raises(UnknownBackendError, match="Did you mean 'llamacpp'"):
        resolve_backend("llamacp")
    monkeypatch.setenv("AGENTLOOP_HOME", str(tmp_path))
    with pytest.raises(ModelPullError, match="run: agentloop models pull qwen2.5-coder-0.5b"):
        resolve_backend("llamacpp:qwen2.5-coder-0.5b").model_path()  # type: ignore[attr-defined]
    with pytest.raises(AgentloopError, match="Did you mean 'qwen2.5-coder-0.5b'"):
        resolve_backend("llamacpp:qwen2.5-coder-0.5").model_path()  # type: ignore[attr-defined]


async def test_closed_backend_starts_again_on_use(gguf):
    b = LlamaCppBackend(gguf, parallel=1, ctx=512, threads=2)
    async with b:
        first = await b.generate(ChatRequest(raw_prompt="1, 2, 3,", max_tokens=3, temperature=0.0))
    assert b._server is None
    again = await b.generate(ChatRequest(raw_prompt="1, 2, 3,", max_tokens=3, temperature=0.0))
    assert again.texts == first.texts
    await b.aclose()


async def test_continuations_of_a_short_prompt_are_scored_at_once_and_agree(backend):
    from agentloop.backends.llamacpp_backend import _fan_out_pays

    titles = [
        " Red running shoes for men, size 10",
        " Blue cotton t-shirt with a round neck",
        " Stainless steel water bottle, 1 litre",
        " Wireless noise cancelling headphones",
    ]
    lengths = [len(backend.tokenize(t)) for t in titles]
    assert _fan_out_pays(3, lengths[1:]) and not _fan_out_pays(400, lengths[1:])
    together = await backend.score("Product:", titles)
    alone = [(await backend.score("Product:", [t])).scores[0] for t in titles]
    # The same values as one by one, within what batch composition moves in llama.cpp's
    # kernels (measured: up to about 1% of a 10-token continuation's log-likelihood).
    assert [s.logprob for s in together] == pytest.approx([s.logprob for s in alone], rel=0.03)
    assert [s.num_tokens for s in together] == lengths
