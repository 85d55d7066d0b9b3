"""Likelihood choice: Backend.score on the test doubles, the embedded model, OpenAI-compatible servers and vLLM."""

from __future__ import annotations

import math
import sys
import types
from types import SimpleNamespace

import pytest

from agentloop.backends import (
    Backend,
    BackendOptions,
    ChatRequest,
    ChatResponse,
    ContinuationScore,
    FunctionBackend,
    ScoreResponse,
    ScriptedBackend,
    UnsupportedCapabilityError,
    Usage,
)
from agentloop.backends.cache import CachedBackend
from agentloop.backends.openai_backend import OpenAIBackend, _echo_logprob

OPTIONS = ["click[Buy Now]", "click[Next >]", "search[red shoes]", "click[B07XYZ1234]"]


def _resp(values: list[float], tokens: list[int]) -> ScoreResponse:
    scores = [ContinuationScore(f"c{i}", v, t) for i, (v, t) in enumerate(zip(values, tokens, strict=True))]
    return ScoreResponse(scores=scores, usage=Usage())


def test_probs_are_a_softmax_by_mean_or_total():
    r = _resp([-2.0, -6.0, -3.0], [1, 4, 3])
    assert [s.mean_logprob for s in r] == [-2.0, -1.5, -1.0]
    for normalize in (True, False):
        assert math.isclose(sum(r.probs(normalize=normalize)), 1.0)
    assert r.best() == 2 and r.best(normalize=False) == 0
    assert r.probs(temperature=0.0) == [0.0, 0.0, 1.0]
    sharp, flat = r.probs(temperature=0.5), r.probs(temperature=2.0)
    assert sharp[2] > r.probs()[2] > flat[2]
    assert ContinuationScore("", 0.0, 0).mean_logprob == 0.0 and _resp([], []).probs() == []


async def test_default_score_is_a_one_line_refusal():
    class Plain(Backend):
        id = "plain"

        async def generate(self, request: ChatRequest) -> ChatResponse:
            raise AssertionError

    with pytest.raises(UnsupportedCapabilityError, match="score\\(\\) is not supported by plain") as info:
        await Plain().score("prompt", ["a"])
    assert "\n" not in str(info.value) and not Plain().supports_score
    with pytest.raises(UnsupportedCapabilityError, match="not supported by scripted"):
        await ScriptedBackend([]).score("p", ["a"])


async def test_function_backend_scores_through_its_scorer(tmp_path):
    seen = []

    async def scorer(request, conts):
        seen.append(request.raw_prompt)
        return [-float(len(c)) for c in conts]

    b = FunctionBackend(lambda r: "x", scorer=scorer)
    assert b.supports_score
    r = await b.score("Pick one:", ["a b", "ccc"])
    assert [(s.text, s.logprob, s.num_tokens) for s in r] == [("a b", -3.0, 2), ("ccc", -3.0, 1)]
    assert seen == ["Pick one:"] and r.usage.llm_calls == 1
    bad = ScriptedBackend([], scorer=lambda req, conts: [0.0])
    with pytest.raises(ValueError, match="1 scores for 2"):
        await bad.score([{"role": "user", "content": "hi"}], ["a", "b"])
    cached = CachedBackend(b, tmp_path / "c.sqlite")
    assert cached.supports_score and (await cached.score("p", ["zz"]))[0].logprob == -2.0
    await cached.aclose()


# -- the embedded model -----------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    from agentloop.backends.transformers_backend import TransformersBackend
    from agentloop.models import ensure_embedded_model

    b = TransformersBackend(ensure_embedded_model())
    b.load()
    return b


def _reference(backend, prompt_ids: list[int], cont: str) -> float:
    """Log-likelihood from one plain forward over prompt + continuation, no cache."""
    import torch

    ids = backend._tokenizer(cont, add_special_tokens=False)["input_ids"]
    full = torch.tensor([prompt_ids + ids])
    with torch.inference_mode():
        logp = torch.log_softmax(backend._model(input_ids=full).logits[0].float(), dim=-1)
    return sum(logp[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(ids))


@pytest.mark.model
async def test_scores_match_a_plain_forward_and_softmax_to_one(backend):
    req = ChatRequest.from_prompt("You want red shoes under $40. Which action next?")
    r = await backend.score(req, OPTIONS)
    prompt_ids = backend.encode(req)
    for s in r:
        assert s.num_tokens == len(backend._tokenizer(s.text, add_special_tokens=False)["input_ids"])
        assert s.logprob < 0 and math.isclose(
            s.logprob, _reference(backend, prompt_ids, s.text), abs_tol=2e-3
        )
    for normalize in (True, False):
        probs = r.probs(normalize=normalize)
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-9) and all(0 < p < 1 for p in probs)
    assert r.usage.prompt_tokens == len(prompt_ids) and r.usage.completion_tokens == sum(
        s.num_tokens for s in r
    )


@pytest.mark.model
async def test_chunked_batches_raw_prompts_and_empty_continuations(backend):
    from agentloop.backends.transformers_backend import TransformersBackend

    one = await backend.score("Instruction: buy red shoes.\nAction:", [" " + o for o in OPTIONS])
    small = TransformersBackend(backend.model_path, score_batch_size=1)
    small._model, small._tokenizer = backend._model, backend._tokenizer  # share the loaded model
    small._device, small._eos_ids, small._max_len = backend._device, backend._eos_ids, backend._max_len
    small._cache_arg = backend._cache_arg
    chunked = await small.score("Instruction: buy red shoes.\nAction:", [" " + o for o in OPTIONS])
    for a, b in zip(one, chunked, strict=True):
        assert math.isclose(a.logprob, b.logprob, abs_tol=1e-3)
    empty = await backend.score([{"role": "user", "content": "hi"}], ["", "hello"])
    assert (empty[0].logprob, empty[0].num_tokens) == (0.0, 0) and empty[1].num_tokens > 0


@pytest.mark.model
async def test_the_prompt_is_prefilled_once_and_reused(backend):
    backend.clear_prefix_cache()
    req = ChatRequest.from_prompt("A long instruction about shoes. " * 10)
    first = await backend.score(req, OPTIONS[:2])
    again = await backend.score(req, OPTIONS[2:])
    assert first.usage.reused_prompt_tokens == 0
    assert again.usage.reused_prompt_tokens == again.usage.prompt_tokens - 1


# -- OpenAI-compatible servers ----------------------------------------------------


def test_echoed_logprobs_are_summed_over_the_continuation_tokens():
    # The shape vLLM answers with for echo=True, logprobs=1, max_tokens=1.
    prompt, cont = "The step is:", " boil"
    choice = SimpleNamespace(
        text="The step is: boil water",
        logprobs=SimpleNamespace(
            tokens=["The", " step", " is", ":", " bo", "il", " water"],
            text_offset=[0, 3, 8, 11, 12, 15, 17],
            token_logprobs=[None, -8.8, -1.5, -2.0, -3.0, -0.5, -9.9],
        ),
    )
    assert _echo_logprob(prompt, cont, choice) == (-3.5, 2)
    assert _echo_logprob(prompt, cont, SimpleNamespace(text=",", logprobs=None)) is None


async def test_openai_api_and_chat_prompts_are_refused_before_sending(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    official = OpenAIBackend("gpt-4o-mini")
    assert not official.supports_score
    with pytest.raises(UnsupportedCapabilityError, match="no prompt log-probabilities"):
        await official.score("p", ["a"])
    local = OpenAIBackend("m", BackendOptions(base_url="http://127.0.0.1:9/v1"))
    assert local.supports_score
    with pytest.raises(UnsupportedCapabilityError, match="needs a raw prompt"):
        await local.score([{"role": "user", "content": "hi"}], ["a"])


@pytest.mark.server
@pytest.mark.model
async def test_transformers_serve_has_no_prompt_logprobs(transformers_server, embedded_model_dir):
    b = OpenAIBackend(str(embedded_model_dir), BackendOptions(base_url=transformers_server))
    with pytest.raises(UnsupportedCapabilityError, match="echo=True and logprobs") as info:
        await b.score("The colour is", [" red", " blue"])
    assert "\n" not in str(info.value) and not b.supports_score
    with pytest.raises(UnsupportedCapabilityError, match="not supported"):
        await b.score("The colour is", [" red"])
    await b.aclose()


# -- in-process vLLM (a fake module: vLLM cannot run here) ------------------------


async def test_vllm_scores_from_prompt_logprobs(monkeypatch):
    vocab = {"Pick": 1, " red": 2, " blue": 3, " dark": 4}

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [vocab[w] for w in ([text] if text in vocab else text.split("|"))]}

    sent = {}

    class Engine:
        """Stands in for vllm's AsyncLLM, built from the model id as the backend builds it."""

        @classmethod
        def from_engine_args(cls, args):
            sent["args"] = args
            return cls()

        def get_tokenizer(self):
            return Tok()

        async def generate(self, prompt, params, request_id):
            sent["params"] = params
            lp = {1: None, 2: -1.0, 3: -2.0, 4: -0.5}
            yield SimpleNamespace(
                prompt_logprobs=[
                    None if lp[t] is None else {t: SimpleNamespace(logprob=lp[t])}
                    for t in prompt["prompt_token_ids"]
                ]
            )

    fake = types.ModuleType("vllm")
    fake.AsyncLLMEngine = Engine  # type: ignore[attr-defined]
    fake.AsyncEngineArgs = lambda **kw: kw  # type: ignore[attr-defined]
    fake.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", types.ModuleType("vllm.sampling_params"))
    from agentloop.backends.vllm_backend import VLLMBackend

    b = VLLMBackend("m")
    r = await b.score("Pick", [" red", " dark| blue", ""])
    assert [(s.logprob, s.num_tokens) for s in r] == [(-1.0, 1), (-2.5, 2), (0, 0)]
    assert sent["params"]["prompt_logprobs"] == 1 and r.usage.prompt_tokens == 1
    assert sent["args"] == {"model": "m", "dtype": "auto"}
    await b.aclose()
