"""In-process Hugging Face transformers backend (the embedded default), on CPU or CUDA.

What makes it fast enough for inference-time search on a laptop CPU:

* Continuous batching (``_batcher``): every request in flight decodes in one batched
  forward per token; a request that arrives while others decode joins at the next
  step, and finished rows leave. On CPU a step costs about the same for 8 rows as for
  32 (the weights are read once per step), so concurrent tasks share that cost.
* The prompt is prefilled once per request and its KV cache shared by the n rows
  (stored once; each row keeps only the tokens it generated, and decode steps attend
  over both through a registered attention function, ``_kv.slot_attention``); a prefix
  cache, sized in bytes (``_prefix``), lets the next request (the next IAD
  round, which repeats the task prefix) recompute only the tokens after the common
  prefix.
* The decode loop writes each new token's keys and values into a preallocated
  per-row tail buffer (``_kv``) instead of growing the cache by concatenation.
* Optionally int8 weights on CPU (``dtype="int8"``, through torchao; ``_int8``).

We drive the decode loop ourselves instead of calling ``model.generate``: it gives
each request its own ``torch.Generator`` (seeds without touching global RNG state),
its own stop strings, token limit and constraint, and lets requests join and leave.

Both optional capabilities are served here: constrained generation (llguidance masks
each row's logits before sampling; see ``_guidance``) and :meth:`score` (the prompt
is prefilled once, through the same prefix cache, and all continuations are scored
in one batched forward, between two decode steps).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from agentloop.backends._prefix import PrefixCache, PrefixCacheStats
from agentloop.errors import AgentloopError, MissingExtraError
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

__all__ = ["TransformersBackend", "TransformersStats"]

DTYPES = ("float32", "bfloat16", "float16", "int8")
_MB = 1 << 20


@dataclass(frozen=True, slots=True)
class TransformersStats:
    """The prefix cache's hit counts and what the decode loop did, since the backend was built."""

    prefix_cache: PrefixCacheStats
    batch: Any  # a _batcher.BatchStats

    def to_dict(self) -> dict[str, Any]:
        return {"prefix_cache": self.prefix_cache.to_dict(), "batch": self.batch.to_dict()}


class TransformersBackend(Backend):
    """Runs a local causal LM with transformers. ``model_path`` is an HF-format dir or a ``.gguf`` file.

    Concurrent requests share one running batch (``batching=False`` serves them one
    at a time instead). ``dtype`` is ``float32`` (the CPU default), ``bfloat16`` (the
    CUDA default), ``float16`` or ``int8`` (int8 weights through torchao, CPU). The
    prefix cache keeps up to ``prefix_cache_mb`` of prefilled prompts. It honours every
    kind of constraint and supports :meth:`score`.
    """

    constraint_kinds: frozenset[ConstraintKind] = CONSTRAINT_KINDS
    supports_score = True

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        prefix_cache_mb: float = 1024,
        score_batch_size: int = 32,
        batching: bool = True,
        max_batch_rows: int = 64,
    ):
        if dtype is not None and dtype not in DTYPES:
            raise AgentloopError(f"unknown dtype '{dtype}' for the transformers backend; use one of {DTYPES}")
        self.model_path = Path(model_path).expanduser() if model_path else None
        self.id = f"transformers:{self.model_path}" if self.model_path else "transformers"
        self.device_name = device
        self.dtype_name = dtype
        self._prefix = PrefixCache(int(prefix_cache_mb * _MB))
        self.score_batch_size = score_batch_size
        self._compiler: Any = None  # a ConstraintCompiler, built on the first constrained request
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._batching, self._max_batch_rows = batching, max_batch_rows
        self._batcher_obj: Any = None

    @classmethod
    def from_id(cls, arg: str, options: Any) -> TransformersBackend:
        """``transformers[:PATH][?dtype=int8&batching=off&prefix_cache_mb=512]``."""
        path, _, query = arg.partition("?")
        kwargs: dict[str, Any] = {"device": options.device, "dtype": options.dtype}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in ("dtype", "device"):
                kwargs[key] = value
            elif key == "batching":
                kwargs[key] = value.lower() not in ("0", "off", "false", "no")
            elif key == "prefix_cache_mb":
                kwargs[key] = float(value)
            else:
                raise AgentloopError(
                    f"unknown transformers backend option '{key}'; options: dtype, device, batching, prefix_cache_mb"
                )
        return cls(path or None, **kwargs)

    # -- loading -----------------------------------------------------------------

    def _resolve_path(self) -> tuple[Path, str | None]:
        if self.model_path is None:
            from agentloop.models import ensure_embedded_model

            def report(msg: str) -> None:
                print(f"agentloop: first use of the embedded model: {msg}", file=sys.stderr)

            return ensure_embedded_model(report=report), None
        path = self.model_path
        from agentloop.models import MODELS, pulled_gguf

        if not path.exists() and str(path) in MODELS:  # a pulled GGUF model: transformers:qwen2.5-coder-0.5b
            path = pulled_gguf(str(path))
        if not path.exists():
            raise AgentloopError(
                f"model path not found: {path}. Pass an HF-format model dir, a .gguf file (transformers:PATH) "
                "or a pulled model's name (agentloop models list), or use 'transformers' for the embedded model."
            )
        if path.suffix == ".gguf":
            return path.parent, path.name
        if not (path / "config.json").exists():
            raise AgentloopError(f"{path} has no config.json; it is not a Hugging Face model dir.")
        return path, None

    def load(self) -> None:
        """Load the model now rather than on the first request."""
        with self._load_lock:
            if self._model is not None:
                return
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:  # pragma: no cover - core deps
                raise MissingExtraError(exc.name or "transformers", "dev") from exc
            from agentloop.backends._int8 import calibration_ids, quantize_int8, quiet_torchao
            from agentloop.backends._kv import register_attention

            quiet_torchao()  # transformers imports it on load when installed; its log lines are noise
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            hf_logging.disable_progress_bar()
            model_dir, gguf_file = self._resolve_path()
            device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
            # bf16 is about 3x slower than fp32 on these CPUs; on GPUs it is the norm.
            dtype_name = self.dtype_name or ("float32" if device == "cpu" else "bfloat16")
            int8 = dtype_name == "int8"
            if int8 and device != "cpu":
                raise AgentloopError("dtype int8 is for the CPU; on a GPU use bfloat16 (the default) or vllm")
            dtype = torch.float32 if int8 else getattr(torch, dtype_name)
            kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, **kwargs)
            _check_full_attention(model.config, self.id)
            # transformers types .to() through a decorator that mypy reads as taking the model.
            model = model.to(device)  # type: ignore[arg-type]
            model.eval()
            # Decode steps attend over each request's shared prompt plus the row's own tail
            # (_kv.slot_attention); every other forward (prefill, scoring) is plain SDPA.
            model.set_attn_implementation(register_attention())
            if int8:
                quantize_int8(model, calibration_ids(tokenizer))
            self._tokenizer, self._model, self._device = tokenizer, model, device
            self._dtype = dtype
            eos = model.generation_config.eos_token_id
            eos_ids = eos if isinstance(eos, list) else [eos]
            if tokenizer.eos_token_id is not None:
                eos_ids.append(tokenizer.eos_token_id)
            self._eos_ids = {int(e) for e in eos_ids if e is not None}
            self._max_len = int(getattr(model.config, "max_position_embeddings", 0) or 0)
            # transformers 5.x renamed the forward argument past_key_values -> cache.
            params = inspect.signature(model.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def _batcher(self) -> Any:
        if self._batcher_obj is None:
            import torch

            from agentloop.backends._batcher import Batcher

            # An int8 step is short: on the 2-core CPU it was measured on, OpenMP's hand-offs
            # between two threads cost more than they saved (n=8: 273 vs 220 tok/s; n=32:
            # 598 vs 430), so int8 decodes on one thread. Other dtypes use torch's setting.
            threads = 1 if self.dtype_name == "int8" else torch.get_num_threads()
            self._batcher_obj = Batcher(
                self, batching=self._batching, max_rows=self._max_batch_rows, threads=threads
            )
        return self._batcher_obj

    def stats(self) -> TransformersStats:
        """Prefix cache hits and decode-batch sizes so far."""
        return TransformersStats(self._prefix.stats(), self._batcher.stats())

    # -- generation --------------------------------------------------------------

    async def generate(self, request: ChatRequest) -> ChatResponse:
        if request.constraint is not None and request.constraint.kind == "choice":
            start = time.perf_counter()
            return await self._exclusive(self._choose_blocking, request, start)
        response: ChatResponse = await asyncio.wrap_future(self._batcher.submit(request))
        return response

    async def _exclusive(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the decode thread, between two decode steps."""
        return await asyncio.wrap_future(self._batcher.run_exclusive(lambda: fn(*args)))

    def encode(self, request: ChatRequest) -> list[int]:
        """Token ids of the prompt: the chat template, or the raw prompt as given."""
        self.load()
        tok = self._tokenizer
        if request.raw_prompt is not None:
            return list(tok(request.raw_prompt, add_special_tokens=False)["input_ids"])
        msgs = [{"role": m.role, "content": m.content} for m in request.messages]
        if getattr(tok, "chat_template", None) is None:
            raise AgentloopError(
                f"{self.id} has no chat template; send a raw completion prompt (raw_prompt=...) instead."
            )
        out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])

    def _encode_checked(self, request: ChatRequest) -> tuple[list[int], int]:
        """The prompt's tokens and how many new tokens fit after it."""
        prompt = self.encode(request)
        if not prompt:
            raise AgentloopError("the prompt encodes to zero tokens")
        max_new = request.max_tokens
        if self._max_len and len(prompt) + max_new > self._max_len:
            max_new = self._max_len - len(prompt)
            if max_new < 1:
                raise AgentloopError(
                    f"prompt is {len(prompt)} tokens but {self.id} takes at most {self._max_len}; shorten it."
                )
        return prompt, max_new

    # Called by the batcher on its thread (see _batcher.Host).

    def _prepare(self, request: ChatRequest) -> Any:
        from agentloop.backends._batcher import Prepared

        self.load()  # loading is a one-off cost, kept out of the request's latency
        prompt, max_new = self._encode_checked(request)
        # Compiled before any model work, so a bad grammar fails fast.
        matchers = None
        if request.constraint is not None:
            ignore_eos = bool(request.extra.get("ignore_eos", False))
            matchers = self._constraints().rows(request.constraint, request.n, forbid_eos=ignore_eos)
        cache, reused = self._prefill(prompt)
        return Prepared(prompt=prompt, max_new=max_new, prefix=cache, reused=reused, matchers=matchers)

    def _new_slot_cache(self) -> Any:
        from agentloop.backends._kv import SlotCache

        cfg = self._model.config.get_text_config(decoder=True)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        return SlotCache(cfg.num_hidden_layers, kv_heads, head_dim, self._dtype, self._device)

    def _forward_step(self, ids: Any, positions: Any, mask: Any, cache: Any) -> Any:
        out = self._model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            slot_cache=cache,  # reaches _kv.slot_attention through the model's attention kwargs
            **{self._cache_arg: cache},
        )
        return out.logits[:, -1, :]

    def _max_length(self) -> int:
        return self._max_len

    def _prefill(self, prompt: list[int]) -> tuple[Any, int]:
        """Return a batch-1 cache holding ``prompt[:-1]``, reusing the longest cached prefix.

        The returned cache may share tensors with a prefix-cache entry: callers read it
        or grow it (which makes new tensors), never write into it.
        """
        import torch
        from transformers import DynamicCache

        body = tuple(prompt[:-1])
        entry, reused = self._prefix.longest_match(body)
        cache = _new_cache(DynamicCache, self._model.config)
        if entry is not None and reused > 0:
            for i, (keys, values) in enumerate(self._prefix.kv(entry, reused)):
                cache.update(keys, values, i)
        else:
            reused = 0
        rest = body[reused:]
        if rest:
            ids = torch.tensor([rest], device=self._device)
            # logits_to_keep=1: prefill needs the cache, not 600 rows of vocab logits.
            self._model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
            self._prefix.put(body, [(layer.keys, layer.values) for layer in cache.layers])
        return cache, reused

    def _choose_blocking(self, request: ChatRequest, start: float) -> ChatResponse:
        """Answer a ``choice`` constraint by drawing whole options from their likelihoods.

        Token-by-token masking would compare token prefixes ("b" against "red"), so
        greedy decoding could miss the most likely option. Here each option's
        probability is its full likelihood from :meth:`score` (one batched forward),
        and temperature, top_p and seed apply to that distribution: greedy is
        exactly the argmax of ``score``.
        """
        import torch

        from agentloop.backends._batcher import _generator
        from agentloop.backends._sampling import sample

        assert request.constraint is not None
        self.load()
        _, max_new = self._encode_checked(request)
        options = list(request.constraint.options)
        scored = self._score_blocking(request, options)
        logits = torch.tensor([[s.logprob for s in scored.scores]] * request.n, dtype=torch.float32)
        picks = sample(logits, request.temperature, request.top_p, _generator(request.seed, "cpu")).tolist()
        completions = []
        for i in picks:
            option, ntok = options[i], scored.scores[i].num_tokens
            reason: FinishReason = "stop"
            if ntok > max_new:
                ids = self._tokenizer(option, add_special_tokens=False)["input_ids"][:max_new]
                option, ntok, reason = self._tokenizer.decode(ids), max_new, "length"
            cut = min((option.index(s) for s in request.stop if s and s in option), default=None)
            text = option if cut is None else option[:cut]
            completions.append(Completion(text=text, finish_reason=reason, completion_tokens=ntok))
        usage = Usage(
            prompt_tokens=scored.usage.prompt_tokens,
            completion_tokens=sum(c.completion_tokens for c in completions),
            latency_s=time.perf_counter() - start,
            llm_calls=1,
            cost_usd=0.0,
            reused_prompt_tokens=scored.usage.reused_prompt_tokens,
        )
        return ChatResponse(completions=completions, usage=usage, model=self.id)

    def _constraints(self) -> Any:
        if self._compiler is None:
            from agentloop.backends.guidance import ConstraintCompiler

            head = self._model.get_output_embeddings()
            # int8 layers keep no float weight, only their sizes.
            vocab = int(getattr(head, "out_features", 0) or head.weight.shape[0])
            self._compiler = ConstraintCompiler(self._tokenizer, vocab)
        return self._compiler

    # -- scoring -----------------------------------------------------------------

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        """Log-likelihood of each continuation after ``prompt``: one prefill, one batched forward.

        Each continuation is tokenized on its own, as ``generate`` would emit it after
        the prompt (so put a separating space at the start of the continuation, not at
        the end of a raw prompt). More than ``score_batch_size`` continuations are
        scored in several forwards. It runs between two steps of the decode batch.
        """
        request = as_score_request(prompt)
        response: ScoreResponse = await self._exclusive(self._score_blocking, request, list(continuations))
        return response

    def _score_blocking(self, request: ChatRequest, continuations: list[str]) -> ScoreResponse:
        import torch

        self.load()
        start = time.perf_counter()
        prompt = self.encode(request)
        if not prompt:
            raise AgentloopError("the prompt encodes to zero tokens")
        tok = self._tokenizer
        conts = [list(tok(c, add_special_tokens=False)["input_ids"]) if c else [] for c in continuations]
        longest = max(map(len, conts), default=0)
        if self._max_len and len(prompt) + longest > self._max_len:
            raise AgentloopError(
                f"prompt ({len(prompt)} tokens) plus the longest continuation ({longest}) exceed "
                f"the {self._max_len} tokens {self.id} takes; shorten them."
            )
        logprobs = [0.0] * len(conts)
        reused = 0
        todo = [i for i, c in enumerate(conts) if c]
        if todo:
            with torch.inference_mode():
                cache, reused = self._prefill(prompt)
                size = max(1, self.score_batch_size)
                for first in range(0, len(todo), size):
                    chunk = todo[first : first + size]
                    for i, lp in zip(
                        chunk, self._score_chunk(prompt[-1], cache, [conts[i] for i in chunk]), strict=True
                    ):
                        logprobs[i] = lp
        scores = [
            ContinuationScore(text=t, logprob=lp, num_tokens=len(c))
            for t, lp, c in zip(continuations, logprobs, conts, strict=True)
        ]
        usage = Usage(
            prompt_tokens=len(prompt),
            completion_tokens=sum(map(len, conts)),
            latency_s=time.perf_counter() - start,
            llm_calls=1,
            cost_usd=0.0,
            reused_prompt_tokens=reused,
        )
        return ScoreResponse(scores=scores, usage=usage, model=self.id)

    def _score_chunk(self, last_token: int, prefix: Any, conts: list[list[int]]) -> list[float]:
        import torch

        width = max(map(len, conts))
        pad = next(iter(self._eos_ids), last_token)
        # Right padding needs no attention mask: with causal attention a real token
        # never sees the padding after it, and padded positions are never read.
        rows = [[last_token, *c] + [pad] * (width - len(c)) for c in conts]
        ids = torch.tensor(rows, dtype=torch.long, device=self._device)
        cache = _fork(prefix)
        if len(conts) > 1:
            cache.batch_repeat_interleave(len(conts))
        logits = self._model(input_ids=ids, use_cache=True, **{self._cache_arg: cache}).logits
        logits = logits[:, :-1, :].float()  # position j predicts token j + 1
        targets = ids[:, 1:].unsqueeze(-1)
        token_lp = (logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)).tolist()
        return [sum(token_lp[r][: len(c)]) for r, c in enumerate(conts)]

    def _hit_stop(self, tokens: list[int], stops: tuple[str, ...]) -> bool:
        # Decode only a tail window: a stop string spans at most a few tokens.
        longest = max(len(s) for s in stops)
        tail = self._tokenizer.decode(tokens[-(longest + 8) :], skip_special_tokens=True)
        return any(s and s in tail for s in stops)

    def _finish_text(self, tokens: list[int], stops: tuple[str, ...]) -> str:
        toks = [t for t in tokens if t not in self._eos_ids]
        text = self._tokenizer.decode(toks, skip_special_tokens=True)
        cut = min((text.index(s) for s in stops if s and s in text), default=None)
        return text if cut is None else text[:cut]

    def clear_prefix_cache(self) -> None:
        """Forget all prefilled prompts (the next request prefills from scratch)."""
        self._prefix.clear()

    async def aclose(self) -> None:
        self._prefix.clear()
        if self._batcher_obj is not None:
            self._batcher_obj.release()
        self._model = None
        self._tokenizer = None


def _fork(cache: Any) -> Any:
    """A new cache object over the same tensors: growing it (concatenation) leaves ``cache`` as it was."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    return out


def _new_cache(cls: Any, config: Any) -> Any:
    try:
        return cls(config=config)
    except TypeError:  # transformers releases before the config argument
        return cls()


def _check_full_attention(config: Any, backend_id: str) -> None:
    """The decode loop's per-row cache attends to every earlier token: refuse sliding-window models."""
    cfg = config.get_text_config(decoder=True)
    kinds = set(getattr(cfg, "layer_types", None) or ())
    if (kinds - {"full_attention"}) or getattr(cfg, "use_sliding_window", False):
        raise AgentloopError(
            f"{backend_id}: models with sliding-window or linear attention layers are not supported "
            "by the transformers backend's decode loop; serve them with vllm or transformers serve."
        )
