"""The transformers backend's sampler draws from the right distribution."""

from __future__ import annotations

import math

import torch

from agentloop.backends._sampling import sample as _sample


def test_sampling_matches_the_softmax_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).repeat(4000, 1)
    gen = torch.Generator().manual_seed(0)
    draws = _sample(logits, 1.0, 1.0, gen)
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    expected = torch.softmax(logits[0], dim=-1)
    assert torch.allclose(freq, expected, atol=0.02)


def test_temperature_zero_is_argmax_and_low_temperature_sharpens():
    logits = torch.tensor([[0.0, 3.0, 1.0]]).repeat(500, 1)
    gen = torch.Generator().manual_seed(1)
    assert _sample(logits, 0.0, 1.0, gen).eq(1).all()
    cold = _sample(logits, 0.2, 1.0, gen).eq(1).float().mean().item()
    warm = _sample(logits, 1.5, 1.0, gen).eq(1).float().mean().item()
    assert cold > 0.99 and warm < cold


def test_top_p_never_samples_outside_the_nucleus():
    # probs ~ [0.64, 0.24, 0.09, 0.03]: top_p=0.8 keeps the first two only.
    logits = torch.tensor([[math.log(0.64), math.log(0.24), math.log(0.09), math.log(0.03)]]).repeat(3000, 1)
    gen = torch.Generator().manual_seed(2)
    draws = _sample(logits, 1.0, 0.8, gen)
    assert set(draws.tolist()) == {0, 1}


def test_same_generator_seed_gives_same_draws():
    logits = torch.randn(8, 1000)
    a = _sample(logits, 0.9, 0.95, torch.Generator().manual_seed(5))
    b = _sample(logits, 0.9, 0.95, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
