"""Anthropic Messages API backend (``anthropic:MODEL``) through the official ``anthropic`` SDK.

The API returns one message per request, so ``n`` candidates are ``n`` concurrent
requests. ``seed`` is ignored: the API has no seed parameter.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import Any

from agentloop.backends._sdk_client import SDKClientBackend
from agentloop.backends.registry import BackendOptions
from agentloop.errors import BackendError, BackendUnavailableError, MissingAPIKeyError, MissingExtraError
from agentloop.types import ChatRequest, ChatResponse, Completion, FinishReason, Usage

__all__ = ["ANTHROPIC_PRICES_PER_1M", "AnthropicBackend", "anthropic_cost_usd", "message_params"]

log = logging.getLogger(__name__)

# USD per 1M tokens (input, output): approximate list prices from Anthropic's pricing
# page as of 2026-11. Unknown models report cost_usd=None rather than a guess.
ANTHROPIC_PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "claude-opus-5-5": (4.00, 20.00),
    "claude-opus-5": (5.00, 25.00),
    "claude-sonnet-5-5": (2.00, 10.00),
    "claude-sonnet-5": (2.00, 10.00),
    "claude-opus-4-7": (5.00, 25.00),
    "claude-opus-4-6": (5.00, 25.00),
    "claude-opus-4-5": (5.00, 25.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
}
# Prompt-cache multipliers on the input price: 5-minute cache writes and cache reads.
_CACHE_WRITE, _CACHE_READ = 1.25, 0.10

_DATED = re.compile(r"-\d{8}$")  # claude-sonnet-4-5-20250929 is priced as claude-sonnet-4-5
_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "error",
}
# Sampling-parameter rules differ by model and are enforced with a 400: Sonnet/Haiku 4.5
# and Opus 4.1 to 4.6 reject temperature and top_p together; models from Opus 4.7 on
# (the whole 5 family) reject temperature, top_p and top_k outright ("`temperature` is
# deprecated for this model"). Rather than keep a model list that goes stale, the
# backend reads the error, drops what the model refuses, retries once, and remembers
# it for this instance.
_DEPRECATED = re.compile(r"(temperature|top_p|top_k)`? is deprecated", re.I)
_NOT_BOTH = re.compile(r"temperature`? and `?top_p`? cannot both be specified", re.I)


def anthropic_cost_usd(
    model: str, input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0
) -> float | None:
    """Approximate cost of a call from the price table, or None for an unknown model."""
    price = ANTHROPIC_PRICES_PER_1M.get(model) or ANTHROPIC_PRICES_PER_1M.get(_DATED.sub("", model))
    if price is None:
        return None
    inp, out = price
    prompt_cost = inp * (input_tokens + _CACHE_WRITE * cache_write + _CACHE_READ * cache_read)
    return (prompt_cost + out * output_tokens) / 1_000_000


def message_params(request: ChatRequest, model: str, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Map a request to ``messages.create`` keyword arguments, leaving out ``omit``."""
    if request.raw_prompt is not None:
        messages = [{"role": "user", "content": request.raw_prompt}]
        system = None
    else:
        messages = [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"]
        system = request.system
    params: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens, "messages": messages}
    if system:
        params["system"] = system
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    # The SDK (1.0 and later) dropped temperature/top_p/top_k from its signature; the
    # API still takes them on older models, so they travel in extra_body. Each is sent
    # only when it differs from the API default of 1.0.
    extra: dict[str, Any] = {}
    # Anthropic's scale ends at 1.0 where OpenAI's ends at 2.0; both ends mean "most
    # random", so clamp instead of failing.
    temperature = min(request.temperature, 1.0)
    if "temperature" not in omit and temperature != 1.0:
        extra["temperature"] = temperature
    if "top_p" not in omit and request.top_p != 1.0:
        extra["top_p"] = request.top_p
    extra.update((k, v) for k, v in request.extra.items() if k not in omit)
    if extra:
        params["extra_body"] = extra
    return params


class AnthropicBackend(SDKClientBackend):
    """Samples from Claude models; ``n`` candidates are ``n`` concurrent requests."""

    def __init__(self, model: str, options: BackendOptions | None = None, *, http_client: Any = None):
        try:
            import anthropic
        except ImportError as exc:
            raise MissingExtraError("anthropic", "anthropic") from exc
        if not model:
            raise BackendError("the anthropic backend needs a model name: write it as 'anthropic:MODEL'")
        options = options or BackendOptions()
        # Passing the key explicitly also keeps the SDK from falling back to profile
        # files on disk, so a missing key is reported here, plainly.
        api_key = options.api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not api_key:
            raise MissingAPIKeyError("ANTHROPIC_API_KEY", "anthropic")
        self.id = f"anthropic:{model}"
        self.model = model
        self._anthropic = anthropic
        self._client_kwargs: dict[str, Any] = {
            "api_key": api_key,
            "base_url": options.base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
            # The SDK retries connection errors, timeouts, 408, 409, 429 and 5xx with
            # exponential backoff (0.5 s doubling to 8 s, with jitter) and honours
            # retry-after-ms / Retry-After: checked in anthropic 2.14, _base_client.py
            # (AsyncAPIClient._request, _should_retry, _should_retry_exception).
            "max_retries": options.max_retries,
            # An explicit timeout also turns off the SDK's refusal of non-streaming
            # requests with a large max_tokens.
            "timeout": options.timeout_s,
            "http_client": http_client,
        }
        self._timeout_s = options.timeout_s
        self._concurrency = options.concurrency
        self.base_url = (self._client_kwargs["base_url"] or "https://api.anthropic.com").rstrip("/")
        self.omitted: frozenset[str] = frozenset()  # sampling fields this model refused

    @classmethod
    def from_id(cls, arg: str, options: BackendOptions) -> AnthropicBackend:
        return cls(arg, options)

    def _constraint_hint(self) -> str:
        return (
            "; the Anthropic Messages API has no grammar, regex or choice constraints "
            "(use the transformers or vllm backend, or a vllm serve endpoint)"
        )

    def _sdk_module(self) -> Any:
        return self._anthropic

    def _sdk_client_class(self) -> Any:
        return self._anthropic.AsyncAnthropic

    async def generate(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        messages = await asyncio.gather(*(self._create(request) for _ in range(request.n)))
        usage = Usage()
        completions = []
        for msg in messages:
            completions.append(
                Completion(
                    text="".join(b.text for b in msg.content if getattr(b, "type", None) == "text"),
                    finish_reason=_FINISH.get(msg.stop_reason or ""),
                    completion_tokens=msg.usage.output_tokens,
                )
            )
            usage = usage + _usage(self.model, msg.usage)
        usage.latency_s = time.perf_counter() - start
        return ChatResponse(completions=completions, usage=usage, model=self.model)

    async def _create(self, request: ChatRequest) -> Any:
        client, sem = self._state()
        async with sem:
            try:
                try:
                    return await client.messages.create(**message_params(request, self.model, self.omitted))
                except self._anthropic.BadRequestError as exc:
                    if not self._learn_refusal(exc):
                        raise
                    return await client.messages.create(**message_params(request, self.model, self.omitted))
            except self._anthropic.APIError as exc:
                raise self._translate(exc) from exc

    def _learn_refusal(self, exc: Any) -> bool:
        """Note which sampling fields the model refused; False if the 400 is about something else."""
        message = str(getattr(exc, "api_message", None) or exc)
        if _DEPRECATED.search(message):
            dropped = frozenset({"temperature", "top_p", "top_k"})
        elif _NOT_BOTH.search(message):
            dropped = frozenset({"top_p"})
        else:
            return False
        if not dropped <= self.omitted:
            log.warning(
                "%s refuses %s; sending requests without them", self.model, ", ".join(sorted(dropped))
            )
            self.omitted |= dropped
        return True

    def _translate(self, exc: Exception) -> BackendError:
        an = self._anthropic
        if isinstance(exc, an.APITimeoutError):
            return BackendUnavailableError(
                f"no answer from the Anthropic API at {self.base_url} within {self._timeout_s:g} s "
                "(after retries): raise the timeout or lower max_tokens."
            )
        if isinstance(exc, an.APIConnectionError):
            return BackendUnavailableError(
                f"cannot reach the Anthropic API at {self.base_url}: check the network, or --base-url "
                "(or ANTHROPIC_BASE_URL) if you use a proxy."
            )
        if isinstance(exc, an.APIStatusError):
            kind = getattr(exc, "type", None)
            message = getattr(exc, "api_message", None) or exc.message
            hint = " Check ANTHROPIC_API_KEY." if exc.status_code == 401 else ""
            label = f"HTTP {exc.status_code}" + (f" {kind}" if kind else "")
            return BackendError(f"the Anthropic API answered {label}: {str(message).rstrip('.')}.{hint}")
        return BackendError(f"anthropic request failed: {exc}")


def _usage(model: str, u: Any) -> Usage:
    # input_tokens excludes prompt-cache reads and writes; the prompt is all three.
    written = getattr(u, "cache_creation_input_tokens", None) or 0
    read = getattr(u, "cache_read_input_tokens", None) or 0
    return Usage(
        prompt_tokens=u.input_tokens + written + read,
        completion_tokens=u.output_tokens,
        llm_calls=1,
        cost_usd=anthropic_cost_usd(model, u.input_tokens, u.output_tokens, written, read),
        reused_prompt_tokens=read,
    )
