"""In-process vLLM backend (``vllm:MODEL``): one ``vllm.LLM`` engine inside this Python process.

The main GPU path is not this module: run ``vllm serve MODEL`` and use the
``openai:MODEL`` backend with ``--base-url http://HOST:8000/v1``. That gives
continuous batching across concurrent requests, keeps the model loaded between
runs, and uses the adapter that is tested against a real server. This backend is a
thin convenience for single-process scripts: each request is one ``llm.chat`` (or
``llm.generate`` for raw prompts) call with ``SamplingParams(n=...)``, run in a
worker thread, one at a time because ``vllm.LLM`` is not thread-safe.

Constraints become ``SamplingParams(structured_outputs=StructuredOutputsParams(...))``
(``guided_decoding=GuidedDecodingParams(...)`` on vLLM before 0.10.2). ``score``
sends each prompt + continuation as token ids with ``prompt_logprobs`` and sums the
continuation's part.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agentloop.backends._aio import LoopLock
from agentloop.backends._constraint import CONSTRAINT_KINDS, ConstraintKind
from agentloop.backends._types import (
    Backend,
    ChatRequest,
    ChatResponse,
    Completion,
    ContinuationScore,
    FinishReason,
    ScorePrompt,
    ScoreResponse,
    Usage,
    as_score_request,
)
from agentloop.backends.registry import BackendOptions
from agentloop.errors import BackendError, MissingExtraError

__all__ = ["VLLMBackend", "sampling_kwargs"]

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


class VLLMBackend(Backend):
    """Samples from a model loaded in-process with ``vllm.LLM`` (loaded on first use).

    It honours every kind of constraint and supports :meth:`score`.
    """

    constraint_kinds: frozenset[ConstraintKind] = CONSTRAINT_KINDS
    supports_score = True

    def __init__(self, model: str, options: BackendOptions | None = None, **engine_kwargs: Any):
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
        self._llm: Any = None
        self._lock = LoopLock()

    @classmethod
    def from_id(cls, arg: str, options: BackendOptions) -> VLLMBackend:
        return cls(arg, options)

    def _params(self, request: ChatRequest) -> Any:
        kwargs = sampling_kwargs(request)
        so = kwargs.get("structured_outputs")
        if isinstance(so, Mapping):  # the JSON form that `vllm serve` accepts
            sp = importlib.import_module("vllm.sampling_params")
            if hasattr(sp, "StructuredOutputsParams"):
                kwargs["structured_outputs"] = sp.StructuredOutputsParams(**so)
            else:  # vLLM before 0.10.2 named it guided decoding
                kwargs["guided_decoding"] = sp.GuidedDecodingParams(**kwargs.pop("structured_outputs"))
        return self._vllm.SamplingParams(**kwargs)

    def _engine(self) -> Any:
        if self._llm is None:
            self._llm = self._vllm.LLM(model=self.model, **self._engine_kwargs)
        return self._llm

    def _run(self, request: ChatRequest) -> Any:
        self._engine()
        params = self._params(request)
        if request.raw_prompt is not None:
            return self._llm.generate([request.raw_prompt], params, use_tqdm=False)[0]
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        return self._llm.chat(messages, params, use_tqdm=False)[0]

    async def generate(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        async with self._lock:
            out = await asyncio.to_thread(self._run, request)
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

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        """Log-likelihoods from vLLM's prompt log-probabilities, one engine call for all continuations.

        Each continuation is tokenized on its own and appended to the prompt's token
        ids, as ``generate`` would emit it after the prompt.
        """
        request = as_score_request(prompt)
        conts = list(continuations)
        start = time.perf_counter()
        async with self._lock:
            prompt_ids, cont_ids, outs = await asyncio.to_thread(self._score_run, request, conts)
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

    def _score_run(
        self, request: ChatRequest, conts: list[str]
    ) -> tuple[list[int], list[list[int]], list[Any]]:
        llm = self._engine()
        tok = llm.get_tokenizer()
        if request.raw_prompt is not None:
            prompt_ids = list(tok(request.raw_prompt, add_special_tokens=False)["input_ids"])
        else:
            msgs = [{"role": m.role, "content": m.content} for m in request.messages]
            out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            # transformers 5 returns a BatchEncoding here; earlier releases a list of ids.
            prompt_ids = list(out["input_ids"] if isinstance(out, Mapping) else out)
        cont_ids = [list(tok(c, add_special_tokens=False)["input_ids"]) if c else [] for c in conts]
        # prompt_logprobs=1 returns each prompt token's own log-probability (plus the top one).
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        prompts = [{"prompt_token_ids": prompt_ids + ids} for ids in cont_ids]
        outs = list(llm.generate(prompts, params, use_tqdm=False)) if prompts else []
        return prompt_ids, cont_ids, outs

    async def aclose(self) -> None:
        # Dropping the engine frees its GPU memory once nothing else refers to it.
        self._llm = None
