"""OpenAI-compatible backend: OpenAI itself, ``vllm serve``, ``transformers serve`` and others.

One adapter for every server that speaks the OpenAI HTTP API; only the base URL
changes. Chat requests go to ``/v1/chat/completions``, raw prompts to the legacy
``/v1/completions``.

Constraints travel as vLLM's ``structured_outputs`` request field (or the
``guided_*`` fields of vLLM before 0.10.2); OpenAI's own API takes only JSON
schemas, so there they are refused before sending. ``score`` uses the completions
API with ``echo=True`` and ``logprobs``, which ``vllm serve`` answers with the
prompt's log-probabilities.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from agentloop.backends._sdk_client import SDKClientBackend
from agentloop.backends.registry import BackendOptions
from agentloop.errors import BackendError, BackendUnavailableError, MissingAPIKeyError, MissingExtraError
from agentloop.types import (
    CONSTRAINT_KINDS,
    ChatRequest,
    ChatResponse,
    Completion,
    Constraint,
    ContinuationScore,
    FinishReason,
    ScorePrompt,
    ScoreResponse,
    UnsupportedCapabilityError,
    Usage,
    as_score_request,
)

__all__ = ["OPENAI_PRICES_PER_1M", "OpenAIBackend", "openai_cost_usd"]

# USD per 1M tokens (input, output): approximate list prices from OpenAI's pricing page as
# of 2026-06. Cached-input discounts are ignored, so costs are an upper bound. Unknown
# models (and every non-OpenAI server) report cost_usd=None rather than a guess.
OPENAI_PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-5.4": (2.50, 15.00),
    "gpt-5.4-mini": (0.75, 4.50),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
}

_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-4o-2024-08-06 is priced as gpt-4o
_OPENAI_HOST = "api.openai.com"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "stop",
    "function_call": "stop",
    "content_filter": "error",
}


def openai_cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Approximate cost of a call from the price table, or None for an unknown model."""
    price = OPENAI_PRICES_PER_1M.get(model) or OPENAI_PRICES_PER_1M.get(_DATED.sub("", model))
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


@dataclass(slots=True)
class _Part:
    """What one HTTP request returned."""

    completions: list[Completion]
    prompt_tokens: int
    completion_tokens: int
    reused_prompt_tokens: int


class OpenAIBackend(SDKClientBackend):
    """Samples from any OpenAI-compatible server through the official ``openai`` SDK.

    Servers that silently ignore ``n`` (``transformers serve`` answers one choice for
    ``n=3``) are topped up with concurrent ``n=1`` requests; the instance then
    remembers this and sends ``n=1`` requests from the start.

    ``constraint_format`` says how constraints are sent: ``"structured_outputs"``
    (vLLM 0.10.2 and later, the default for any base URL but OpenAI's),
    ``"guided"`` (older vLLM's ``guided_grammar``/``guided_regex``/``guided_choice``)
    or ``"none"`` (refuse them; the default on OpenAI's API). A server that rejects
    the field (``transformers serve`` answers HTTP 422) raises
    :class:`UnsupportedCapabilityError`, and later constrained requests to this
    instance are refused before sending; ``score`` learns the same way.
    """

    def __init__(
        self,
        model: str,
        options: BackendOptions | None = None,
        *,
        http_client: Any = None,
        constraint_format: ConstraintFormat | None = None,
    ):
        try:
            import openai
        except ImportError as exc:
            raise MissingExtraError("openai", "openai") from exc
        if not model:
            raise BackendError("the openai backend needs a model name: write it as 'openai:MODEL'")
        options = options or BackendOptions()
        base_url = options.base_url or os.environ.get("OPENAI_BASE_URL") or None
        # Only the real OpenAI endpoint needs a key; local servers accept any.
        self.official = base_url is None or urlsplit(base_url).hostname == _OPENAI_HOST
        api_key = options.api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if self.official:
                raise MissingAPIKeyError("OPENAI_API_KEY", "openai")
            api_key = "not-needed"  # the SDK insists on some key
        self.id = f"openai:{model}"
        self.model = model
        self._openai = openai
        self._client_kwargs: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            # The SDK retries connection errors, timeouts, 408, 409, 429 and 5xx with
            # exponential backoff (0.5 s doubling to 8 s, up to 25% jitter) and honours
            # Retry-After / retry-after-ms up to 2 min: checked in openai 3.57,
            # _base_client.py (AsyncAPIClient.request, _should_retry, _calculate_retry_timeout).
            "max_retries": options.max_retries,
            "timeout": options.timeout_s,
            "http_client": http_client,
        }
        self.base_url = (base_url or f"https://{_OPENAI_HOST}/v1").rstrip("/")
        # Two servers may serve the same model name: keep their cached answers apart.
        self.cache_namespace = f"{self.id}@{self.base_url}"
        self._timeout_s = options.timeout_s
        self._concurrency = options.concurrency
        self.server_ignores_n = False
        self.constraint_format: ConstraintFormat = constraint_format or (
            "none" if self.official else "structured_outputs"
        )
        self.constraint_kinds = frozenset() if self.constraint_format == "none" else CONSTRAINT_KINDS
        self.supports_score = not self.official
        self._refusal: dict[str, str] = {}  # capability -> why this server refused it
        self._score_one_by_one = False  # the server takes one prompt per completions request

    @classmethod
    def from_id(cls, arg: str, options: BackendOptions) -> OpenAIBackend:
        return cls(arg, options)

    def _sdk_module(self) -> Any:
        return self._openai

    def _sdk_client_class(self) -> Any:
        return self._openai.AsyncOpenAI

    async def generate(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        want = request.n
        if request.greedy:
            # Greedy samples are identical, and vLLM rejects n>1 at temperature 0:
            # ask once and repeat the answer.
            parts = [await self._request(request, n=1, seed=request.seed)]
        elif want > 1 and self.server_ignores_n:
            parts = await self._fan_out(request, 0, want)
        else:
            parts = [await self._request(request, n=want, seed=request.seed)]
            got = len(parts[0].completions)
            if got < want:
                self.server_ignores_n = True
                parts += await self._fan_out(request, got, want)
        completions = [c for p in parts for c in p.completions]
        if request.greedy and completions:
            completions = completions[:1] * want  # usage still counts the one request made
        prompt = sum(p.prompt_tokens for p in parts)
        completion = sum(p.completion_tokens for p in parts)
        usage = Usage(
            # With n>1 in one request the server counts the prompt once; each top-up
            # request counts it again, which is what the server really processed.
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_s=time.perf_counter() - start,
            llm_calls=len(parts),
            cost_usd=openai_cost_usd(self.model, prompt, completion) if self.official else None,
            reused_prompt_tokens=sum(p.reused_prompt_tokens for p in parts),
        )
        return ChatResponse(completions=completions[:want], usage=usage, model=self.model)

    async def _fan_out(self, request: ChatRequest, first: int, want: int) -> list[_Part]:
        # A shared seed would make every n=1 request return the same sample, so
        # candidate i gets seed+i: still reproducible, and distinct.
        seeds = [None if request.seed is None else request.seed + i for i in range(first, want)]
        return list(await asyncio.gather(*(self._request(request, n=1, seed=s) for s in seeds)))

    def request_kwargs(self, request: ChatRequest, *, n: int, seed: int | None) -> dict[str, Any]:
        """The SDK keyword arguments for one HTTP request."""
        kw: dict[str, Any] = {"model": self.model, "temperature": request.temperature}
        if n > 1:
            kw["n"] = n
        if request.top_p != 1.0:
            kw["top_p"] = request.top_p
        if request.stop:
            kw["stop"] = list(request.stop)
        if seed is not None:
            kw["seed"] = seed
        extra = dict(request.extra)
        if request.constraint is not None:
            extra.update(constraint_fields(request.constraint, self.constraint_format))
        if extra:
            kw["extra_body"] = extra
        if request.raw_prompt is not None:
            kw["prompt"] = request.raw_prompt
            kw["max_tokens"] = request.max_tokens
        else:
            kw["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            # OpenAI's newer models reject max_tokens; other servers may not know the
            # newer max_completion_tokens field.
            kw["max_completion_tokens" if self.official else "max_tokens"] = request.max_tokens
        return kw

    async def _request(self, request: ChatRequest, *, n: int, seed: int | None) -> _Part:
        client, sem = self._state()
        kwargs = self.request_kwargs(request, n=n, seed=seed)
        chat = request.raw_prompt is None
        async with sem:
            try:
                if chat:
                    resp = await client.chat.completions.create(**kwargs)
                else:
                    resp = await client.completions.create(**kwargs)
            except self._openai.APIError as exc:
                if request.constraint is not None and _rejects_field(exc, _CONSTRAINT_FIELDS):
                    raise self._learn_refusal("constraints", exc) from exc
                raise self._translate(exc) from exc
        return _parse(resp, chat=chat, stop=request.stop)

    def _constraint_hint(self) -> str:
        if "constraints" in self._refusal:
            return f"; {self._refusal['constraints']}"
        if self.official:
            return (
                "; OpenAI's API constrains output only to JSON schemas, not to grammars, regexes or "
                "choices: serve the model with vllm serve and pass its --base-url"
            )
        return "; this instance was built with constraint_format='none'"

    def _learn_refusal(self, capability: str, exc: Exception) -> UnsupportedCapabilityError:
        """Remember that this server refused a capability, so later calls fail before sending."""
        status = getattr(exc, "status_code", None)
        why = f"{self.base_url} refused them (HTTP {status}: {_server_message(getattr(exc, 'body', None), exc)})"
        if capability == "constraints":
            self.constraint_kinds = frozenset()
            self._refusal[capability] = why
            return UnsupportedCapabilityError(f"{self.id} cannot honour constraints: {why}")
        self.supports_score = False
        self._refusal[capability] = why
        return UnsupportedCapabilityError(f"score() is not supported by {self.id}: {why}")

    # -- scoring -----------------------------------------------------------------

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        """Log-likelihoods from the completions API's echoed prompt log-probabilities.

        Needs a raw prompt: the completions API applies no chat template. All
        continuations go in one request (a list of prompts); each token that holds
        any continuation text counts towards it.
        """
        request = as_score_request(prompt)
        if self.official:
            raise UnsupportedCapabilityError(
                f"score() is not supported by {self.id} on OpenAI's API: it returns no prompt "
                "log-probabilities; serve the model with vllm serve and pass its --base-url"
            )
        if "score" in self._refusal:
            raise UnsupportedCapabilityError(
                f"score() is not supported by {self.id}: {self._refusal['score']}"
            )
        if request.raw_prompt is None:
            raise UnsupportedCapabilityError(
                f"score() through {self.id} needs a raw prompt (a string): the completions API "
                "applies no chat template"
            )
        conts = list(continuations)
        start = time.perf_counter()
        if not conts:
            return ScoreResponse(scores=[], usage=Usage(latency_s=0.0), model=self.model)
        prompt_text = request.raw_prompt
        prompts = [prompt_text + c for c in conts]
        if self._score_one_by_one or len(prompts) == 1:
            resps = await asyncio.gather(*(self._echo(p) for p in prompts))
        else:
            try:
                resps = [await self._echo(prompts)]
            except BackendError as exc:
                # transformers serve answers HTTP 400 "prompt must be a string" to a list.
                if "prompt" not in str(exc) or "HTTP 4" not in str(exc):
                    raise
                self._score_one_by_one = True
                resps = list(await asyncio.gather(*(self._echo(p) for p in prompts)))
        choices = [c for r in resps for c in sorted(r.choices or [], key=lambda c: c.index)]
        scores = []
        for cont, choice in zip(conts, choices, strict=False):
            found = _echo_logprob(prompt_text, cont, choice)
            if found is None:
                why = (
                    f"{self.base_url} returned no prompt log-probabilities for a completions request "
                    "with echo=True and logprobs"
                )
                self.supports_score = False
                self._refusal["score"] = why
                raise UnsupportedCapabilityError(f"score() is not supported by {self.id}: {why}")
            scores.append(ContinuationScore(text=cont, logprob=found[0], num_tokens=found[1]))
        if len(scores) != len(conts):
            raise BackendError(f"{self.base_url} answered {len(scores)} choices for {len(conts)} prompts")
        usage = Usage(
            prompt_tokens=sum(getattr(r.usage, "prompt_tokens", 0) or 0 for r in resps),
            completion_tokens=sum(getattr(r.usage, "completion_tokens", 0) or 0 for r in resps),
            latency_s=time.perf_counter() - start,
            llm_calls=len(resps),
        )
        return ScoreResponse(scores=scores, usage=usage, model=self.model)

    async def _echo(self, prompt: str | list[str]) -> Any:
        """One completions request that echoes the prompt with its log-probabilities."""
        client, sem = self._state()
        async with sem:
            try:
                return await client.completions.create(
                    model=self.model, prompt=prompt, echo=True, logprobs=1, max_tokens=1, temperature=0.0
                )
            except self._openai.APIError as exc:
                if _rejects_field(exc, ("echo", "logprobs")):
                    raise self._learn_refusal("score", exc) from exc
                raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> BackendError:
        oa = self._openai
        if isinstance(exc, oa.APITimeoutError):
            return BackendUnavailableError(
                f"no answer from {self.base_url} within {self._timeout_s:g} s (after retries): "
                "is the server overloaded? Raise the timeout or lower the concurrency."
            )
        if isinstance(exc, oa.APIConnectionError):
            return BackendUnavailableError(
                f"cannot reach an OpenAI-compatible server at {self.base_url}: is the server running? "
                "Check --base-url (or OPENAI_BASE_URL)."
            )
        if isinstance(exc, oa.APIStatusError):
            hint = " Check OPENAI_API_KEY." if exc.status_code == 401 else ""
            return BackendError(
                f"{self.base_url} answered HTTP {exc.status_code}: {_server_message(exc.body, exc)}.{hint}"
            )
        return BackendError(f"openai request to {self.base_url} failed: {exc}")


ConstraintFormat = Literal["structured_outputs", "guided", "none"]
_CONSTRAINT_FIELDS = ("structured_outputs", "guided_grammar", "guided_regex", "guided_choice")


def constraint_fields(constraint: Constraint, fmt: ConstraintFormat) -> dict[str, Any]:
    """The request-body fields that carry ``constraint`` to a vLLM-style server."""
    value = list(constraint.value) if isinstance(constraint.value, tuple) else constraint.value
    if fmt == "guided":
        return {f"guided_{constraint.kind}": value}
    return {"structured_outputs": {constraint.kind: value}}


def _rejects_field(exc: Exception, fields: Sequence[str]) -> bool:
    """Whether a 400/422 answer complains about one of these request fields."""
    if getattr(exc, "status_code", None) not in (400, 422):
        return False
    message = _server_message(getattr(exc, "body", None), exc)
    return any(f in message for f in fields)


def _echo_logprob(prompt: str, cont: str, choice: Any) -> tuple[float, int] | None:
    """Sum the echoed log-probabilities of the tokens holding ``cont``; None if the server sent none."""
    lp = getattr(choice, "logprobs", None)
    offsets = getattr(lp, "text_offset", None) or []
    values = getattr(lp, "token_logprobs", None) or []
    full = prompt + cont
    if not offsets or len(offsets) != len(values) or not (choice.text or "").startswith(full):
        return None
    # Token i spans [offsets[i], offsets[i+1]); it belongs to the continuation if it
    # holds any of its text. The generated token (max_tokens=1) starts past the end.
    ends = [*offsets[1:], len(choice.text)]
    total, count = 0.0, 0
    for off, end, value in zip(offsets, ends, values, strict=True):
        if off >= len(full) or end <= len(prompt):
            continue
        if value is None:
            return None
        total += float(value)
        count += 1
    if cont and count == 0:
        return None
    return total, count


def _server_message(body: object, exc: Exception) -> str:
    # OpenAI and vLLM send {"error": {"message": ...}} (the SDK unwraps "error");
    # FastAPI servers such as transformers serve send {"detail": ...}.
    if isinstance(body, dict):
        msg = body.get("message") or body.get("detail")
        if msg:
            return str(msg).rstrip(".")
    return str(body or exc).rstrip(".")


def _parse(resp: Any, *, chat: bool, stop: tuple[str, ...]) -> _Part:
    choices = sorted(resp.choices or [], key=lambda c: c.index)
    usage = resp.usage
    prompt = getattr(usage, "prompt_tokens", 0) or 0
    completion = getattr(usage, "completion_tokens", 0) or 0
    details = getattr(usage, "prompt_tokens_details", None)
    reused = getattr(details, "cached_tokens", 0) or 0
    # The API reports completion tokens for the whole request only; split them evenly
    # so per-candidate counts still add up to the total.
    k = max(len(choices), 1)
    shares = [completion // k + (1 if i < completion % k else 0) for i in range(k)]
    completions = [
        Completion(
            text=_strip_stop((c.message.content or "") if chat else (c.text or ""), stop),
            finish_reason=_FINISH.get(c.finish_reason or ""),
            completion_tokens=shares[i],
        )
        for i, c in enumerate(choices)
    ]
    return _Part(completions, prompt, completion, reused)


def _strip_stop(text: str, stop: tuple[str, ...]) -> str:
    # OpenAI and vLLM leave the stop string out of the text; transformers serve keeps
    # it. A text can only end with a stop string if the server kept it, so cut it.
    for s in stop:
        if s and text.endswith(s):
            return text[: -len(s)]
    return text
