"""An opt-in SQLite response cache keyed by the full request."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from agentloop.backends._aio import LoopLock
from agentloop.types import (
    Backend,
    ChatRequest,
    ChatResponse,
    Completion,
    Constraint,
    ScorePrompt,
    ScoreResponse,
    Usage,
)

__all__ = ["CachedBackend"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class CachedBackend(Backend):
    """Wraps a backend; answers repeated requests from SQLite at zero token cost.

    Only full answers are stored, so a short answer (fewer than ``n`` completions) is
    asked again next time instead of being frozen in.

    Sampling without a seed keeps its diversity: identical seedless requests at a
    temperature above 0 are told apart by how many came before them in this cache's
    lifetime, so the k-th such request gets the k-th stored answer. A graph that asks
    n times with n=1 gets n different candidates, and a rerun replays them in order.

    Constraints take part in the key. ``score`` goes to the inner backend uncached.
    """

    def __init__(self, inner: Backend, path: str | Path):
        self.inner = inner
        self.id = inner.id
        self.constraint_kinds = inner.constraint_kinds
        self.supports_score = inner.supports_score
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection used from the event loop thread only; calls are short.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)
        self._lock = LoopLock()
        self.hits = 0
        self.misses = 0
        self._occurrences: dict[str, int] = {}

    async def generate(self, request: ChatRequest) -> ChatResponse:
        key = request.cache_key(getattr(self.inner, "cache_namespace", self.inner.id))
        if request.seed is None and request.temperature > 0:
            k = self._occurrences.get(key, 0)
            self._occurrences[key] = k + 1
            key = f"{key}#{k}"
        start = time.perf_counter()
        async with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is not None:
            self.hits += 1
            data = json.loads(row[0])
            completions = [Completion(**c) for c in data["completions"]]
            usage = Usage(latency_s=time.perf_counter() - start, llm_calls=0, cached=True, cost_usd=0.0)
            return ChatResponse(completions=completions, usage=usage, model=data.get("model", ""))
        self.misses += 1
        response = await self.inner.generate(request)
        if len(response.completions) >= request.n:
            payload = {
                "model": response.model,
                "completions": [
                    {
                        "text": c.text,
                        "finish_reason": c.finish_reason,
                        "completion_tokens": c.completion_tokens,
                    }
                    for c in response.completions
                ],
            }
            async with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                    (key, self.inner.id, json.dumps(request.to_dict()), json.dumps(payload), time.time()),
                )
        return response

    def check_constraint(self, constraint: Constraint) -> None:
        # Ask the inner backend: it may have learned since that its server refuses constraints.
        self.inner.check_constraint(constraint)

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        return await self.inner.score(prompt, continuations)

    async def aclose(self) -> None:
        self._db.close()
        await self.inner.aclose()
