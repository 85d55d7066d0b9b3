"""The prefix cache: KV caches of recent prompts, kept within a memory budget.

IAD's rounds repeat a task's prompt with feedback appended, and several tasks run at
once, so a count of entries says little: one WebShop page is thousands of tokens,
one Text2SQL prompt a few hundred. Entries are evicted, least recently used first,
once their total size passes the budget in bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["PrefixCache", "PrefixCacheStats", "PrefixEntry"]


@dataclass
class PrefixEntry:
    tokens: tuple[int, ...]  # tokens whose keys/values the cache holds
    cache: Any  # a batch-1 DynamicCache
    nbytes: int = 0


@dataclass(frozen=True, slots=True)
class PrefixCacheStats:
    """How the prefix cache served prompts so far.

    ``hits`` counts lookups that reused at least one token; ``reused_tokens`` /
    ``prompt_tokens`` is the share of prompt tokens that were not prefilled again.
    """

    lookups: int
    hits: int
    prompt_tokens: int
    reused_tokens: int
    entries: int
    bytes: int
    capacity_bytes: int
    evictions: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    @property
    def token_hit_rate(self) -> float:
        return self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": round(self.hit_rate, 4),
            "prompt_tokens": self.prompt_tokens,
            "reused_tokens": self.reused_tokens,
            "token_hit_rate": round(self.token_hit_rate, 4),
            "entries": self.entries,
            "bytes": self.bytes,
            "capacity_bytes": self.capacity_bytes,
            "evictions": self.evictions,
        }


class PrefixCache:
    """Batch-1 KV caches of recent prompts, least recently used evicted past ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[tuple[int, ...], PrefixEntry] = OrderedDict()
        self._bytes = 0
        self._lookups = self._hits = self._prompt_tokens = self._reused = self._evictions = 0

    def longest_match(self, tokens: tuple[int, ...]) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest token prefix with ``tokens``, and that length; counted in stats."""
        best, best_len = None, 0
        for entry in self._entries.values():
            n = _common_prefix_len(entry.tokens, tokens)
            if n > best_len:
                best, best_len = entry, n
        self._lookups += 1
        self._prompt_tokens += len(tokens)
        if best is not None:
            self._hits += 1
            self._reused += best_len
            self._entries.move_to_end(best.tokens)
        return best, best_len

    def put(self, entry: PrefixEntry) -> None:
        if entry.nbytes > self.capacity_bytes:
            return
        # An entry whose tokens start the new one can match nothing the new one cannot
        # match as long (the next IAD round extends the last prompt): drop it.
        n = len(entry.tokens)
        for key in [k for k in self._entries if len(k) <= n and entry.tokens[: len(k)] == k]:
            self._bytes -= self._entries.pop(key).nbytes
        self._entries[entry.tokens] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.capacity_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
            self._evictions += 1

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(
            lookups=self._lookups,
            hits=self._hits,
            prompt_tokens=self._prompt_tokens,
            reused_tokens=self._reused,
            entries=len(self._entries),
            bytes=self._bytes,
            capacity_bytes=self.capacity_bytes,
            evictions=self._evictions,
        )


def _common_prefix_len(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
