"""Where agentloop keeps models, caches and stores on disk."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["agentloop_home"]


def agentloop_home() -> Path:
    """``$AGENTLOOP_HOME`` if set, else the user cache dir (``~/.cache/agentloop`` on Linux)."""
    env = os.environ.get("AGENTLOOP_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("agentloop", appauthor=False))
