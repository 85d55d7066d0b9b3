"""Resolve backend ids like ``openai:gpt-4o-mini`` or ``transformers:/path`` lazily."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentloop.backends._types import Backend
from agentloop.errors import UnknownBackendError

__all__ = ["DEFAULT_BACKEND", "BackendOptions", "known_backends", "resolve_backend"]

DEFAULT_BACKEND = "transformers"

# prefix -> (module, class). Modules are imported only when their backend is used,
# so a missing optional SDK never breaks the others.
_REGISTRY: dict[str, tuple[str, str]] = {
    "transformers": ("agentloop.backends.transformers_backend", "TransformersBackend"),
    "openai": ("agentloop.backends.openai_backend", "OpenAIBackend"),
    "anthropic": ("agentloop.backends.anthropic_backend", "AnthropicBackend"),
    "vllm": ("agentloop.backends.vllm_backend", "VLLMBackend"),
}


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Settings that apply across backends; each backend reads the ones it understands."""

    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 8
    max_retries: int = 4
    timeout_s: float = 120.0
    device: str | None = None
    dtype: str | None = None


class _FromId(Protocol):
    @classmethod
    def from_id(cls, arg: str, options: BackendOptions) -> Backend: ...


def known_backends() -> list[str]:
    return sorted(_REGISTRY)


def resolve_backend(
    backend_id: str = DEFAULT_BACKEND,
    *,
    options: BackendOptions | None = None,
    cache: str | Path | None = None,
) -> Backend:
    """Build the backend named by ``backend_id``.

    ``cache`` is an optional SQLite file: identical requests are then answered from
    it and report zero tokens spent.
    """
    prefix, _, arg = backend_id.strip().partition(":")
    if prefix not in _REGISTRY:
        raise UnknownBackendError(backend_id, _REGISTRY)
    module_name, class_name = _REGISTRY[prefix]
    cls: _FromId = getattr(importlib.import_module(module_name), class_name)
    backend = cls.from_id(arg, options or BackendOptions())
    if cache is not None:
        from agentloop.backends.cache import CachedBackend

        backend = CachedBackend(backend, cache)
    return backend
