"""A preallocated KV cache with one row per decoding candidate, each at its own length.

The running batch of the transformers backend holds rows of different requests, so
their caches have different lengths. Each row keeps its keys and values at positions
``0 .. length-1`` of a buffer that is grown rarely, so a decode step writes one position
per row instead of concatenating (copying) the whole cache as ``DynamicCache`` does.

The buffer is most of the backend's memory (SmolLM2-135M: 45 KB per row and position,
16 rows of 600 positions are 440 MB), so it grows only along the dimension that ran
out, only as far as the rows have actually got (not to each request's prompt plus
``max_tokens``: most candidates stop long before), and one layer at a time, so a
growth holds one layer twice rather than the whole cache. The attention mask
hides each row's unused tail; rows are kept contiguous at the front of the buffer, so
the model sees a view of the first ``rows`` rows and the first ``max(length) + 1``
positions, never a copy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

import torch
from transformers.cache_utils import Cache

__all__ = ["SlotCache", "trim_heap"]

_ROUND = 128  # positions are allocated in multiples of this


class SlotCache(Cache):
    """Per-row KV storage for the decode loop; pass it as the model's cache.

    Before each forward, :meth:`step_inputs` gives the position ids and attention mask
    for one new token per row; the model's attention layers then call :meth:`update`,
    which writes that token's keys and values at each row's own position.
    """

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, dtype: Any, device: Any):
        super().__init__(layers=[])
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.row_capacity = 0
        self.len_capacity = 0
        self.max_length = 0  # the model's longest sequence (0: no limit)
        self.rows = 0  # rows 0 .. rows-1 are in use
        self.lengths = torch.zeros(0, dtype=torch.long, device=device)
        self._write: torch.Tensor | None = None  # this step's write position per row
        self._row_ids = torch.zeros(0, dtype=torch.long, device=device)
        self._uniform: int | None = None  # the one write position, when all rows share it
        self._view = 0  # positions the attention reads this step

    # -- capacity ----------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def reserve(self, rows: int, length: int, *, max_length: int = 0) -> None:
        """Make room for ``rows`` rows of ``length`` positions, keeping what is stored.

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
        used = int(self.lengths[: self.rows].max()) if self.rows else 0
        for store in (self.keys, self.values):
            for layer in range(self.num_layers):
                # Zeros, not empty: masked positions still enter the attention's weighted sum
                # (with weight 0), and 0 * NaN from uninitialised memory would be NaN.
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
        lengths = torch.zeros(new_rows, dtype=torch.long, device=self.device)
        lengths[: self.rows] = self.lengths[: self.rows]
        self.lengths = lengths
        self.row_capacity, self.len_capacity = new_rows, new_len

    # -- rows --------------------------------------------------------------------

    def add_rows(self, prefix: Any, n: int, *, reserve: int, max_length: int = 0) -> list[int]:
        """Append ``n`` rows that each start from ``prefix`` (a batch-1 cache); return their indices.

        ``reserve`` is the length the rows need room for now (at least the prefix and the
        position the next step writes); :meth:`step_inputs` grows the buffer as rows get longer.
        """
        length = _prefix_len(prefix)
        self.reserve(self.rows + n, max(reserve, length + 1), max_length=max_length)
        first = self.rows
        if length:
            for layer in range(self.num_layers):
                k, v = _prefix_kv(prefix, layer)
                self.keys[layer][first : first + n, :, :length] = k
                self.values[layer][first : first + n, :, :length] = v
        self.lengths[first : first + n] = length
        self.rows += n
        return list(range(first, first + n))

    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src`` over row ``dst`` (to fill the hole a finished row left)."""
        used = int(self.lengths[src])
        for t in (*self.keys, *self.values):
            t[dst, :, :used] = t[src, :, :used]
        self.lengths[dst] = self.lengths[src]

    def truncate_rows(self, rows: int) -> None:
        """Keep only rows ``0 .. rows-1``."""
        self.rows = rows

    def release(self) -> None:
        """Free the buffers (the next ``reserve`` allocates anew)."""
        self.keys, self.values = [], []
        self.row_capacity = self.len_capacity = self.rows = 0
        self.lengths = torch.zeros(0, dtype=torch.long, device=self.device)
        trim_heap()

    # -- one decode step ---------------------------------------------------------

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position ids ``(rows, 1)`` and a boolean attention mask ``(rows, 1, 1, L)`` for one step.

        A 4-D mask is used as given by transformers' mask builder, so each row attends to
        its own stored positions and the one it writes now, and nothing past them. When
        every row is at the same length (one request's n rows) nothing needs hiding: the
        mask is ``None`` and attention takes the same kernel as a plain forward.
        """
        write = self.lengths[: self.rows].clone()
        self._write = write
        first, last = int(write.min()), int(write.max())
        if last >= self.len_capacity:
            self.reserve(self.rows, last + 1)
        self._uniform = first if first == last else None
        self._row_ids = torch.arange(self.rows, device=self.device)
        self._view = last + 1
        if self._uniform is not None:
            return write.view(self.rows, 1), None
        positions = torch.arange(self._view, device=self.device)
        mask = (positions[None, :] <= write[:, None]).view(self.rows, 1, 1, self._view)
        return write.view(self.rows, 1), mask

    def end_step(self) -> None:
        self.lengths[: self.rows] += 1
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

    def get_seq_length(self, layer_idx: int = 0) -> int:
        if self._write is not None:
            return self._view - 1
        return int(self.lengths[: self.rows].max()) if self.rows else 0

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self._view, 0


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
