"""The decode loop's KV cache: each request's prompt stored once, each candidate's tail per row.

The running batch of the transformers backend holds rows of different requests, at
different lengths. A request's ``n`` rows share its prompt, so the prompt's keys and
values are kept once per request (a *group*: the batch-1 prefill cache, not copied),
and each row keeps only the positions it generated, in a preallocated per-row *tail*
buffer that a decode step writes one position into (``DynamicCache`` would copy the
whole cache by concatenation). SmolLM2-135M takes 45 KB per position: 16 rows of a
480-token prompt were 350 MB as per-row copies, and are 88 MB as four shared prompts.

Attention over a shared prompt plus a row's own tail is computed by
:func:`slot_attention`, registered with transformers as the ``agentloop_slots``
attention implementation: per group, the rows' queries against the prompt's keys in
one matrix product, against their tails in another, one softmax over both (the
arithmetic of attention over the concatenation, without making it). A forward that
did not go through it would read only the tails, so every step checks that each layer
did.

The tail buffer grows only along the dimension that ran out, only as far as the rows
have actually got (most candidates stop long before ``max_tokens``), and one layer at a
time, handing freed pages back to the OS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache

__all__ = ["ATTENTION", "SlotCache", "register_attention", "slot_attention", "trim_heap"]

ATTENTION = "agentloop_slots"
_ROUND = 128  # tail positions are allocated in multiples of this


@dataclass
class _Group:
    """One request's prompt: per layer, keys and values shaped ``(kv_heads, length, head_dim)``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int


class SlotCache(Cache):
    """Shared prompts plus per-row tails for the decode loop; pass it as the model's cache.

    Before each forward, :meth:`step_inputs` gives the position ids for one new token per
    row; the model's attention layers then call :meth:`update`, which writes that token's
    keys and values at each row's own tail position, and :func:`slot_attention`, which
    attends over the row's prompt and tail. Pass the cache as ``slot_cache=`` too, so the
    attention function finds it.
    """

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, dtype: Any, device: Any):
        super().__init__(layers=[])
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        # The tails, per layer: (row_capacity, kv_heads, len_capacity, head_dim).
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.row_capacity = 0
        self.len_capacity = 0
        self.max_length = 0  # the model's longest sequence (0: no limit)
        self.rows = 0  # rows 0 .. rows-1 are in use
        self.tails = torch.zeros(0, dtype=torch.long, device=device)  # positions each row generated
        self.bases = torch.zeros(0, dtype=torch.long, device=device)  # each row's prompt length
        self.group_of: list[int] = []  # each row's group
        self.groups: dict[int, _Group] = {}
        self._next_group = 0
        self._write: torch.Tensor | None = None  # this step's tail write position per row
        self._row_ids = torch.zeros(0, dtype=torch.long, device=device)
        self._uniform: int | None = None  # the one write position, when all rows share it
        self._view = 0  # tail positions the attention reads this step
        self._tail_mask: torch.Tensor | None = None  # (rows, 1, 1, view): -inf where a tail is unused
        self._plan: list[tuple[_Group, slice | torch.Tensor]] = []
        self._attended = 0  # layers that went through slot_attention this step

    # -- capacity ----------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        tails = sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))
        prompts = sum(
            t.numel() * t.element_size() for g in self.groups.values() for t in (*g.keys, *g.values)
        )
        return tails + prompts

    def reserve(self, rows: int, length: int, *, max_length: int = 0) -> None:
        """Make room for ``rows`` rows of ``length`` tail positions, keeping what is stored.

        Only a dimension that is too small grows: by a quarter or to what is asked,
        whichever is more (positions rounded up to a multiple of 128, at most
        ``max_length``), so a batch that gains rows does not also gain positions.
        """
        if max_length:
            self.max_length = max_length
        new_rows, new_len = self.row_capacity, self.len_capacity
        if rows > new_rows:
            new_rows = max(rows, new_rows + new_rows // 4)
        if length > new_len:
            new_len = -(-max(length, new_len + max(_ROUND, new_len // 4)) // _ROUND) * _ROUND
            if self.max_length:
                new_len = max(length, min(new_len, self.max_length))
        if (new_rows, new_len) == (self.row_capacity, self.len_capacity):
            return
        shape = (new_rows, self.kv_heads, new_len, self.head_dim)
        used = int(self.tails[: self.rows].max()) if self.rows else 0
        for store in (self.keys, self.values):
            for layer in range(self.num_layers):
                # Zeros, not empty: masked positions still enter the products (with weight 0),
                # and 0 * NaN from uninitialised memory would be NaN.
                fresh = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if layer < len(store):
                    if self.rows:
                        fresh[: self.rows, :, :used] = store[layer][: self.rows, :, :used]
                    store[layer] = fresh  # the old layer is freed here, before the next is made
                    # ... and its pages handed back: a freed layer is too small for the next
                    # (larger) one, so glibc would keep it while the heap grows past it, and a
                    # growth would hold the old buffer and the new one (measured: +460 MB).
                    trim_heap()
                else:
                    store.append(fresh)
        for name in ("tails", "bases"):
            old, grown = getattr(self, name), torch.zeros(new_rows, dtype=torch.long, device=self.device)
            grown[: self.rows] = old[: self.rows]
            setattr(self, name, grown)
        self.row_capacity, self.len_capacity = new_rows, new_len

    # -- rows --------------------------------------------------------------------

    def add_rows(self, prefix: Any, n: int, *, max_length: int = 0) -> list[int]:
        """Append ``n`` rows that each start from ``prefix`` (a batch-1 cache); return their indices.

        The prefix is kept once for the ``n`` rows, by reference (it is only read), so a
        prompt takes no tail room: the rows' tails get room for their first position now,
        and :meth:`step_inputs` grows them as they get longer.
        """
        length = _prefix_len(prefix)
        self.reserve(self.rows + n, 1, max_length=max_length)
        gid = self._next_group
        self._next_group += 1
        keys, values = [], []
        if length:
            for layer in range(self.num_layers):
                k, v = _prefix_kv(prefix, layer)
                keys.append(k[0])
                values.append(v[0])
        self.groups[gid] = _Group(keys, values, length)
        first = self.rows
        self.tails[first : first + n] = 0
        self.bases[first : first + n] = length
        self.group_of[first:] = [gid] * n
        self.rows += n
        return list(range(first, first + n))

    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src`` over row ``dst`` (to fill the hole a finished row left)."""
        used = int(self.tails[src])
        for t in (*self.keys, *self.values):
            t[dst, :, :used] = t[src, :, :used]
        self.tails[dst] = self.tails[src]
        self.bases[dst] = self.bases[src]
        self.group_of[dst] = self.group_of[src]

    def truncate_rows(self, rows: int) -> None:
        """Keep only rows ``0 .. rows-1``, and the prompts they use."""
        self.rows = rows
        del self.group_of[rows:]
        live = set(self.group_of)
        for gid in [g for g in self.groups if g not in live]:
            del self.groups[gid]

    def release(self) -> None:
        """Free the buffers (the next ``reserve`` allocates anew)."""
        self.keys, self.values = [], []
        self.row_capacity = self.len_capacity = self.rows = 0
        self.tails = torch.zeros(0, dtype=torch.long, device=self.device)
        self.bases = torch.zeros(0, dtype=torch.long, device=self.device)
        self.group_of, self.groups = [], {}
        trim_heap()

    # -- one decode step ---------------------------------------------------------

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position ids ``(rows, 1)`` for one step, and no mask: :func:`slot_attention` needs none."""
        write = self.tails[: self.rows].clone()
        self._write = write
        first, last = int(write.min()), int(write.max())
        if last >= self.len_capacity:
            self.reserve(self.rows, last + 1)
        self._uniform = first if first == last else None
        self._row_ids = torch.arange(self.rows, device=self.device)
        self._view = last + 1
        self._tail_mask = None
        if self._uniform is None:
            positions = torch.arange(self._view, device=self.device)
            hide = (positions[None, :] > write[:, None]).view(self.rows, 1, 1, self._view)
            self._tail_mask = torch.zeros(hide.shape, dtype=self.dtype, device=self.device).masked_fill(
                hide, float("-inf")
            )
        self._plan = self._group_plan()
        self._attended = 0
        return (self.bases[: self.rows] + write).view(self.rows, 1), None

    def _group_plan(self) -> list[tuple[_Group, slice | torch.Tensor]]:
        """Each group in use with its rows: a slice when they are contiguous, else an index."""
        members: dict[int, list[int]] = {}
        for row, gid in enumerate(self.group_of[: self.rows]):
            members.setdefault(gid, []).append(row)
        plan: list[tuple[_Group, slice | torch.Tensor]] = []
        for gid, rows in members.items():
            if rows[-1] - rows[0] + 1 == len(rows):
                plan.append((self.groups[gid], slice(rows[0], rows[-1] + 1)))
            else:
                plan.append((self.groups[gid], torch.tensor(rows, device=self.device)))
        return plan

    def end_step(self) -> None:
        if self._attended != self.num_layers:
            raise RuntimeError(
                f"only {self._attended} of {self.num_layers} layers attended through {ATTENTION!r}: "
                "this model's attention does not use transformers' attention interface"
            )
        self.tails[: self.rows] += 1
        self._write = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._write is None or key_states.shape[-2] != 1:
            raise RuntimeError("SlotCache takes one token per row, after step_inputs()")
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if self._uniform is not None:  # one position for all rows: a plain slice write
            k[: self.rows, :, self._uniform] = key_states[:, :, 0, :]
            v[: self.rows, :, self._uniform] = value_states[:, :, 0, :]
        else:
            k[self._row_ids, :, self._write] = key_states[:, :, 0, :]
            v[self._row_ids, :, self._write] = value_states[:, :, 0, :]
        return k[: self.rows, :, : self._view], v[: self.rows, :, : self._view]

    def attend(self, layer: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """Attention of one new token per row over its prompt and tail: ``(rows, 1, heads, head_dim)``.

        ``query`` is ``(rows, heads, 1, head_dim)``; query heads share key/value heads in
        groups (GQA), as the model's own attention does. Each part (a group's prompt, the
        rows' tails) is attended on its own, and the two are merged by their
        log-sum-exps: the softmax over the concatenation, without building it.
        """
        rows, heads, _, dim = query.shape
        per_kv = heads // self.kv_heads
        q = query.reshape(rows, self.kv_heads, per_kv, dim)
        tail_k = self.keys[layer][:rows, :, : self._view]
        tail_v = self.values[layer][:rows, :, : self._view]
        attention = _attention_lse if query.device.type == "cpu" else _attention_lse_reference
        tail_out, tail_lse = attention(q, tail_k, tail_v, self._tail_mask, scaling)
        out = tail_out
        for group, sel in self._plan:
            if not group.length:
                continue
            r = sel.stop - sel.start if isinstance(sel, slice) else int(sel.numel())
            # The group's rows' queries as r * per_kv positions of one sequence per KV head:
            # one product against the prompt, which is stored (and read) once.
            qg = q[sel].permute(1, 0, 2, 3).reshape(1, self.kv_heads, r * per_kv, dim)
            keys, values = group.keys[layer][None], group.values[layer][None]
            p_out, p_lse = attention(qg, keys, values, None, scaling)
            p_out = p_out.view(self.kv_heads, r, per_kv, dim).permute(1, 0, 2, 3)
            p_lse = p_lse.view(self.kv_heads, r, per_kv).permute(1, 0, 2)
            # The prompt's share of the softmax mass: e^p / (e^p + e^t) = sigmoid(p - t).
            share = torch.sigmoid(p_lse - tail_lse[sel]).unsqueeze(-1)
            merged = torch.lerp(tail_out[sel], p_out, share)
            if len(self._plan) == 1:
                out = merged
            else:
                out[sel] = merged
        self._attended += 1
        return out.reshape(rows, heads, dim).unsqueeze(1)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        if self._write is not None:
            return self._view - 1
        return int(self.tails[: self.rows].max()) if self.rows else 0

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self._view, 0


def _attention_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output and each query's log-sum-exp of scores, by torch's CPU flash kernel.

    ``bias`` is added to the scores (-inf where a key must not be seen). The kernel is the
    one SDPA itself runs on the CPU; its internal entry point also returns the log-sum-exp.
    """
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, False, attn_mask=bias, scale=scaling
    )
    return out, lse


def _attention_lse_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same in plain tensor operations (any device; the check for the CPU kernel)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    if bias is not None:
        scores = scores + bias
    lse = torch.logsumexp(scores, dim=-1)
    return torch.matmul(torch.exp(scores - lse[..., None]), v), lse


def slot_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float | None = None,
    slot_cache: SlotCache | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: a decode step on a :class:`SlotCache`, else SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if slot_cache is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return slot_cache.attend(module.layer_idx, query, scale), None


@functools.cache
def register_attention() -> str:
    """Register :func:`slot_attention` with transformers (once); return its name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(ATTENTION, slot_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # prefill masks as SDPA builds them
    return ATTENTION


@functools.cache
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``; elsewhere nothing).

    A KV layer of a few MB is below glibc's (adaptive) mmap threshold, so it lives in the
    heap, and once freed its pages stay with the process: growing the buffer layer by
    layer would otherwise leave the old buffer's worth of resident memory behind.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _prefix_len(cache: Any) -> int:
    return int(cache.get_seq_length()) if cache is not None else 0


def _prefix_kv(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    entry = cache.layers[layer]
    return entry.keys, entry.values
