"""Token masks for constrained decoding in our own decode loop, with llguidance.

llguidance was picked over xgrammar (measured on SmolLM2's tokenizer, see
docs/backends.md): it takes Lark grammars natively (the format the Spider grammar is
written in, and what vLLM's guidance backend takes), compiles a regex in about 1 ms
where xgrammar took about 270 ms, and is a 8 MB wheel with no dependencies where
xgrammar pulls in triton.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Literal

from agentloop.errors import MissingExtraError
from agentloop.types import Constraint, UnsupportedCapabilityError

__all__ = ["ConstraintCompiler", "MaskCache", "RowMatchers", "constraint_to_lark", "parser_limits"]

StepResult = Literal["continue", "done", "error"]


def _llg() -> Any:
    try:
        import llguidance
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise MissingExtraError("llguidance", "dev") from exc
    return llguidance


# llguidance caps the Earley items of one mask computation at 50,000 and those of one parser
# row at 2,000. A schema grammar with a scope per joinable pair of tables (the Spider SQL
# grammar over an 11-table database has 39 scopes) passes both right after an opening
# parenthesis, and the matcher would then stop the row. Ten times the defaults fit every
# shipped database; a step there costs at most tens of milliseconds (docs/text2sql.md).
MAX_ITEMS_IN_ROW = 20_000
STEP_MAX_ITEMS = 500_000


def parser_limits() -> Any:
    """The llguidance limits every matcher here is built with."""
    return _llg().LLParserLimits(max_items_in_row=MAX_ITEMS_IN_ROW, step_max_items=STEP_MAX_ITEMS)


def constraint_to_lark(constraint: Constraint) -> str:
    """The llguidance grammar for a constraint (Lark text, or llguidance's JSON for a regex)."""
    llg = _llg()
    if constraint.kind == "grammar":
        return str(constraint.value)
    if constraint.kind == "regex":
        return str(llg.LLMatcher.grammar_from_regex(constraint.value))
    # JSON string escapes are valid Lark string literals (checked with quotes,
    # backslashes, newlines and non-ASCII text).
    return "start: " + " | ".join(json.dumps(o) for o in constraint.options)


class MaskCache:
    """Token masks of one compiled constraint, keyed by the tokens consumed so far.

    A matcher's state is a function of its token history, so rows that have consumed the same
    tokens, in one request or in later ones, need the same mask: it is computed once. This is
    most of a schema grammar's cost: its dearest masks come first (after ``SELECT``, every
    scope is open), where all rows of a request, and many requests on one database, agree.
    A history is an integer id: (parent id, token) -> id, ids never reused.
    """

    def __init__(self, capacity: int = 1024, max_histories: int = 200_000):
        self.capacity = capacity
        self.max_histories = max_histories
        self.hits = self.misses = 0
        self._children: dict[tuple[int, int], int] = {}
        self._masks: OrderedDict[int, Any] = OrderedDict()
        self._next_id = 1  # 0 is the empty history

    def child(self, state: int, token: int) -> int:
        """The id of history ``state`` followed by ``token``."""
        key = (state, token)
        found = self._children.get(key)
        if found is None:
            if len(self._children) >= self.max_histories:
                self._children.clear()  # old ids then miss; they are never reused, so never wrong
            found = self._children[key] = self._next_id
            self._next_id += 1
        return found

    def get(self, state: int) -> Any:
        bits = self._masks.get(state)
        if bits is None:
            self.misses += 1
            return None
        self.hits += 1
        self._masks.move_to_end(state)
        return bits

    def put(self, state: int, bits: Any) -> None:
        self._masks[state] = bits
        while len(self._masks) > self.capacity:
            self._masks.popitem(last=False)

    def clear(self) -> None:
        self._children.clear()
        self._masks.clear()


class ConstraintCompiler:
    """Compiles constraints into llguidance matchers for one HF tokenizer.

    Building the llguidance tokenizer costs about 0.3 s once; each compiled
    constraint is kept (LRU) as a fresh matcher that rows deep-copy, with its ``MaskCache``.
    """

    def __init__(self, hf_tokenizer: Any, vocab_size: int, *, capacity: int = 64):
        llg = _llg()
        import llguidance.hf

        self.vocab_size = vocab_size
        self.tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size)
        self.eos_id = int(hf_tokenizer.eos_token_id)
        self._llg = llg
        self._capacity = capacity
        self._compiled: OrderedDict[Constraint, Any] = OrderedDict()
        self._masks: dict[Constraint, MaskCache] = {}

    def masks(self, constraint: Constraint) -> MaskCache:
        """The mask cache of a compiled constraint."""
        self.compile(constraint)
        return self._masks[constraint]

    def compile(self, constraint: Constraint) -> Any:
        """A fresh matcher for ``constraint``; raises a one-line error for a bad grammar or regex."""
        matcher = self._compiled.get(constraint)
        if matcher is None:
            matcher = self._llg.LLMatcher(
                self.tokenizer, constraint_to_lark(constraint), log_level=0, limits=parser_limits()
            )
            if matcher.is_error():
                first = matcher.get_error().strip().splitlines()[0]
                raise UnsupportedCapabilityError(f"invalid {constraint.kind} constraint: {first}")
            self._compiled[constraint] = matcher
            self._masks[constraint] = MaskCache()
            while len(self._compiled) > self._capacity:
                del self._masks[self._compiled.popitem(last=False)[0]]
        self._compiled.move_to_end(constraint)
        return matcher.deep_copy()

    def rows(self, constraint: Constraint, n: int, *, forbid_eos: bool = False) -> RowMatchers:
        first = self.compile(constraint)
        matchers = [first] + [first.deep_copy() for _ in range(n - 1)]
        return RowMatchers(
            matchers, self.vocab_size, self.eos_id, forbid_eos=forbid_eos, cache=self._masks[constraint]
        )


class RowMatchers:
    """One matcher per decode row: masks a step's logits, then advances on the sampled tokens."""

    def __init__(
        self,
        matchers: list[Any],
        vocab_size: int,
        eos_id: int,
        *,
        forbid_eos: bool = False,
        cache: MaskCache | None = None,
    ):
        import numpy as np

        self.matchers = matchers
        self.cache = cache if cache is not None else MaskCache()
        self._states = [0] * len(matchers)  # each row's history in the cache
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.forbid_eos = forbid_eos
        self._words = (vocab_size + 31) // 32
        self._bits = np.zeros((len(matchers), self._words), dtype=np.int32)

    def mask_(self, logits: Any, rows: list[int]) -> None:
        """Set to -inf, in place, every token that row ``rows[i]`` may not emit at batch position i."""
        import numpy as np
        import torch

        bits = self._bits[: len(rows)]
        nbytes = self._words * 4
        for pos, row in enumerate(rows):
            cached = self.cache.get(self._states[row])
            if cached is not None:
                bits[pos] = cached
                continue
            matcher = self.matchers[row]
            matcher.unsafe_compute_mask_ptr(bits[pos].ctypes.data, nbytes)
            if not matcher.is_error():  # a failed computation is the row's own; never shared
                self.cache.put(self._states[row], bits[pos].copy())
        allowed = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, : self.vocab_size]
        allowed_t = torch.from_numpy(allowed).view(torch.bool)
        if self.forbid_eos:
            # ignore_eos: keep decoding while the grammar still allows more text.
            only_eos = allowed_t.sum(dim=1) == 1
            allowed_t[:, self.eos_id] &= only_eos
        width = logits.shape[-1]
        if width > self.vocab_size:  # padded embedding rows are never valid tokens
            logits[:, self.vocab_size :] = float("-inf")
        logits[:, : self.vocab_size].masked_fill_(~allowed_t.to(logits.device), float("-inf"))

    def advance(self, row: int, token: int) -> StepResult:
        """Feed a sampled token to the row's matcher: done once the grammar can say no more."""
        m = self.matchers[row]
        if not m.consume_token(token) or m.is_error():
            return "error"
        self._states[row] = self.cache.child(self._states[row], token)
        return "done" if m.is_stopped() else "continue"
