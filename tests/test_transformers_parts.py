"""Parts of the transformers backend without a model: the per-row KV cache, the prefix cache, int8 layers."""

from __future__ import annotations

import pytest
import torch

from agentloop.backends._kv import SlotCache
from agentloop.backends._prefix import PrefixCache


class _Prefix:
    """A batch-1 cache as DynamicCache lays it out: layers with keys/values (1, heads, length, dim)."""

    def __init__(self, layers: int, length: int, fill: float):
        kv = torch.full((1, 2, length, 4), fill)
        self.layers = [type("L", (), {"keys": kv + i, "values": -(kv + i)})() for i in range(layers)]
        self.length = length

    def get_seq_length(self) -> int:
        return self.length


def _cache() -> SlotCache:
    return SlotCache(num_layers=2, kv_heads=2, head_dim=4, dtype=torch.float32, device="cpu")


def test_rows_of_different_lengths_write_at_their_own_positions():
    kv = _cache()
    a = kv.add_rows(_Prefix(2, 3, 1.0), 2, reserve=8)
    b = kv.add_rows(_Prefix(2, 5, 2.0), 1, reserve=8)
    assert (a, b) == ([0, 1], [2])
    positions, mask = kv.step_inputs()
    assert positions.view(-1).tolist() == [3, 3, 5]
    # Each row sees its own prefix and the position it writes now, nothing after.
    assert mask.shape == (3, 1, 1, 6)
    assert mask[:, 0, 0].sum(dim=1).tolist() == [4, 4, 6]
    new_k = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, 1, 4) + 100
    keys, values = kv.update(new_k, -new_k, layer_idx=1)
    assert keys.shape == (3, 2, 6, 4)  # a view of the used positions, no copy of the buffer
    assert keys.data_ptr() == kv.keys[1].data_ptr()
    assert keys[0, 0, 3, 0] == 100 and keys[1, 0, 3, 0] == 101 and keys[2, 0, 5, 0] == 102
    assert keys[2, 0, 4, 0] == 3.0  # row 2's prefix (layer 1: fill 2.0 + 1) is untouched
    kv.end_step()
    assert kv.lengths[:3].tolist() == [4, 4, 6]


def test_moving_a_row_fills_a_hole_and_growth_keeps_contents():
    kv = _cache()
    kv.add_rows(_Prefix(2, 2, 1.0), 1, reserve=4)
    kv.add_rows(_Prefix(2, 3, 7.0), 1, reserve=4)
    kv.move_row(1, 0)
    kv.truncate_rows(1)
    assert kv.lengths[0] == 3 and kv.keys[0][0, 0, 2, 0] == 7.0
    capacity = kv.len_capacity
    kv.reserve(rows=5, length=capacity + 1)
    assert kv.row_capacity >= 5 and kv.len_capacity > capacity
    assert kv.keys[0][0, 0, 2, 0] == 7.0 and kv.lengths[0] == 3


def test_growth_is_along_the_dimension_that_ran_out_and_only_as_far_as_the_rows_got():
    kv = _cache()
    kv.add_rows(_Prefix(2, 300, 1.0), 4, reserve=301)
    assert (kv.row_capacity, kv.len_capacity) == (4, 384)  # the prefix, not prefix + max_tokens
    for _ in range(3):  # more rows: more rows only (it used to grow the positions by half too)
        kv.add_rows(_Prefix(2, 290, 2.0), 4, reserve=291)
    assert (kv.row_capacity, kv.len_capacity) == (16, 384)
    kv.lengths[:16] = 383  # every row at the last position the buffer holds
    kv.step_inputs()
    kv.end_step()
    assert kv.len_capacity == 384
    kv.step_inputs()  # the next write (position 384) does not fit: one more block of positions
    assert kv.len_capacity == 512 and kv.row_capacity == 16
    assert kv.keys[1][0, 0, 299, 0] == 2.0 and kv.keys[1][4, 0, 289, 0] == 3.0  # contents kept
    assert kv.nbytes == 2 * 2 * 16 * 2 * 512 * 4 * 4


def test_update_refuses_more_than_one_token_per_row():
    kv = _cache()
    kv.add_rows(_Prefix(2, 2, 1.0), 1, reserve=4)
    kv.step_inputs()
    with pytest.raises(RuntimeError, match="one token per row"):
        kv.update(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4), layer_idx=0)


def test_prefix_cache_evicts_by_bytes_least_recently_used_first():
    cache = PrefixCache(capacity_bytes=100)
    cache.put((1, 2, 3), None, nbytes=40)
    cache.put((4, 5, 6), None, nbytes=40)
    assert cache.longest_match((1, 2, 9))[1] == 2  # touches (1, 2, 3)
    cache.put((7, 8, 9), None, nbytes=40)  # 120 bytes: the least recently used, (4, 5, 6), goes
    assert cache.longest_match((4, 5, 6))[0] is None
    assert cache.longest_match((1, 2, 3))[1] == 3
    cache.put((0,), None, nbytes=500)  # larger than the whole budget: not kept
    s = cache.stats()
    assert (s.entries, s.bytes, s.evictions) == (2, 80, 1)
    assert (s.lookups, s.hits) == (3, 2) and s.hit_rate == pytest.approx(2 / 3)
    assert s.reused_tokens == 5 and s.prompt_tokens == 9


def _kv(tokens: tuple[int, ...], layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values that depend on each position's token and everything before it, as a model's do."""
    out = []
    for layer in range(layers):
        rows = [[float(sum(tokens[: i + 1]) + layer), float(tokens[i])] for i in range(len(tokens))]
        t = torch.tensor(rows).view(1, 1, len(tokens), 2)
        out.append((t, -t))
    return out


def test_prompts_that_share_a_head_store_it_once_and_read_back_exactly():
    cache = PrefixCache(capacity_bytes=1 << 20)
    a, b, c = (1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 9, 9, 9), (1, 2, 7)
    for t in (a, b, c):
        cache.put(t, _kv(t))
    per_position = 2 * 2 * 2 * 4  # layers x (keys, values) x head_dim x float32
    # a whole; b only past the 4 tokens it shares with a; c past the 2 it shares with a
    assert cache.stats().bytes == (6 + 3 + 1) * per_position
    for t, n in [(a, 6), (a, 3), (b, 7), (b, 5), (b, 2), (c, 3), (c, 2)]:
        entry, _ = cache.longest_match(t)
        assert entry is not None and entry.tokens == t
        for (k, v), (k0, v0) in zip(cache.kv(entry, n), _kv(t[:n]), strict=True):
            assert torch.equal(k, k0) and torch.equal(v, v0)
    # An extension stores only its new tokens; a prompt already covered stores nothing.
    cache.put((*a, 8), _kv((*a, 8)))
    cache.put(a[:4], _kv(a[:4]))
    assert cache.stats().bytes == (6 + 3 + 1 + 1) * per_position and cache.stats().entries == 4


def test_a_parent_is_evicted_only_after_the_entries_built_on_it():
    cache = PrefixCache(capacity_bytes=100)
    cache.put((1, 2), None, nbytes=40)  # the shared head, the oldest entry
    cache.put((1, 2, 3), None, nbytes=20)  # builds on it
    cache.put((5, 6), None, nbytes=30)
    cache.put((7,), None, nbytes=30)  # 120 bytes: the oldest leaf goes, (1, 2, 3), not its parent
    assert cache.stats().bytes == 100 and cache.stats().evictions == 1
    cache.put((9,), None, nbytes=70)  # 170: (1, 2) is a leaf now, and the oldest; then (5, 6)
    s = cache.stats()
    assert (s.evictions, s.bytes, s.entries) == (3, 100, 2)
    assert cache.longest_match((1, 2, 3))[0] is None and cache.longest_match((5, 6))[0] is None
    assert cache.longest_match((7,))[1] == 1


def test_int8_layers_match_the_float_matmul_closely():
    pytest.importorskip("torchao")
    from agentloop.backends._int8 import quantize_int8

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 12))  # 12: not a multiple of 8
    x = torch.randn(5, 3, 64)
    with torch.inference_mode():
        expected = model(x)
        assert quantize_int8(model) == 1  # the 12-wide layer stays in float
        got = model(x)
    assert model[0].weight is None and model[0].w_int8.dtype == torch.int8
    assert model[1].weight.dtype == torch.float32
    assert got.shape == expected.shape
    assert (got - expected).norm() / expected.norm() < 0.02


def test_smoothing_keeps_an_outlier_channel_from_swamping_the_others():
    """Per-token int8 activations lose small channels next to an outlier; SmoothQuant's scales keep them."""
    pytest.importorskip("torchao")
    from agentloop.backends._int8 import quantize_int8

    def error(smooth: bool) -> float:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 32))
        x = torch.randn(64, 64)
        x[:, 3] *= 300.0  # one channel far larger than the rest, as in LLM activations
        with torch.inference_mode():
            expected = model(x)
            assert quantize_int8(model, x[:16] if smooth else None) == 1
            got = model(x)
        return float((got - expected).norm() / expected.norm())

    plain, smoothed = error(False), error(True)
    assert smoothed < plain / 2, (plain, smoothed)
