"""The in-process vLLM backend: request mapping and the missing-extra error (vLLM cannot run here)."""

from __future__ import annotations

import asyncio
import sys
import types
from types import SimpleNamespace

import pytest

from agentloop.backends import ChatRequest, Constraint, resolve_backend
from agentloop.backends.vllm_backend import VLLMBackend, sampling_kwargs
from agentloop.errors import MissingExtraError


def test_request_fields_map_to_sampling_params():
    req = ChatRequest.from_prompt(
        "Hi", n=4, temperature=0.8, top_p=0.95, max_tokens=64, stop=["\n\n", "###"], seed=11
    )
    assert sampling_kwargs(req) == {
        "n": 4,
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 64,
        "stop": ["\n\n", "###"],
        "seed": 11,
    }


def test_unset_stop_and_seed_are_left_to_vllm_defaults():
    kwargs = sampling_kwargs(ChatRequest.from_prompt("Hi"))
    assert "stop" not in kwargs and "seed" not in kwargs


def test_extra_passes_through_and_wins():
    req = ChatRequest.from_prompt("Hi", top_p=0.9, extra={"top_k": 20, "min_p": 0.05, "top_p": 0.5})
    kwargs = sampling_kwargs(req)
    assert kwargs["top_k"] == 20 and kwargs["min_p"] == 0.05 and kwargs["top_p"] == 0.5


def test_greedy_asks_for_one_sample():
    # vLLM rejects n > 1 at temperature 0; the backend repeats the one greedy answer.
    assert sampling_kwargs(ChatRequest.from_prompt("Hi", n=5, temperature=0.0))["n"] == 1


def test_missing_vllm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now fails, installed or not
    with pytest.raises(MissingExtraError, match=r"pip install 'agentloop\[vllm\]'"):
        resolve_backend("vllm:Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(ImportError):  # MissingExtraError is also an ImportError
        VLLMBackend("Qwen/Qwen2.5-0.5B-Instruct")


# -- the async engine, with a stand-in (vLLM cannot run here) -----------------------


class _Tok:
    """Whitespace 'tokenizer': ids are word lengths; the chat template joins role: content lines."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(w) for w in text.split()]}

    def apply_chat_template(self, msgs, add_generation_prompt=True, tokenize=True):
        text = " ".join(f"{m['role']}: {m['content']}" for m in msgs) + " assistant:"
        return {"input_ids": self(text)["input_ids"]}


class _Engine:
    """Stands in for vllm's AsyncLLM: an async generator per request, several in flight at once."""

    def __init__(self, step_s: float = 0.05):
        self.step_s = step_s
        self.in_flight = 0
        self.most_in_flight = 0
        self.requests: list[tuple[dict, dict, str]] = []
        self.aborted: list[str] = []
        self.loops: set[int] = set()

    def get_tokenizer(self):
        return _Tok()

    async def generate(self, prompt, params, request_id):
        self.requests.append((prompt, params, request_id))
        self.loops.add(id(asyncio.get_running_loop()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.step_s)  # the scheduler's steps, shared by all requests
            ids = prompt["prompt_token_ids"]
            outs = [
                SimpleNamespace(
                    text=f"answer {i} to {len(ids)}", token_ids=[7] * (i + 1), finish_reason="stop"
                )
                for i in range(params.get("n", 1))
            ]
            plp = [None] + [{t: SimpleNamespace(logprob=-0.1 * t)} for t in ids[1:]]
            yield SimpleNamespace(
                outputs=outs, prompt_token_ids=ids, num_cached_tokens=2, prompt_logprobs=plp, finished=True
            )
        except BaseException:
            self.aborted.append(request_id)
            raise
        finally:
            self.in_flight -= 1


@pytest.fixture
def fake_vllm(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    sp = types.ModuleType("vllm.sampling_params")
    sp.RequestOutputKind = SimpleNamespace(FINAL_ONLY="final_only")  # type: ignore[attr-defined]
    sp.StructuredOutputsParams = lambda **kw: ("structured", kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    return fake


async def test_concurrent_requests_are_in_flight_together_not_serialised(fake_vllm):
    engine = _Engine(step_s=0.2)
    b = VLLMBackend("m", engine=engine)
    reqs = [ChatRequest.from_prompt(f"question {i} " * (i + 1), n=2, seed=i) for i in range(4)]
    responses = await asyncio.gather(*(b.generate(r) for r in reqs))
    # Four requests of 0.2 s each, all in flight at once: the engine schedules them together.
    assert engine.most_in_flight == 4
    assert len({rid for _, _, rid in engine.requests}) == 4
    for r, resp in zip(reqs, responses, strict=True):
        assert len(resp.completions) == 2 and resp.usage.llm_calls == 1
        assert resp.usage.prompt_tokens == len(b._prompt_ids(r))
        assert resp.usage.reused_prompt_tokens == 2
        assert resp.usage.completion_tokens == 1 + 2
    await b.aclose()


async def test_requests_map_to_token_prompts_and_sampling_params(fake_vllm):
    engine = _Engine(step_s=0)
    b = VLLMBackend("m", engine=engine)
    chat = ChatRequest.from_prompt(
        "hello big world", system="be brief", n=3, max_tokens=9, seed=5, stop=["\n"]
    )
    await b.generate(chat)
    await b.generate(ChatRequest(raw_prompt="a bb ccc", n=4, temperature=0.0))
    await b.generate(ChatRequest.from_prompt("x", constraint=Constraint.regex("[ab]+")))
    (p1, s1, _), (p2, s2, _), (_, s3, _) = engine.requests
    assert p1 == {
        "prompt_token_ids": _Tok().apply_chat_template(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]
        )["input_ids"]
    }
    assert s1 == {**sampling_kwargs(chat), "output_kind": "final_only"}
    assert p2 == {"prompt_token_ids": [1, 2, 3]} and s2["n"] == 1  # greedy: one sample, repeated
    assert s3["structured_outputs"] == ("structured", {"regex": "[ab]+"})
    await b.aclose()


async def test_greedy_answer_is_repeated_n_times(fake_vllm):
    b = VLLMBackend("m", engine=_Engine(step_s=0))
    r = await b.generate(ChatRequest.from_prompt("hi", n=3, temperature=0.0))
    assert r.texts == [r.texts[0]] * 3
    await b.aclose()


async def test_a_cancelled_caller_aborts_its_request_in_the_engine(fake_vllm):
    engine = _Engine(step_s=5.0)
    b = VLLMBackend("m", engine=engine)
    task = asyncio.ensure_future(b.generate(ChatRequest.from_prompt("slow")))
    while not engine.requests:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if engine.aborted:
            break
        await asyncio.sleep(0.01)
    assert engine.aborted == [engine.requests[0][2]] and engine.in_flight == 0
    await b.aclose()


def test_one_engine_loop_serves_callers_on_different_event_loops(fake_vllm):
    engine = _Engine(step_s=0.01)
    b = VLLMBackend("m", engine=engine)
    req = ChatRequest.from_prompt("hi")
    first = asyncio.run(b.generate(req))
    second = asyncio.run(b.generate(req))
    assert first.texts == second.texts
    assert len(engine.loops) == 1  # the engine stays on its own loop
    asyncio.run(b.aclose())


async def test_score_sends_every_continuation_at_once(fake_vllm):
    engine = _Engine(step_s=0.1)
    b = VLLMBackend("m", engine=engine)
    r = await b.score("pick one", [" aa", " bbb cc", ""])
    assert engine.most_in_flight == 3
    prompt = [4, 3]
    assert [(s.num_tokens, s.logprob) for s in r] == [
        (1, pytest.approx(-0.2)),
        (2, pytest.approx(-0.3 - 0.2)),
        (0, 0),
    ]
    assert r.usage.prompt_tokens == len(prompt)
    assert all(p[1]["prompt_logprobs"] == 1 for p in engine.requests)
    await b.aclose()
