"""Continuous batching in the transformers backend, on the real embedded model.

Requests served together must get what they get when served alone; requests that
arrive while others decode must join the running batch; each keeps its own settings.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from agentloop.backends import ChatRequest, Constraint, resolve_backend
from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.errors import AgentloopError
from agentloop.models import ensure_embedded_model

pytestmark = pytest.mark.model

# Prompts of different lengths, so the rows in one batch hold caches of different lengths.
PROMPTS = [
    "Name a fruit.",
    "Write an SQL query that counts the singers older than 30 in the table singer.",
    "Explain in two sentences why the sky is blue, for a child who asks a lot of questions.",
    "List three prime numbers.",
    "Translate 'good morning' into French.",
]


@pytest.fixture(scope="module")
def backend():
    b = TransformersBackend(ensure_embedded_model())
    b.load()
    return b


async def _wait_for_steps(b: TransformersBackend, steps: int) -> None:
    start = b.stats().batch.steps
    while b.stats().batch.steps < start + steps:
        await asyncio.sleep(0.01)


async def test_greedy_outputs_served_together_equal_outputs_served_alone(backend):
    reqs = [ChatRequest.from_prompt(p, n=2, max_tokens=12, temperature=0.0) for p in PROMPTS[:4]]
    alone = [await backend.generate(r) for r in reqs]
    joined_before = backend.stats().batch.joined_running
    together = await asyncio.gather(*(backend.generate(r) for r in reqs))
    assert backend.stats().batch.joined_running >= joined_before + len(reqs) - 1
    assert [r.texts for r in together] == [r.texts for r in alone]
    assert [r.usage.completion_tokens for r in together] == [r.usage.completion_tokens for r in alone]


async def test_a_request_that_arrives_mid_decode_joins_and_matches_alone(backend):
    long = ChatRequest.from_prompt(
        PROMPTS[2], n=2, max_tokens=24, temperature=0.0, extra={"ignore_eos": True}
    )
    late = ChatRequest.from_prompt(PROMPTS[1], n=2, max_tokens=8, temperature=0.0)
    alone_long, alone_late = await backend.generate(long), await backend.generate(late)
    joined = backend.stats().batch.joined_running
    first = asyncio.ensure_future(backend.generate(long))
    await _wait_for_steps(backend, 5)
    second = await backend.generate(late)
    assert not first.done()  # it joined the running batch rather than waiting for it
    assert backend.stats().batch.joined_running == joined + 1
    assert (await first).texts == alone_long.texts
    assert second.texts == alone_late.texts


async def test_seeded_sampling_repeats_for_the_same_arrival_order(backend):
    reqs = [
        ChatRequest.from_prompt(p, n=2, max_tokens=8, temperature=1.0, top_p=0.9, seed=i)
        for i, p in enumerate(PROMPTS[:3])
    ]
    a = await asyncio.gather(*(backend.generate(r) for r in reqs))
    b = await asyncio.gather(*(backend.generate(r) for r in reqs))
    assert [r.texts for r in a] == [r.texts for r in b]
    # Each request draws from its own generator: its samples do not depend on its neighbours.
    alone = await backend.generate(reqs[1])
    assert alone.texts == a[1].texts


async def test_each_request_keeps_its_own_settings_in_one_batch(backend):
    search = Constraint.regex(r"search\[[a-z ]{3,12}\]")
    reqs = [
        ChatRequest.from_prompt("List the numbers 1 to 9, one per line.", n=2, max_tokens=24, stop=("4",)),
        ChatRequest.from_prompt("Count to one hundred.", n=3, max_tokens=3, extra={"ignore_eos": True}),
        ChatRequest.from_prompt("Search for red shoes.", n=2, max_tokens=24, seed=1, constraint=search),
        ChatRequest.from_prompt("Name a colour.", n=1, max_tokens=8, temperature=0.0),
    ]
    stop, short, constrained, greedy = await asyncio.gather(*(backend.generate(r) for r in reqs))
    assert all("4" not in c.text and c.finish_reason in ("stop", "length") for c in stop.completions)
    assert [(c.completion_tokens, c.finish_reason) for c in short.completions] == [(3, "length")] * 3
    assert all(re.fullmatch(r"search\[[a-z ]{3,12}\]", c.text) for c in constrained.completions)
    assert greedy.texts == (await backend.generate(reqs[3])).texts


async def test_a_cancelled_request_leaves_the_batch_and_the_rest_finish(backend):
    long = ChatRequest.from_prompt("Tell a long story.", n=2, max_tokens=200, extra={"ignore_eos": True})
    short = ChatRequest.from_prompt("Name a fruit.", n=1, max_tokens=8, temperature=0.0)
    doomed = asyncio.ensure_future(backend.generate(long))
    await _wait_for_steps(backend, 3)
    kept = asyncio.ensure_future(backend.generate(short))
    await _wait_for_steps(backend, 2)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert (await kept).texts == (await backend.generate(short)).texts
    batcher = backend._batcher
    assert batcher._jobs == [] and (batcher._kv is None or batcher._kv.rows == 0)


async def test_score_between_steps_neither_waits_for_nor_breaks_the_batch(backend):
    options = [" red", " blue", " green"]
    idle = await backend.score("The colour of the sky is", options)
    gen = ChatRequest.from_prompt(PROMPTS[2], n=1, max_tokens=24, temperature=0.0, extra={"ignore_eos": True})
    alone = await backend.generate(gen)
    running = asyncio.ensure_future(backend.generate(gen))
    await _wait_for_steps(backend, 3)
    during = await backend.score("The colour of the sky is", options)
    assert not running.done()  # scored between two steps, not after the batch
    assert [s.logprob for s in during] == pytest.approx([s.logprob for s in idle], abs=1e-4)
    assert (await running).texts == alone.texts


async def test_batching_off_serves_one_request_at_a_time():
    b = TransformersBackend(ensure_embedded_model(), batching=False)
    reqs = [ChatRequest.from_prompt(p, n=2, max_tokens=6, temperature=0.0) for p in PROMPTS[:3]]
    await asyncio.gather(*(b.generate(r) for r in reqs))
    stats = b.stats().batch
    assert stats.joined_running == 0 and stats.max_rows == 2 and stats.requests == 3


async def test_prefix_cache_hits_are_counted(backend):
    backend.clear_prefix_cache()
    before = backend.stats().prefix_cache
    req = ChatRequest.from_prompt("You are a careful assistant. " * 10 + "Say yes.", max_tokens=2)
    await backend.generate(req)
    await backend.generate(ChatRequest.from_prompt(req.messages[0].content + " Now say no.", max_tokens=2))
    after = backend.stats().prefix_cache
    assert after.lookups == before.lookups + 2
    assert after.hits == before.hits + 1
    assert after.reused_tokens - before.reused_tokens > 50
    assert after.bytes > 0 and after.entries >= 1


def test_backend_options_in_the_id():
    b = resolve_backend("transformers?dtype=int8&batching=off&prefix_cache_mb=64")
    assert isinstance(b, TransformersBackend)
    assert (b.dtype_name, b._batching, b._prefix.capacity_bytes) == ("int8", False, 64 << 20)
    path = resolve_backend("transformers:/models/x?dtype=bfloat16")
    assert str(path.model_path) == "/models/x" and path.dtype_name == "bfloat16"
    with pytest.raises(AgentloopError, match="unknown transformers backend option 'dtyp'"):
        resolve_backend("transformers?dtyp=int8")
    with pytest.raises(AgentloopError, match="unknown dtype 'int4'"):
        resolve_backend("transformers?dtype=int4")


def test_int8_weights_keep_the_next_token_distribution_close(backend):
    pytest.importorskip("torchao")
    import torch

    q = TransformersBackend(ensure_embedded_model(), dtype="int8")
    q.load()
    linears = [m for m in q._model.modules() if hasattr(m, "w_int8")]
    assert len(linears) == 30 * 7 + 1  # every projection of the 30 layers, and the LM head
    assert all(m.weight is None for m in linears)
    assert all(m.in_scale is not None for m in linears)  # smoothed on the shipped calibration text
    # The LM head is tied to the embeddings: smoothing it must leave the embeddings as they were.
    emb, emb_fp = q._model.get_input_embeddings().weight, backend._model.get_input_embeddings().weight
    assert torch.equal(emb, emb_fp)
    with torch.inference_mode():
        for prompt in PROMPTS[:3]:
            ids = torch.tensor([backend.encode(ChatRequest.from_prompt(prompt))])
            fp = backend._model(input_ids=ids).logits[0, -1]
            i8 = q._model(input_ids=ids).logits[0, -1]
            assert torch.nn.functional.cosine_similarity(fp, i8, dim=0) > 0.99
            assert fp.argmax() in i8.topk(5).indices
