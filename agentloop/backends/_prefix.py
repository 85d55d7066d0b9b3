"""The prefix cache: KV caches of recent prompts, kept within a memory budget.

IAD's rounds repeat a task's prompt with feedback appended, and several tasks run at
once, so a count of entries says little: one WebShop page is thousands of tokens,
one Text2SQL prompt a few hundred. Entries are evicted, least recently used first,
once their total size passes the budget in bytes.

Entries form a tree, as in SGLang's RadixAttention: prompts that share a head (the
few-shot demonstration and schema of every question on one database, the shop's
instructions before each page) store that head once. An entry keeps the keys and values
of its own tokens only, past the longest prefix it shares with an entry already cached
(its parent); :meth:`PrefixCache.kv` joins the pieces back. Only entries no other entry
builds on (leaves) are evicted, so a parent outlives its children. Before this, ten
Text2SQL prompts on one database held ten copies of the same 450-token head (220 MB for
SmolLM2-135M in the README's main job).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["PrefixCache", "PrefixCacheStats", "PrefixEntry"]


@dataclass(eq=False)
class PrefixEntry:
    """One cached prompt: the keys and values of ``tokens[start:]``; ``parent`` holds the rest."""

    tokens: tuple[int, ...]  # the whole prompt prefix this entry stands for
    layers: list[tuple[Any, Any]] | None  # per layer, (keys, values) of tokens[start:], batch 1
    nbytes: int = 0
    parent: PrefixEntry | None = None
    start: int = 0  # tokens[:start] are the parent's (parent.tokens[:start] == tokens[:start])
    children: int = 0


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
    """Batch-1 KV caches of recent prompts as a tree, least recently used leaves evicted past ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[tuple[int, ...], PrefixEntry] = OrderedDict()
        self._bytes = 0
        self._lookups = self._hits = self._prompt_tokens = self._reused = self._evictions = 0

    def _longest(self, tokens: tuple[int, ...]) -> tuple[PrefixEntry | None, int]:
        best, best_len = None, 0
        for entry in self._entries.values():
            n = _common_prefix_len(entry.tokens, tokens)
            if n > best_len:
                best, best_len = entry, n
        return best, best_len

    def longest_match(self, tokens: tuple[int, ...]) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest token prefix with ``tokens``, and that length; counted in stats."""
        best, best_len = self._longest(tokens)
        self._lookups += 1
        self._prompt_tokens += len(tokens)
        if best is not None:
            self._hits += 1
            self._reused += best_len
            node: PrefixEntry | None = best
            while node is not None:  # a hit keeps the whole path recent
                self._entries.move_to_end(node.tokens)
                node = node.parent
        return best, best_len

    def kv(self, entry: PrefixEntry, n: int) -> list[tuple[Any, Any]]:
        """Per layer, the keys and values of ``entry.tokens[:n]``, joined from ``entry`` and its ancestors.

        One piece comes back as views of the stored tensors (read them, never write into
        them); several are concatenated into new ones.
        """
        import torch

        pieces: list[tuple[PrefixEntry, int]] = []  # (entry, how many of its own positions)
        node: PrefixEntry | None = entry
        upto = min(n, len(entry.tokens))
        while node is not None and upto > 0:
            if upto > node.start:
                pieces.append((node, upto - node.start))
                upto = node.start
            node = node.parent
        stored = [(p.layers, m) for p, m in reversed(pieces) if p.layers is not None]
        assert stored and len(stored) == len(pieces), "no stored keys and values"
        out = []
        for i in range(len(stored[0][0])):
            ks = [layers[i][0][:, :, :m] for layers, m in stored]
            vs = [layers[i][1][:, :, :m] for layers, m in stored]
            out.append((ks[0], vs[0]) if len(ks) == 1 else (torch.cat(ks, dim=-2), torch.cat(vs, dim=-2)))
        return out

    def put(
        self, tokens: tuple[int, ...], layers: list[tuple[Any, Any]] | None, nbytes: int | None = None
    ) -> None:
        """Cache ``tokens``, whose keys and values (per layer, batch 1, all of ``tokens``) are ``layers``.

        Only the part past the longest prefix already cached is copied and kept; ``nbytes``
        (for tests without tensors) overrides the size of that part.
        """
        if tokens in self._entries:
            self._entries.move_to_end(tokens)
            return
        parent, start = self._longest(tokens)
        if start == len(tokens):  # a longer entry already holds all of it
            return
        own = None
        if layers is not None:
            # A copy, so the whole prompt's tensors can be freed once the caller is done.
            own = [(k[:, :, start:].clone(), v[:, :, start:].clone()) for k, v in layers]
            nbytes = sum(t.numel() * t.element_size() for kv in own for t in kv)
        size = int(nbytes or 0)
        if size > self.capacity_bytes:
            return
        entry = PrefixEntry(tokens, own, size, parent if start else None, start)
        if entry.parent is not None:
            entry.parent.children += 1
        self._entries[tokens] = entry
        self._bytes += size
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self.capacity_bytes:
            leaf = next((e for e in self._entries.values() if not e.children), None)
            if leaf is None:  # cannot happen: the newest entry is a leaf
                return
            del self._entries[leaf.tokens]
            self._bytes -= leaf.nbytes
            self._evictions += 1
            if leaf.parent is not None:
                leaf.parent.children -= 1

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
