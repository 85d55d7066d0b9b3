"""Constrained generation: the Constraint type, each backend's mapping or refusal, and the embedded model."""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import pytest

from agentloop.backends import (
    Backend,
    BackendOptions,
    ChatRequest,
    ChatResponse,
    Constraint,
    FunctionBackend,
    ScriptedBackend,
    UnsupportedCapabilityError,
)
from agentloop.backends.cache import CachedBackend
from agentloop.backends.openai_backend import OpenAIBackend, constraint_fields
from agentloop.backends.testing import ScriptConstraintError
from agentloop.backends.vllm_backend import sampling_kwargs

COLOURS = Constraint.choice(["red", "green", "blue", "dark blue"])
SEARCH = Constraint.regex(r"search\[[a-z0-9 ]{1,30}\]")
# A small Lark grammar in llguidance's dialect: literals, a regex terminal, recursion.
SQLISH = Constraint.grammar(
    r"""
start: "SELECT " cols " FROM " table where?
cols: col (", " col)*
col: "name" | "price" | "colour"
table: "products" | "orders"
where: " WHERE " col " = " NUMBER
NUMBER: /[0-9]{1,4}/
"""
)
SQLISH_RE = re.compile(
    r"SELECT (name|price|colour)(, (name|price|colour))* FROM (products|orders)( WHERE (name|price|colour) = [0-9]{1,4})?"
)


# -- the type and the request ---------------------------------------------------


def test_constraint_validates_and_normalises():
    assert Constraint.choice(["a", "b"]).value == ("a", "b")
    assert Constraint("choice", ["x"]).options == ("x",)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        Constraint.choice([])
    with pytest.raises(TypeError, match="not one string"):
        Constraint("choice", "abc")
    with pytest.raises(ValueError, match="non-empty"):
        Constraint.regex("")
    with pytest.raises(ValueError, match="kind"):
        Constraint("json", "{}")  # type: ignore[arg-type]
    assert Constraint.from_dict(COLOURS.to_dict()) == COLOURS
    assert COLOURS.matches("red") and COLOURS.matches("purple") is False
    assert SEARCH.matches("search[red shoes]") and not SEARCH.matches("search[red shoes] now")
    assert SQLISH.matches("anything") is None


def test_cache_key_changes_with_the_constraint_and_unconstrained_keys_stay():
    base = ChatRequest.from_prompt("hi", n=2, seed=1)
    assert "constraint" not in base.to_dict()  # old cache entries keep their keys
    keys = {
        base.cache_key("b"),
        base.replace(constraint=COLOURS).cache_key("b"),
        base.replace(constraint=Constraint.choice(["red", "green"])).cache_key("b"),
        base.replace(constraint=SEARCH).cache_key("b"),
        base.replace(constraint=Constraint.grammar(str(SEARCH.value))).cache_key("b"),
    }
    assert len(keys) == 5
    assert base.replace(constraint=COLOURS).to_dict()["constraint"] == {
        "kind": "choice",
        "value": ["red", "green", "blue", "dark blue"],
    }
    with pytest.raises(TypeError, match="Constraint"):
        ChatRequest.from_prompt("hi", constraint={"kind": "regex", "value": "a"})


# -- refusals and mappings ------------------------------------------------------


class _Plain(Backend):
    """A backend written without constraints in mind."""

    id = "plain"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        raise AssertionError("must not be reached")


async def test_a_backend_that_knows_nothing_of_constraints_refuses_them_before_running():
    b = _Plain()
    assert not b.supports_constraints
    with pytest.raises(UnsupportedCapabilityError, match="plain cannot honour a choice of 4 strings"):
        await b.generate(ChatRequest.from_prompt("hi", constraint=COLOURS))
    assert b.calls == 0


async def test_anthropic_refuses_constraints_before_sending():
    httpx2 = pytest.importorskip("httpx2")
    from agentloop.backends.anthropic_backend import AnthropicBackend

    sent: list[Any] = []

    def api(request: Any) -> Any:
        sent.append(request)
        return httpx2.Response(500, json={})

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(api))
    b = AnthropicBackend("claude-sonnet-5-5", BackendOptions(api_key="sk-ant-test"), http_client=client)
    with pytest.raises(UnsupportedCapabilityError, match="Anthropic Messages API has no grammar") as info:
        await b.generate(ChatRequest.from_prompt("hi", constraint=SEARCH))
    assert "\n" not in str(info.value) and not sent
    await b.aclose()


async def test_openai_api_refuses_constraints_and_local_servers_get_structured_outputs(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    official = OpenAIBackend("gpt-4o-mini")
    assert not official.supports_constraints
    with pytest.raises(UnsupportedCapabilityError, match="only to JSON schemas"):
        await official.generate(ChatRequest.from_prompt("hi", constraint=COLOURS))

    local = OpenAIBackend("m", BackendOptions(base_url="http://127.0.0.1:9/v1"))
    assert local.constraint_kinds == {"grammar", "regex", "choice"}
    req = ChatRequest.from_prompt("hi", constraint=COLOURS, extra={"top_k": 5})
    kw = local.request_kwargs(req, n=1, seed=None)
    assert kw["extra_body"] == {
        "top_k": 5,
        "structured_outputs": {"choice": ["red", "green", "blue", "dark blue"]},
    }
    assert constraint_fields(SEARCH, "guided") == {"guided_regex": SEARCH.value}
    assert constraint_fields(SQLISH, "structured_outputs") == {
        "structured_outputs": {"grammar": SQLISH.value}
    }
    none = OpenAIBackend("m", BackendOptions(base_url="http://127.0.0.1:9/v1"), constraint_format="none")
    with pytest.raises(UnsupportedCapabilityError, match="constraint_format='none'"):
        await none.generate(ChatRequest.from_prompt("hi", constraint=SEARCH))


def test_vllm_maps_constraints_to_structured_outputs(monkeypatch):
    assert sampling_kwargs(ChatRequest.from_prompt("hi", constraint=COLOURS))["structured_outputs"] == {
        "choice": ["red", "green", "blue", "dark blue"]
    }
    assert sampling_kwargs(ChatRequest.from_prompt("hi", constraint=SEARCH))["structured_outputs"] == {
        "regex": SEARCH.value
    }
    # A fake vllm whose SamplingParams records its arguments: new and old spellings.
    for new in (True, False):
        fake, sp = types.ModuleType("vllm"), types.ModuleType("vllm.sampling_params")
        fake.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
        if new:
            sp.StructuredOutputsParams = lambda **kw: ("SO", kw)  # type: ignore[attr-defined]
        else:
            sp.GuidedDecodingParams = lambda **kw: ("GD", kw)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "vllm", fake)
        monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
        from agentloop.backends.vllm_backend import VLLMBackend

        b = VLLMBackend("some/model")
        assert b.supports_constraints and b.supports_score
        params = b._params(ChatRequest.from_prompt("hi", constraint=SQLISH))
        if new:
            assert params["structured_outputs"] == ("SO", {"grammar": SQLISH.value})
        else:
            assert params["guided_decoding"] == ("GD", {"grammar": SQLISH.value})
            assert "structured_outputs" not in params


async def test_doubles_check_choice_and_regex_answers(tmp_path):
    ok = ScriptedBackend(["blue"])
    assert (await ok.generate(ChatRequest.from_prompt("hi", n=2, constraint=COLOURS))).texts == ["blue"] * 2
    with pytest.raises(ScriptConstraintError, match="'purple'"):
        await ScriptedBackend(["purple"]).generate(ChatRequest.from_prompt("hi", constraint=COLOURS))
    fn = FunctionBackend(lambda r: "search[shoes]" if r.constraint else "anything")
    assert (await fn.generate(ChatRequest.from_prompt("hi", constraint=SEARCH))).texts == ["search[shoes]"]
    with pytest.raises(ScriptConstraintError):
        await FunctionBackend(lambda r: "buy it").generate(ChatRequest.from_prompt("hi", constraint=SEARCH))
    # The cache forwards the capability and the check.
    cached = CachedBackend(_Plain(), tmp_path / "c.sqlite")
    assert not cached.supports_constraints
    with pytest.raises(UnsupportedCapabilityError):
        await cached.generate(ChatRequest.from_prompt("hi", constraint=COLOURS))
    await cached.aclose()


# -- the embedded model -----------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    from agentloop.backends.transformers_backend import TransformersBackend
    from agentloop.models import ensure_embedded_model

    b = TransformersBackend(ensure_embedded_model())
    b.load()
    return b


def _matches(constraint: Constraint, text: str) -> bool:
    if constraint.kind == "grammar":
        return SQLISH_RE.fullmatch(text) is not None
    return bool(constraint.matches(text))


@pytest.mark.model
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("constraint", "prompt"),
    [
        (COLOURS, "What colour is the sky? Answer in one word."),
        (SEARCH, "You shop online. Write a search for cheap red running shoes."),
        (SQLISH, "Write an SQL query listing product names and prices."),
    ],
    ids=["choice", "regex", "grammar"],
)
async def test_every_sampled_answer_matches_its_constraint(backend, constraint, prompt, seed):
    req = ChatRequest.from_prompt(
        prompt, n=8, temperature=1.0, max_tokens=48, seed=seed, constraint=constraint
    )
    resp = await backend.generate(req)
    assert len(resp.completions) == 8
    for c in resp.completions:
        assert c.finish_reason == "stop", c
        assert _matches(constraint, c.text), c.text


@pytest.mark.model
async def test_top_p_and_seed_still_apply_under_a_constraint(backend):
    req = ChatRequest.from_prompt(
        "Write a search for a lamp.",
        n=4,
        temperature=1.0,
        top_p=0.9,
        max_tokens=30,
        seed=7,
        constraint=SEARCH,
    )
    a, b = await backend.generate(req), await backend.generate(req)
    assert a.texts == b.texts and all(SEARCH.matches(t) for t in a.texts)


@pytest.mark.model
async def test_max_tokens_caps_a_constrained_row(backend):
    long_only = Constraint.regex(r"[a-z ]{200,300}")
    resp = await backend.generate(
        ChatRequest.from_prompt("Describe the sea.", n=2, max_tokens=5, seed=0, constraint=long_only)
    )
    for c in resp.completions:
        assert c.finish_reason == "length" and c.completion_tokens == 5
        assert re.fullmatch(r"[a-z ]*", c.text)  # a valid prefix, not a full match


@pytest.mark.model
async def test_stop_strings_still_cut_a_constrained_answer(backend):
    # Stop strings apply as without a constraint: the row ends and the text is cut
    # before the stop string, so it can be a prefix of a valid answer.
    resp = await backend.generate(
        ChatRequest.from_prompt(
            "Write a search.", n=4, max_tokens=30, seed=3, stop=("[",), constraint=SEARCH, temperature=1.0
        )
    )
    assert all(c.text == "search" and c.finish_reason == "stop" for c in resp.completions)


@pytest.mark.model
async def test_a_bad_grammar_is_a_one_line_error(backend):
    with pytest.raises(
        UnsupportedCapabilityError, match="invalid grammar constraint: .*unknown name"
    ) as info:
        await backend.generate(ChatRequest.from_prompt("hi", constraint=Constraint.grammar("start: nowhere")))
    assert "\n" not in str(info.value)
    with pytest.raises(UnsupportedCapabilityError, match="invalid regex constraint"):
        await backend.generate(ChatRequest.from_prompt("hi", constraint=Constraint.regex("(a")))


@pytest.mark.model
@pytest.mark.parametrize(
    ("prompt", "options"),
    [
        ("What colour is the sky? Answer in one word.", ["red", "green", "blue"]),
        ("Is water wet? Answer yes or no.", ["yes", "no"]),
        ("Pick a letter.", ["A", "B", "C"]),
        (
            "You are shopping for red shoes. Next action?",
            ["click[Buy Now]", "click[< Prev]", "search[red shoes]"],
        ),
    ],
)
async def test_greedy_choice_equals_the_argmax_of_score(backend, prompt, options):
    # The transformers backend draws choices from whole-option likelihoods, so greedy
    # is exactly score()'s argmax, multi-token options included.
    req = ChatRequest.from_prompt(
        prompt, temperature=0.0, max_tokens=8, constraint=Constraint.choice(options)
    )
    resp = await backend.generate(req.replace(n=3))
    scores = await backend.score(req, options)
    best = scores.best(normalize=False)
    assert resp.texts == [options[best]] * 3
    assert resp.completions[0].completion_tokens == scores[best].num_tokens


@pytest.mark.server
@pytest.mark.model
async def test_transformers_serve_refuses_constraints_and_is_then_refused_before_sending(
    transformers_server, embedded_model_dir
):
    b = OpenAIBackend(str(embedded_model_dir), BackendOptions(base_url=transformers_server))
    assert b.supports_constraints  # not known until the server answers
    req = ChatRequest.from_prompt("Pick a colour.", max_tokens=4, constraint=COLOURS)
    with pytest.raises(UnsupportedCapabilityError, match="HTTP 422.*structured_outputs") as info:
        await b.generate(req)
    assert "\n" not in str(info.value)
    assert not b.supports_constraints
    b._state = None  # type: ignore[assignment,method-assign]  # any send would now crash
    with pytest.raises(UnsupportedCapabilityError, match="refused them"):
        await b.generate(req)
