"""In-process vLLM backend (``vllm:MODEL``): one ``vllm.LLM`` engine inside this Python process.

The main GPU path is not this module: run ``vllm serve MODEL`` and use the
``openai:MODEL`` backend with ``--base-url http://HOST:8000/v1``. That gives
continuous batching across concurrent requests, keeps the model loaded between
runs, and uses the adapter that is tested against a real server. This backend is a
thin convenience for single-process scripts: each request is one ``llm.chat`` (or
``llm.generate`` for raw prompts) call with ``SamplingParams(n=...)``, run in a
worker thread, one at a time because ``vllm.LLM`` is not thread-safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from agentloop.backends._aio import LoopLock
from agentloop.backends._types import Backend, ChatRequest, ChatResponse, Completion, FinishReason, Usage
from agentloop.backends.registry import BackendOptions
from agentloop.errors import BackendError, MissingExtraError

__all__ = ["VLLMBackend", "sampling_kwargs"]

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "error"}


def sampling_kwargs(request: ChatRequest) -> dict[str, Any]:
    """Map a request to ``vllm.SamplingParams`` keyword arguments.

    ``request.extra`` (``top_k``, ``min_p``, ``repetition_penalty``, ...) is passed
    through and wins over the mapped fields. Greedy requests ask for one sample:
    vLLM rejects ``n > 1`` at temperature 0, and the samples would be identical.
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
    return kwargs


class VLLMBackend(Backend):
    """Samples from a model loaded in-process with ``vllm.LLM`` (loaded on first use)."""

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
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**so)
        return self._vllm.SamplingParams(**kwargs)

    def _run(self, request: ChatRequest) -> Any:
        if self._llm is None:
            self._llm = self._vllm.LLM(model=self.model, **self._engine_kwargs)
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

    async def aclose(self) -> None:
        # Dropping the engine frees its GPU memory once nothing else refers to it.
        self._llm = None
