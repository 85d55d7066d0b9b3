"""Token sampling for the transformers backend's decode loop."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["sample"]


def sample(logits: Any, temperature: float, top_p: float, gen: Any) -> Any:
    """One token per row of ``logits``: argmax at temperature 0, else a draw from ``gen``."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token once the mass before it already reaches top_p (the top token always stays).
        drop = probs.cumsum(dim=-1) - probs > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    # Inverse-CDF sampling: one uniform draw per row. torch.multinomial (and Gumbel
    # noise) draw or scan far more and cost ~13 ms per step at n=8 over a 49k vocab;
    # this costs ~0.7 ms and samples the same distribution.
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    u = torch.rand(cdf.shape[0], 1, generator=gen, device=cdf.device) * cdf[:, -1:]
    # A draw of exactly 0 would pick token 0 even at probability 0 (a masked token).
    u.clamp_(min=torch.finfo(cdf.dtype).tiny)
    return torch.searchsorted(cdf, u).clamp_(max=cdf.shape[-1] - 1).squeeze(-1)
