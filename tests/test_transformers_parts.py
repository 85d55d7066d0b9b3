"""Parts of the transformers backend without a model: the per-row KV cache, the prefix cache, int8 layers."""

from __future__ import annotations

import pytest
import torch

from agentloop.backends._kv import SlotCache, _attention_lse, _attention_lse_reference
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


def _step(kv: SlotCache, heads: int = 4, seed: int = 0) -> list[torch.Tensor]:
    """One decode step as the model runs it: positions, then per layer update + attend."""
    gen = torch.Generator().manual_seed(seed)
    kv.step_inputs()
    outs = []
    for layer in range(kv.num_layers):
        k = torch.randn(kv.rows, kv.kv_heads, 1, kv.head_dim, generator=gen)
        kv.update(k, k * 0.5, layer_idx=layer)
        q = torch.randn(kv.rows, heads, 1, kv.head_dim, generator=gen)
        outs.append(kv.attend(layer, q, 0.5))
    kv.end_step()
    return outs


def _dense(prefix: _Prefix, tail_k: torch.Tensor, tail_v: torch.Tensor, q: torch.Tensor, layer: int):
    """Reference: SDPA over the prompt's keys followed by the row's tail, GQA by repetition."""
    keys = torch.cat([prefix.layers[layer].keys[0], tail_k], dim=1)  # (kv_heads, length, dim)
    values = torch.cat([prefix.layers[layer].values[0], tail_v], dim=1)
    per_kv = q.shape[0] // keys.shape[0]
    keys, values = keys.repeat_interleave(per_kv, 0), values.repeat_interleave(per_kv, 0)
    return torch.nn.functional.scaled_dot_product_attention(q[:, None], keys, values, scale=0.5)[:, 0]


def test_rows_write_at_their_own_tail_positions_and_share_their_prompt():
    kv = _cache()
    a = kv.add_rows(_Prefix(2, 3, 1.0), 2)
    b = kv.add_rows(_Prefix(2, 5, 2.0), 1)
    assert (a, b) == ([0, 1], [2])
    assert len(kv.groups) == 2  # one stored prompt per request, not one per row
    positions, mask = kv.step_inputs()
    assert positions.view(-1).tolist() == [3, 3, 5] and mask is None
    new_k = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, 1, 4) + 100
    keys, _ = kv.update(new_k, -new_k, layer_idx=1)
    assert keys.shape == (3, 2, 1, 4)  # a view of the used tail positions, no copy of the buffer
    assert keys.data_ptr() == kv.keys[1].data_ptr()
    assert keys[:, 0, 0, 0].tolist() == [100, 101, 102]
    with pytest.raises(RuntimeError, match="layers attended"):
        kv.end_step()  # a model whose attention skipped slot_attention would read tails only


def test_attention_over_prompt_and_tail_equals_dense_attention():
    kv = _cache()
    prefixes = [_Prefix(2, 3, 0.3), _Prefix(2, 6, -0.2), _Prefix(2, 0, 0.0)]
    for p, n in zip(prefixes, (2, 3, 1), strict=True):
        kv.add_rows(p, n)
    group_rows = [[0, 1], [2, 3, 4], [5]]
    for step in range(3):
        _step(kv, seed=step)
        if step == 0:  # rows at different tail lengths from here on, and group 1 non-contiguous
            kv.move_row(5, 3)
            kv.move_row(4, 5)
            kv.tails[5] -= 1
            group_rows = [[0, 1], [2, 4, 5], [3]]
    gen = torch.Generator().manual_seed(9)
    kv.step_inputs()
    for layer in range(2):
        k = torch.randn(kv.rows, 2, 1, 4, generator=gen)
        kv.update(k, -k, layer_idx=layer)
        q = torch.randn(kv.rows, 4, 1, 4, generator=gen)
        out = kv.attend(layer, q, 0.5)
        assert out.shape == (kv.rows, 1, 4, 4)
        for prefix, rows in zip(prefixes, group_rows, strict=True):
            for row in rows:
                used = int(kv.tails[row]) + 1
                want = _dense(
                    prefix,
                    kv.keys[layer][row, :, :used],
                    kv.values[layer][row, :, :used],
                    q[row, :, 0],
                    layer,
                )
                torch.testing.assert_close(out[row, 0], want, rtol=1e-5, atol=1e-6)
    kv.end_step()


def test_the_cpu_kernel_and_the_plain_reference_agree_on_output_and_log_sum_exp():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(3, 2, 2, 8, generator=gen)  # rows, KV heads, queries per KV head, dim
    k, v = (torch.randn(3, 2, 3, 8, generator=gen) for _ in range(2))
    hide = torch.tensor([[0, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool).view(3, 1, 1, 3)
    for mask in (None, torch.zeros(hide.shape).masked_fill(hide, float("-inf"))):
        out, lse = _attention_lse(q, k, v, mask, 0.3)
        ref_out, ref_lse = _attention_lse_reference(q, k, v, mask, 0.3)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-6)


def test_moving_rows_keeps_contents_and_frees_prompts_no_row_uses():
    kv = _cache()
    kv.add_rows(_Prefix(2, 2, 1.0), 1)
    kv.add_rows(_Prefix(2, 3, 7.0), 1)
    _step(kv)
    kv.keys[0][1, 0, 0, 0] = 42.0
    kv.move_row(1, 0)
    kv.truncate_rows(1)
    assert kv.tails[0] == 1 and kv.keys[0][0, 0, 0, 0] == 42.0
    assert [g.length for g in kv.groups.values()] == [3]  # the first request's prompt is gone
    capacity = kv.len_capacity
    kv.reserve(rows=5, length=capacity + 1)
    assert kv.row_capacity >= 5 and kv.len_capacity > capacity
    assert kv.keys[0][0, 0, 0, 0] == 42.0 and kv.tails[0] == 1 and kv.bases[0] == 3


def test_tails_grow_along_the_dimension_that_ran_out_and_only_as_far_as_the_rows_got():
    kv = _cache()
    kv.add_rows(_Prefix(2, 300, 1.0), 4)
    assert (kv.row_capacity, kv.len_capacity) == (4, 128)  # a prompt takes no tail room
    for _ in range(3):  # more rows: more rows only
        kv.add_rows(_Prefix(2, 290, 2.0), 4)
    assert (kv.row_capacity, kv.len_capacity) == (16, 128)
    kv.tails[:16] = 127  # every row at the last position the buffer holds
    kv.keys[1][4, 0, 126, 0] = 3.0
    _step(kv)
    assert kv.len_capacity == 128
    _step(kv)  # the next write (position 128) does not fit: one more block of positions
    assert kv.len_capacity == 256 and kv.row_capacity == 16
    assert kv.keys[1][4, 0, 126, 0] == 3.0  # contents kept
    prompts = 2 * 2 * 2 * 4 * 4 * (300 + 3 * 290)  # layers x K,V x heads x dim x fp32 x positions
    assert kv.nbytes == 2 * 2 * 16 * 2 * 256 * 4 * 4 + prompts


def test_update_refuses_more_than_one_token_per_row():
    kv = _cache()
    kv.add_rows(_Prefix(2, 2, 1.0), 1)
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
