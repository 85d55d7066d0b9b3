"""Continuous batching for the transformers backend: requests join and leave the running batch.

One worker thread owns the model. Each decode step runs one forward over every row
of every request in flight; a request that arrives meanwhile is prefilled at the next
step boundary and its n rows join the batch, and a row that finishes leaves it (the
last row moves into its slot, so rows stay contiguous). Each request keeps its own
sampling settings, ``torch.Generator``, stop strings, token limit and constraint
matchers, so what it gets depends on the other rows only through the last bits of
floating point (batched kernels may sum in another order).

Work that needs the model to itself (``score``, choice constraints) runs between two
steps, so it waits for at most one step and never breaks the batch.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from agentloop.backends._kv import SlotCache
from agentloop.backends._sampling import sample
from agentloop.types import ChatRequest, ChatResponse, Completion, FinishReason, Usage

__all__ = ["BatchStats", "Batcher", "Prepared"]


@dataclass
class Prepared:
    """A request ready to join the batch: its prompt, prefilled up to the last token."""

    prompt: list[int]
    max_new: int
    prefix: Any  # a batch-1 cache holding prompt[:-1]
    reused: int  # prompt tokens served from the prefix cache
    matchers: Any = None  # RowMatchers, one per row, or None


class Host(Protocol):
    """What the batcher needs from the backend that owns the model."""

    id: str
    _eos_ids: set[int]

    def _prepare(self, request: ChatRequest) -> Prepared: ...
    def _new_slot_cache(self) -> SlotCache: ...
    def _forward_step(self, ids: Any, positions: Any, mask: Any, cache: SlotCache) -> Any: ...
    def _hit_stop(self, tokens: list[int], stops: tuple[str, ...]) -> bool: ...
    def _finish_text(self, tokens: list[int], stops: tuple[str, ...]) -> str: ...
    def _max_length(self) -> int: ...


@dataclass
class _Row:
    slot: int
    tokens: list[int] = field(default_factory=list)
    reason: FinishReason | None = None


class _Job:
    def __init__(self, request: ChatRequest | None, fn: Callable[[], Any] | None = None):
        self.request = request
        self.fn = fn  # exclusive work (score, choice) instead of a decode
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.start = time.perf_counter()
        self.rows: list[_Row] = []
        self.active: list[int] = []  # indices into rows still decoding
        self.prep: Prepared | None = None
        self.gen: Any = None
        self.ignore_eos = False

    @property
    def dropped(self) -> bool:
        return self.future.done()  # cancelled by its caller (or already answered)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What the decode loop did: steps run, rows per step, requests that joined a running batch."""

    steps: int
    row_steps: int  # rows summed over steps
    max_rows: int
    requests: int
    joined_running: int  # requests admitted while other rows were decoding

    @property
    def mean_rows(self) -> float:
        return self.row_steps / self.steps if self.steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "mean_rows": round(self.mean_rows, 2),
            "max_rows": self.max_rows,
            "requests": self.requests,
            "joined_running": self.joined_running,
        }


class Batcher:
    """Serves generate requests as one running batch, on a worker thread started on demand.

    ``batching=False`` admits a request only once the batch is empty: requests are
    then served one at a time, as before continuous batching (kept for comparison).
    ``max_rows`` caps the rows decoding at once; a request that would pass it waits.
    The KV buffer is kept between busy spells up to ``keep_bytes``, freed when larger.
    ``threads`` is the worker's torch thread count (default: the caller's).
    """

    def __init__(
        self,
        host: Host,
        *,
        batching: bool = True,
        max_rows: int = 64,
        keep_bytes: int = 256 << 20,
        threads: int | None = None,
    ):
        self.host = host
        self.batching = batching
        self.max_rows = max_rows
        self.keep_bytes = keep_bytes
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._jobs: list[_Job] = []
        self._slots: list[tuple[_Job, int]] = []  # slot -> (job, row index)
        self._inputs: list[int] = []  # slot -> the token it feeds next
        self._kv: SlotCache | None = None
        self._steps = self._row_steps = self._max_seen = self._requests = self._joined = 0
        # OpenMP's thread count is a per-thread setting: give the worker the caller's.
        self._threads = threads or torch.get_num_threads()

    # -- submitting ----------------------------------------------------------------

    def submit(self, request: ChatRequest) -> concurrent.futures.Future[ChatResponse]:
        """Queue a generate request; the future resolves to its response."""
        return self._enqueue(_Job(request))

    def run_exclusive(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run ``fn`` on the worker thread between two decode steps (the model to itself)."""
        return self._enqueue(_Job(None, fn))

    def _enqueue(self, job: _Job) -> concurrent.futures.Future[Any]:
        with self._cond:
            self._pending.append(job)
            if self._thread is None:
                # Not a daemon: at exit Python waits for it (it stops once idle) instead of
                # killing it inside torch, which aborts the process.
                self._thread = threading.Thread(target=self._run, name="agentloop-decode")
                self._thread.start()
        return job.future

    def stats(self) -> BatchStats:
        return BatchStats(self._steps, self._row_steps, self._max_seen, self._requests, self._joined)

    def release(self) -> None:
        """Free the batch's KV buffers (only while idle)."""
        with self._cond:
            if self._thread is None and self._kv is not None:
                self._kv.release()
                self._kv = None

    # -- the worker ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug here must not leave callers waiting forever
            with self._cond:
                self._thread = None
                pending, self._pending = self._pending, []
            self._fail_all(exc)
            for job in pending:
                if not job.future.done():
                    job.future.set_exception(exc)

    def _loop(self) -> None:
        torch.set_num_threads(self._threads)
        with torch.inference_mode():
            while True:
                with self._cond:
                    waiting = self._admissible()
                    if not waiting and not self._jobs:
                        # Exits with the lock held, so a submit after this starts a new thread.
                        self._thread = None
                        if self._kv is not None and self._kv.nbytes > self.keep_bytes:
                            self._kv.release()  # a long-context batch's buffer is not kept while idle
                            self._kv = None
                        return
                for job in waiting:
                    self._start(job)
                if self._jobs:
                    try:
                        self._step()
                    except BaseException as exc:  # noqa: BLE001 - every request in the batch gets it
                        self._fail_all(exc)

    def _admissible(self) -> list[_Job]:
        """Take the pending jobs that may start now (called with the lock held).

        Requests join in arrival order: once one has to wait (the batch is full, or
        batching is off), the ones behind it wait too, so a large request is not starved.
        """
        take: list[_Job] = []
        keep: list[_Job] = []
        rows = self._kv.rows if self._kv is not None else 0
        blocked = False
        for job in self._pending:
            if job.dropped:
                continue
            if job.fn is not None:
                take.append(job)
                continue
            assert job.request is not None
            busy = rows > 0 or any(j.fn is None for j in take)
            if blocked or (busy and (not self.batching or rows + job.request.n > self.max_rows)):
                blocked = True
                keep.append(job)
                continue
            take.append(job)
            rows += job.request.n
        self._pending = keep
        return take

    def _start(self, job: _Job) -> None:
        if job.fn is not None:
            _settle(job, job.fn)
            return
        try:
            self._join(job)
        except BaseException as exc:  # noqa: BLE001 - the error belongs to this request only
            if not job.future.done():
                job.future.set_exception(exc)

    def _join(self, job: _Job) -> None:
        """Prefill a request and add its rows to the batch."""
        assert job.request is not None
        job.prep = self.host._prepare(job.request)
        request, prep = job.request, job.prep
        if self._kv is None:
            self._kv = self.host._new_slot_cache()
        running = self._kv.rows > 0
        job.gen = _generator(request.seed, self._kv.device)
        # vLLM's name for it; benchmarks use it to decode a fixed number of tokens.
        job.ignore_eos = bool(request.extra.get("ignore_eos", False))
        slots = self._kv.add_rows(
            prep.prefix,
            request.n,
            max_length=self.host._max_length(),
        )
        job.prep.prefix = None  # the slot cache holds it now, once for the rows
        job.rows = [_Row(slot) for slot in slots]
        job.active = list(range(request.n))
        for r, slot in enumerate(slots):
            self._slots.append((job, r))
            self._inputs.append(prep.prompt[-1])
            assert len(self._slots) == slot + 1
        self._jobs.append(job)
        self._requests += 1
        self._joined += int(running)

    def _step(self) -> None:
        kv = self._kv
        assert kv is not None
        self._drop_cancelled()
        if not self._jobs:
            return
        rows = kv.rows
        ids = torch.tensor(self._inputs, dtype=torch.long, device=kv.device).view(rows, 1)
        positions, mask = kv.step_inputs()
        logits = self.host._forward_step(ids, positions, mask, kv)
        kv.end_step()
        self._steps += 1
        self._row_steps += rows
        self._max_seen = max(self._max_seen, rows)
        logits = logits.float()
        finished: list[int] = []
        done: list[_Job] = []
        for job in list(self._jobs):
            finished.extend(self._advance(job, logits))
            if not job.active:
                self._jobs.remove(job)
                done.append(job)
        if finished:
            self._compact(finished)
        for job in done:  # answered once the batch no longer holds their rows
            self._complete(job)

    def _advance(self, job: _Job, logits: Any) -> list[int]:
        """Sample the job's next tokens from its rows' logits; return the slots that finished."""
        request, prep = job.request, job.prep
        assert request is not None and prep is not None
        slots = [job.rows[r].slot for r in job.active]
        if slots == list(range(slots[0], slots[0] + len(slots))):
            sub = logits[slots[0] : slots[0] + len(slots)]  # a view; the matchers mask the batch's logits
        else:
            sub = logits[torch.tensor(slots, device=logits.device)]
        matchers = prep.matchers
        if matchers is not None:
            matchers.mask_(sub, job.active)  # before temperature and top_p, like any logits processor
        next_ids = sample(sub, request.temperature, request.top_p, job.gen).tolist()
        eos = self.host._eos_ids
        keep, done = [], []
        for r, tok in zip(job.active, next_ids, strict=True):
            row = job.rows[r]
            row.tokens.append(tok)
            if matchers is not None and tok in eos:
                row.reason = "stop"  # the mask lets EOS through only where the grammar may end
            elif matchers is not None and (step := matchers.advance(r, tok)) != "continue":
                row.reason = "stop" if step == "done" else "error"
            elif tok in eos and not job.ignore_eos:
                row.reason = "stop"
            elif request.stop and self.host._hit_stop(row.tokens, request.stop):
                row.reason = "stop"
            elif len(row.tokens) >= prep.max_new:
                row.reason = "length"
            else:
                keep.append(r)
                self._inputs[row.slot] = tok
                continue
            done.append(row.slot)
        job.active = keep
        return done

    def _compact(self, freed: list[int]) -> None:
        """Fill the finished rows' slots with live rows from the end, keeping rows contiguous."""
        kv = self._kv
        assert kv is not None
        free = set(freed)
        live = kv.rows - len(free)
        holes = sorted(s for s in free if s < live)
        movers = [s for s in range(live, kv.rows) if s not in free]
        for hole, src in zip(holes, movers, strict=True):
            kv.move_row(src, hole)
            job, r = self._slots[src]
            job.rows[r].slot = hole
            self._slots[hole] = (job, r)
            self._inputs[hole] = self._inputs[src]
        del self._slots[live:]
        del self._inputs[live:]
        kv.truncate_rows(live)

    def _drop_cancelled(self) -> None:
        gone = [job for job in self._jobs if job.dropped]
        if not gone:
            return
        freed = [job.rows[r].slot for job in gone for r in job.active]
        for job in gone:
            job.active = []
            self._jobs.remove(job)
        if freed:
            self._compact(freed)

    def _complete(self, job: _Job) -> None:
        request, prep = job.request, job.prep
        assert request is not None and prep is not None
        completions = [
            Completion(
                text=self.host._finish_text(row.tokens, request.stop),
                finish_reason=row.reason or "length",
                completion_tokens=len(row.tokens),
            )
            for row in job.rows
        ]
        usage = Usage(
            prompt_tokens=len(prep.prompt),
            completion_tokens=sum(len(row.tokens) for row in job.rows),
            latency_s=time.perf_counter() - job.start,
            llm_calls=1,
            cost_usd=0.0,
            reused_prompt_tokens=prep.reused,
        )
        if not job.future.done():
            job.future.set_result(ChatResponse(completions=completions, usage=usage, model=self.host.id))

    def _fail_all(self, exc: BaseException) -> None:
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(exc)
        self._jobs = []
        self._slots = []
        self._inputs = []
        if self._kv is not None:
            self._kv.release()
            self._kv = None


def _settle(job: _Job, fn: Callable[[], Any]) -> None:
    if job.future.done():
        return
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the caller
        if not job.future.done():
            job.future.set_exception(exc)
        return
    if not job.future.done():
        job.future.set_result(result)


def _generator(seed: int | None, device: Any) -> Any:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    return gen
