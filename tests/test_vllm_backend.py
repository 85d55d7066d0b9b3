"""The in-process vLLM backend: request mapping and the missing-extra error (vLLM cannot run here)."""

from __future__ import annotations

import sys

import pytest

from agentloop.backends import ChatRequest, resolve_backend
from agentloop.backends.vllm_backend import VLLMBackend, sampling_kwargs
from agentloop.errors import MissingExtraError


def test_request_fields_map_to_sampling_params():
    req = ChatRequest.from_prompt(
        "Hi", n=4, temperature=0.8, top_p=0.95, max_tokens=64, stop=["\n\n", "###"], seed=11
    )
    assert sampling_kwargs(req) == {
        "n": 4,
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 64,
        "stop": ["\n\n", "###"],
        "seed": 11,
    }


def test_unset_stop_and_seed_are_left_to_vllm_defaults():
    kwargs = sampling_kwargs(ChatRequest.from_prompt("Hi"))
    assert "stop" not in kwargs and "seed" not in kwargs


def test_extra_passes_through_and_wins():
    req = ChatRequest.from_prompt("Hi", top_p=0.9, extra={"top_k": 20, "min_p": 0.05, "top_p": 0.5})
    kwargs = sampling_kwargs(req)
    assert kwargs["top_k"] == 20 and kwargs["min_p"] == 0.05 and kwargs["top_p"] == 0.5


def test_greedy_asks_for_one_sample():
    # vLLM rejects n > 1 at temperature 0; the backend repeats the one greedy answer.
    assert sampling_kwargs(ChatRequest.from_prompt("Hi", n=5, temperature=0.0))["n"] == 1


def test_missing_vllm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now fails, installed or not
    with pytest.raises(MissingExtraError, match=r"pip install 'agentloop\[vllm\]'"):
        resolve_backend("vllm:Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(ImportError):  # MissingExtraError is also an ImportError
        VLLMBackend("Qwen/Qwen2.5-0.5B-Instruct")
