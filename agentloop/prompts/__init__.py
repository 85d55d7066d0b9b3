"""Prompt templates, kept as package data beside this module (``agentloop/prompts/<name>.txt``).

Graphs, memory and the suites render their prompts through :func:`render_prompt`.
"""

from __future__ import annotations

import functools
import string
from importlib import resources

__all__ = ["load_prompt", "render_prompt"]


@functools.cache
def load_prompt(name: str) -> string.Template:
    """The template ``agentloop/prompts/<name>.txt``; placeholders are ``$name``."""
    path = resources.files("agentloop").joinpath("prompts").joinpath(f"{name}.txt")
    return string.Template(path.read_text(encoding="utf-8"))


def render_prompt(name: str, **values: str) -> str:
    """The template ``name`` with every ``$placeholder`` filled in, stripped."""
    # substitute (not safe_substitute): a missing value is a bug, not a literal "$x" in a prompt.
    return load_prompt(name).substitute(values).strip()
