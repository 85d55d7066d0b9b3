"""Resolve backend ids like ``openai:gpt-4o-mini`` or ``transformers:/path`` lazily.

Installed packages add prefixes through the ``agentloop.backends`` entry-point group: the
entry point names a class with ``from_id(arg, options)`` (or a function of the same two
arguments) that returns a :class:`Backend`. It is loaded only when its prefix is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agentloop._plugins import BACKEND_GROUP, PluginError, load_plugin, plugin_names
from agentloop.errors import UnknownBackendError
from agentloop.types import Backend

__all__ = ["DEFAULT_BACKEND", "BackendOptions", "known_backends", "resolve_backend"]

DEFAULT_BACKEND = "transformers"

# prefix -> (module, class). Modules are imported only when their backend is used,
# so a missing optional SDK never breaks the others.
_REGISTRY: dict[str, tuple[str, str]] = {
    "transformers": ("agentloop.backends.transformers_backend", "TransformersBackend"),
    "openai": ("agentloop.backends.openai_backend", "OpenAIBackend"),
    "anthropic": ("agentloop.backends.anthropic_backend", "AnthropicBackend"),
    "vllm": ("agentloop.backends.vllm_backend", "VLLMBackend"),
    "llamacpp": ("agentloop.backends.llamacpp_backend", "LlamaCppBackend"),
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
    """Built-in backend prefixes and those installed plugins register (no plugin is imported)."""
    return sorted({*_REGISTRY, *plugin_names(BACKEND_GROUP)})


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
    if "?" in prefix:  # options without an argument: 'transformers?dtype=int8'
        prefix, _, query = prefix.partition("?")
        arg = f"?{query}"
    if prefix in _REGISTRY:
        module_name, class_name = _REGISTRY[prefix]
        cls: _FromId = getattr(importlib.import_module(module_name), class_name)
        backend = cls.from_id(arg, options or BackendOptions())
    else:
        backend = _plugin_backend(prefix, arg, options or BackendOptions(), backend_id)
    if cache is not None:
        from agentloop.backends.cache import CachedBackend

        backend = CachedBackend(backend, cache)
    return backend


def _plugin_backend(prefix: str, arg: str, options: BackendOptions, backend_id: str) -> Backend:
    factory: Any = load_plugin(BACKEND_GROUP, prefix, "backend")
    if factory is None:
        raise UnknownBackendError(backend_id, known_backends())
    make = getattr(factory, "from_id", factory)
    if not callable(make):
        raise PluginError(
            f"the backend plugin '{prefix}' is a {type(factory).__name__}: give a class with "
            "from_id(arg, options) or a function (arg, options) -> Backend"
        )
    backend = make(arg, options)
    if not isinstance(backend, Backend):
        raise PluginError(f"the backend plugin '{prefix}' returned a {type(backend).__name__}, not a Backend")
    return backend
