"""Token masks of the schema grammar in the decode loop: rows and requests that share a history share a mask."""

from __future__ import annotations

import random

import pytest
import torch

from agentloop.backends.guidance import MaskCache, RowMatchers, parser_limits
from agentloop.suites.text2sql.accept import _byte_tokenizer
from agentloop.suites.text2sql.data import default_spider_dir
from agentloop.suites.text2sql.grammar import schema_grammar

llguidance = pytest.importorskip("llguidance")

GRAMMAR = schema_grammar(
    default_spider_dir() / "database" / "concert_singer" / "concert_singer.sqlite",
    after_select=True,
    newlines=False,
    max_items=6,
)
VOCAB, EOS = 257, 256  # the 256 bytes and an end-of-sequence token


@pytest.fixture(scope="module")
def compiled() -> object:
    matcher = llguidance.LLMatcher(
        _byte_tokenizer(),
        llguidance.LLMatcher.grammar_from_lark(GRAMMAR),
        log_level=0,
        limits=parser_limits(),
    )
    assert not matcher.is_error()
    return matcher


def rows(compiled: object, n: int, cache: MaskCache) -> RowMatchers:
    return RowMatchers([compiled.deep_copy() for _ in range(n)], VOCAB, EOS, cache=cache)  # type: ignore[attr-defined]


def allowed(matchers: RowMatchers, active: list[int]) -> torch.Tensor:
    logits = torch.zeros(len(active), VOCAB)
    matchers.mask_(logits, active)
    return logits == 0


def walk(compiled: object, cache: MaskCache, seed: int, steps: int = 40) -> tuple[list[torch.Tensor], str]:
    """Four rows of one request: rows 0 and 1 take the same bytes for 8 steps, then all pick at
    random among what the mask allows. Also decodes the same walk with a cache that keeps
    nothing, and checks every mask against it."""
    rng = random.Random(seed)
    cached, fresh = rows(compiled, 4, cache), rows(compiled, 4, MaskCache(capacity=0))
    active, masks, text = [0, 1, 2, 3], [], [b"", b"", b"", b""]
    for step in range(steps):
        got, want = allowed(cached, active), allowed(fresh, active)
        assert torch.equal(got, want), f"step {step}"
        masks.append(got)
        picks = {}
        for pos, r in enumerate(active):
            # Row 0 does not end its query (";") while row 1 follows it.
            ends = (EOS, ord(";")) if r == 0 and step < 8 else (EOS,)
            options = [t for t in torch.nonzero(got[pos]).flatten().tolist() if t not in ends]
            if not options:
                continue
            if r == 1 and step < 8 and 0 in picks:
                picks[1] = picks[0]  # the same token as row 0
            else:
                picks[r] = rng.choice(options)
        active = []
        for r, token in picks.items():
            assert cached.advance(r, token) == fresh.advance(r, token)
            if not cached.matchers[r].is_stopped():
                active.append(r)
            text[r] += bytes([token])
        if not active:
            break
    return masks, text[0].decode(errors="replace")


def test_cached_masks_equal_fresh_ones_and_shared_histories_compute_once(compiled: object) -> None:
    cache = MaskCache()
    walk(compiled, cache, seed=0)
    # Step 0: one computation for the four rows; then rows 0 and 1 share 7 more steps.
    assert cache.misses < 4 * 40 - 3 - 7
    first_hits = cache.hits
    assert first_hits >= 3 + 7
    # A second request on the same grammar starts where the first did: its first mask is a hit.
    again = rows(compiled, 1, cache)
    before = cache.misses
    allowed(again, [0])
    assert cache.misses == before and cache.hits == first_hits + 1


def test_a_cache_that_forgets_histories_never_hands_out_a_wrong_mask(compiled: object) -> None:
    # Ids are never reused, so clearing the history table only turns hits into misses.
    cache = MaskCache(capacity=16, max_histories=20)
    for seed in range(3):
        walk(compiled, cache, seed=seed, steps=25)
    assert cache.hits > 0


def test_history_ids() -> None:
    cache = MaskCache(max_histories=2)
    a = cache.child(0, 5)
    assert cache.child(0, 5) == a and cache.child(a, 5) != a
    cache.child(0, 6)  # the table is full and starts over
    assert cache.child(0, 5) not in (a, 0)
