"""The transformers backend's continuous batcher, on a stand-in model (no weights, instant).

The stand-in's next token is the row's input token + 1 (modulo 16), and 15 is the end
of text, so every row's output is known in advance.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from agentloop.backends import ChatRequest
from agentloop.backends._batcher import Batcher, Prepared
from agentloop.backends._kv import SlotCache

VOCAB, EOS = 16, 15


class FakeHost:
    id = "fake"
    _eos_ids = {EOS}

    def __init__(self, *, gate: threading.Event | None = None, fail_step: bool = False):
        self.gate = gate  # when set, each step waits for it: the test controls the pace
        self.fail_step = fail_step
        self.rows_per_step: list[int] = []

    def _prepare(self, request: ChatRequest) -> Prepared:
        if request.raw_prompt == "bad":
            raise ValueError("cannot encode this prompt")
        prompt = [int(t) for t in (request.raw_prompt or "").split()]
        return Prepared(prompt=prompt, max_new=request.max_tokens, prefix=None, reused=0)

    def _new_slot_cache(self) -> SlotCache:
        return SlotCache(num_layers=1, kv_heads=1, head_dim=2, dtype=torch.float32, device="cpu")

    def _forward_step(self, ids, positions, mask, cache):
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail_step:
            raise RuntimeError("the model broke")
        cache.update(torch.zeros(ids.shape[0], 1, 1, 2), torch.zeros(ids.shape[0], 1, 1, 2), 0)
        cache.attend(0, torch.zeros(ids.shape[0], 1, 1, 2), 1.0)  # as a model layer does
        self.rows_per_step.append(ids.shape[0])
        return torch.nn.functional.one_hot((ids[:, 0] + 1) % VOCAB, VOCAB).float()

    def _hit_stop(self, tokens, stops):
        return any(s in " ".join(map(str, tokens)) for s in stops)

    def _finish_text(self, tokens, stops):
        return " ".join(str(t) for t in tokens if t != EOS)

    def _max_length(self) -> int:
        return 0


def req(prompt: str, n: int = 1, max_tokens: int = 20, **kw) -> ChatRequest:
    return ChatRequest(raw_prompt=prompt, n=n, max_tokens=max_tokens, temperature=0.0, **kw)


async def test_each_request_gets_its_own_rows_limits_and_stops():
    b = Batcher(FakeHost())
    futures = [
        b.submit(req("1 2 10", n=2)),  # 11 12 13 14, then EOS
        b.submit(req("3", max_tokens=3)),  # 4 5 6: the token limit
        b.submit(req("0", stop=("5",))),  # 1 2 3 4 5: the stop string
    ]
    eos, limit, stop = [await asyncio.wrap_future(f) for f in futures]
    assert eos.texts == ["11 12 13 14"] * 2
    assert [c.finish_reason for c in eos.completions] == ["stop", "stop"]
    assert limit.texts == ["4 5 6"] and limit.completions[0].finish_reason == "length"
    assert stop.completions[0].finish_reason == "stop"
    assert eos.usage.prompt_tokens == 3 and eos.usage.completion_tokens == 2 * 5


async def test_requests_that_arrive_mid_decode_join_the_running_batch():
    gate = threading.Event()
    host = FakeHost(gate=gate)
    b = Batcher(host)
    first = b.submit(req("0", n=2))
    while b._kv is None or b._kv.rows == 0:
        await asyncio.sleep(0.001)
    second = b.submit(req("5", n=3))
    gate.set()
    r1, r2 = await asyncio.wrap_future(first), await asyncio.wrap_future(second)
    assert r1.texts == [" ".join(map(str, range(1, 15)))] * 2
    assert r2.texts == [" ".join(map(str, range(6, 15)))] * 3
    assert max(host.rows_per_step) == 5  # both requests' rows in one forward
    assert b.stats().joined_running == 1


async def test_a_full_batch_makes_later_requests_wait_in_order():
    host = FakeHost()
    b = Batcher(host, max_rows=4)
    futures = [b.submit(req("0", n=3)), b.submit(req("0", n=3)), b.submit(req("0", n=1))]
    await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    # The n=1 request fits beside the first but arrived after the second: it waits its turn.
    assert max(host.rows_per_step) <= 4
    assert b.stats().joined_running == 1  # only the last joined a running batch (beside the second)


async def test_batching_off_serves_one_request_at_a_time():
    host = FakeHost()
    b = Batcher(host, batching=False)
    futures = [b.submit(req(str(i), n=2)) for i in range(3)]
    await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    assert set(host.rows_per_step) == {2} and b.stats().joined_running == 0


async def test_a_bad_request_fails_alone_and_a_broken_step_fails_the_batch():
    b = Batcher(FakeHost())
    good, bad = b.submit(req("0")), b.submit(req("bad"))
    with pytest.raises(ValueError, match="cannot encode"):
        await asyncio.wrap_future(bad)
    assert (await asyncio.wrap_future(good)).completions[0].finish_reason == "stop"
    broken = Batcher(FakeHost(fail_step=True))
    futures = [broken.submit(req("0")), broken.submit(req("1"))]
    for f in futures:
        with pytest.raises(RuntimeError, match="the model broke"):
            await asyncio.wrap_future(f)
    assert broken.submit(req("0")).exception(timeout=5) is not None  # still serving, not wedged


async def test_cancelled_requests_leave_and_exclusive_work_runs_between_steps():
    gate = threading.Event()
    host = FakeHost(gate=gate)
    b = Batcher(host)
    doomed, kept = b.submit(req("0", n=3)), b.submit(req("2"))
    while b._kv is None or b._kv.rows == 0:
        await asyncio.sleep(0.001)
    assert doomed.cancel()
    side = b.run_exclusive(lambda: "scored")
    gate.set()
    assert await asyncio.wrap_future(side) == "scored"
    assert (await asyncio.wrap_future(kept)).texts == [" ".join(map(str, range(3, 15)))]
    assert b._jobs == [] and b._kv.rows == 0
    assert host.rows_per_step[-1] == 1  # the cancelled rows left the batch


async def test_a_failure_while_joining_fails_that_request_and_the_batcher_keeps_serving():
    class Flaky(FakeHost):
        calls = 0

        def _new_slot_cache(self):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise MemoryError("no room for the KV buffer")
            return super()._new_slot_cache()

    b = Batcher(Flaky())
    with pytest.raises(MemoryError, match="no room"):
        await asyncio.wrap_future(b.submit(req("0")))
    assert (await asyncio.wrap_future(b.submit(req("13")))).texts == ["14"]
