"""In-process vLLM backend (``vllm:MODEL``): vLLM's async engine inside this Python process.

Requests go to ``AsyncLLM`` (``vllm.AsyncLLMEngine``), the engine behind ``vllm
serve``: every request in flight is scheduled by vLLM's continuous batching, so the
concurrent tasks of a run share the GPU instead of queueing behind each other. The
engine lives on its own event loop in a background thread, so one backend serves
callers on any event loop (``run_task_sync`` twice, a notebook); a caller that is
cancelled aborts its request in the engine.

Chat prompts are rendered with the model's chat template here and sent as token
ids. Constraints become ``SamplingParams(structured_outputs=StructuredOutputsParams(...))``
(``guided_decoding=GuidedDecodingParams(...)`` on vLLM before 0.10.2). ``score``
sends each prompt + continuation as token ids with ``prompt_logprobs`` and sums the
continuation's part.

This path is tested against a stand-in engine only (no GPU where it was written);
``vllm serve`` with the ``openai:MODEL`` backend is the path tested against a real
server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from agentloop.backends.registry import BackendOptions
from agentloop.errors import BackendError, MissingExtraError
from agentloop.types import (
    CONSTRAINT_KINDS,
    Backend,
    ChatRequest,
    ChatResponse,
    Completion,
    ConstraintKind,
    ContinuationScore,
    FinishReason,
    ScorePrompt,
    ScoreResponse,
    Usage,
    as_score_request,
)

__all__ = ["VLLMBackend", "sampling_kwargs"]

_T = TypeVar("_T")
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "error"}


def sampling_kwargs(request: ChatRequest) -> dict[str, Any]:
    """Map a request to ``vllm.SamplingParams`` keyword arguments.

    ``request.extra`` (``top_k``, ``min_p``, ``repetition_penalty``, ...) is passed
    through and wins over the mapped fields; ``request.constraint`` becomes
    ``structured_outputs`` (a dict of ``StructuredOutputsParams`` fields) and wins over
    both. Greedy requests ask for one sample: vLLM rejects ``n > 1`` at temperature
    0, and the samples would be identical.
    """
    kwargs: dict[str, Any] = {
        "n": 1 if request.greedy else request.n,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
    }
    if request.stop:
        kwargs["stop"] = list(request.stop)
    if request.seed is not None:
        kwargs["seed"] = request.seed
    kwargs.update(request.extra)
    c = request.constraint
    if c is not None:
        kwargs["structured_outputs"] = {c.kind: list(c.value) if isinstance(c.value, tuple) else c.value}
    return kwargs


class _LoopThread:
    """An event loop on a daemon thread: the engine's home, whatever loop the caller runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agentloop-vllm", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


class VLLMBackend(Backend):
    """Samples from a model served by vLLM's async engine in this process (started on first use).

    ``engine`` takes an engine you built (an ``AsyncLLM``, or anything with its
    ``generate(prompt, sampling_params, request_id)`` async iterator and
    ``get_tokenizer()``); it is then yours to shut down. It honours every kind of
    constraint and supports :meth:`score`.
    """

    constraint_kinds: frozenset[ConstraintKind] = CONSTRAINT_KINDS
    supports_score = True

    def __init__(
        self,
        model: str,
        options: BackendOptions | None = None,
        *,
        engine: Any = None,
        **engine_kwargs: Any,
    ):
        try:
            import vllm
        except ImportError as exc:
            raise MissingExtraError("vllm", "vllm") from exc
        if not model:
            raise BackendError(
                "the vllm backend needs a model: write it as 'vllm:MODEL' (a hub id or a path)"
            )
        options = options or BackendOptions()
        self.id = f"vllm:{model}"
        self.model = model
        self._vllm = vllm
        self._engine_kwargs = {"dtype": options.dtype or "auto", **engine_kwargs}
        self._engine: Any = engine
        self._own_engine = engine is None
        self._tokenizer: Any = None
        self._home: _LoopThread | None = None
        self._home_lock = threading.Lock()

    @classmethod
    def from_id(cls, arg: str, options: BackendOptions) -> VLLMBackend:
        return cls(arg, options)

    # -- the engine and its loop -------------------------------------------------

    async def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the engine's loop; cancelling the caller cancels it there."""
        with self._home_lock:
            if self._home is None:
                self._home = _LoopThread()
            home = self._home
        return await asyncio.wrap_future(home.submit(coro))

    async def _ready(self) -> Any:
        """The engine and its tokenizer, built on the engine loop the first time."""
        if self._engine is None:
            args = self._vllm.AsyncEngineArgs(model=self.model, **self._engine_kwargs)
            self._engine = self._vllm.AsyncLLMEngine.from_engine_args(args)
        if self._tokenizer is None:
            tok = self._engine.get_tokenizer()
            # vLLM before the V1 engine made get_tokenizer a coroutine.
            self._tokenizer = await tok if inspect.isawaitable(tok) else tok
        return self._engine

    def _params(self, request: ChatRequest) -> Any:
        kwargs = sampling_kwargs(request)
        so = kwargs.get("structured_outputs")
        if isinstance(so, Mapping):  # the JSON form that `vllm serve` accepts
            sp = importlib.import_module("vllm.sampling_params")
            if hasattr(sp, "StructuredOutputsParams"):
                kwargs["structured_outputs"] = sp.StructuredOutputsParams(**so)
            else:  # vLLM before 0.10.2 named it guided decoding
                kwargs["guided_decoding"] = sp.GuidedDecodingParams(**kwargs.pop("structured_outputs"))
        return self._sampling_params(**kwargs)

    def _sampling_params(self, **kwargs: Any) -> Any:
        # Only the finished output is wanted, not one per step.
        kind = getattr(importlib.import_module("vllm.sampling_params"), "RequestOutputKind", None)
        if kind is not None and hasattr(kind, "FINAL_ONLY"):
            kwargs.setdefault("output_kind", kind.FINAL_ONLY)
        return self._vllm.SamplingParams(**kwargs)

    def _prompt_ids(self, request: ChatRequest) -> list[int]:
        tok = self._tokenizer
        if request.raw_prompt is not None:
            return list(tok(request.raw_prompt, add_special_tokens=False)["input_ids"])
        msgs = [{"role": m.role, "content": m.content} for m in request.messages]
        out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding here; earlier releases a list of ids.
        return list(out["input_ids"] if isinstance(out, Mapping) else out)

    async def _final(self, prompt_ids: list[int], params: Any) -> Any:
        """Submit one request to the engine and return its finished output."""
        engine = self._engine
        last = None
        request_id = f"agentloop-{uuid.uuid4().hex}"
        async for out in engine.generate({"prompt_token_ids": prompt_ids}, params, request_id):
            last = out
        if last is None:
            raise BackendError(f"{self.id}: the engine returned nothing for request {request_id}")
        return last

    # -- generation ----------------------------------------------------------------

    async def generate(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        out = await self._call(self._generate_on_engine(request))
        completions = [
            Completion(
                text=o.text,
                finish_reason=_FINISH.get(o.finish_reason or ""),
                completion_tokens=len(o.token_ids),
            )
            for o in out.outputs
        ]
        if request.greedy and completions:
            completions = completions[:1] * request.n
        usage = Usage(
            prompt_tokens=len(out.prompt_token_ids or ()),
            completion_tokens=sum(len(o.token_ids) for o in out.outputs),
            latency_s=time.perf_counter() - start,
            llm_calls=1,
            reused_prompt_tokens=getattr(out, "num_cached_tokens", None) or 0,
        )
        return ChatResponse(completions=completions, usage=usage, model=self.model)

    async def _generate_on_engine(self, request: ChatRequest) -> Any:
        await self._ready()
        return await self._final(self._prompt_ids(request), self._params(request))

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        """Log-likelihoods from vLLM's prompt log-probabilities, all continuations in flight at once.

        Each continuation is tokenized on its own and appended to the prompt's token
        ids, as ``generate`` would emit it after the prompt.
        """
        request = as_score_request(prompt)
        conts = list(continuations)
        start = time.perf_counter()
        prompt_ids, cont_ids, outs = await self._call(self._score_on_engine(request, conts))
        scores = []
        for text, ids, out in zip(conts, cont_ids, outs, strict=True):
            plp = out.prompt_logprobs or []
            # Entry i is a {token_id: Logprob} dict for prompt token i (None for the first).
            lp = sum(plp[len(prompt_ids) + j][t].logprob for j, t in enumerate(ids))
            scores.append(ContinuationScore(text=text, logprob=float(lp), num_tokens=len(ids)))
        usage = Usage(
            prompt_tokens=len(prompt_ids),
            completion_tokens=sum(map(len, cont_ids)),
            latency_s=time.perf_counter() - start,
            llm_calls=1,
        )
        return ScoreResponse(scores=scores, usage=usage, model=self.model)

    async def _score_on_engine(
        self, request: ChatRequest, conts: list[str]
    ) -> tuple[list[int], list[list[int]], list[Any]]:
        await self._ready()
        tok = self._tokenizer
        prompt_ids = self._prompt_ids(request)
        cont_ids = [list(tok(c, add_special_tokens=False)["input_ids"]) if c else [] for c in conts]
        # prompt_logprobs=1 returns each prompt token's own log-probability (plus the top one).
        params = self._sampling_params(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outs = await asyncio.gather(*(self._final(prompt_ids + ids, params) for ids in cont_ids))
        return prompt_ids, cont_ids, list(outs)

    async def aclose(self) -> None:
        home, self._home = self._home, None
        if self._own_engine:
            engine, self._engine = self._engine, None
            if engine is not None and hasattr(engine, "shutdown"):
                engine.shutdown()  # frees the GPU and stops the engine's worker process
        if home is not None:
            home.stop()
