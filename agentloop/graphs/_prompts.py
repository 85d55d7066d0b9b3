"""Load the graphs' prompt templates from package data (``agentloop/prompts/graphs_*.txt``)."""

from __future__ import annotations

import functools
import string
from importlib import resources


@functools.cache
def load_prompt(name: str) -> string.Template:
    """The template ``agentloop/prompts/<name>.txt``; placeholders are ``$name``."""
    path = resources.files("agentloop").joinpath("prompts").joinpath(f"{name}.txt")
    return string.Template(path.read_text(encoding="utf-8"))


def render_prompt(name: str, **values: str) -> str:
    # substitute (not safe_substitute): a missing value is a bug, not a literal "$x" in a prompt.
    return load_prompt(name).substitute(values).strip()
