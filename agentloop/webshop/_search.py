"""BM25 product search on SQLite FTS5 (in the standard library; no Java, no pyserini).

The index holds what the original's Lucene index holds per product: title,
description, first bullet point and the option text, lower-cased. The query's words
are OR-ed, as Lucene's default query parser does, and ranked by FTS5's ``bm25()``
(k1=1.2, b=0.75; pyserini's defaults are k1=0.9, b=0.4). Both stem with Porter.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from agentloop.errors import AgentloopError

if TYPE_CHECKING:
    from agentloop.webshop._catalog import Product

__all__ = ["SEARCH_RETURN_N", "SearchEngine"]

SEARCH_RETURN_N = 50  # results kept per search, as in the original
_WORD = re.compile(r"[a-z0-9]+")
# Too common to rank anything; dropping them keeps a chatty query from matching every product.
_STOP = frozenset(
    "a an and are as at be by for from i in is it me my need of on or that the this to want with".split()
)


class SearchEngine:
    """An in-memory FTS5 index of products; :meth:`search` returns ASINs, best first."""

    def __init__(self, products: Iterable[Product]):
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        try:
            self._db.execute(
                "CREATE VIRTUAL TABLE docs USING fts5(asin UNINDEXED, contents, tokenize='porter unicode61')"
            )
        except sqlite3.OperationalError as exc:
            raise AgentloopError(
                f"WebShop search needs SQLite's FTS5 extension, which this Python's sqlite3 lacks ({exc})"
            ) from exc
        rows = [(p.asin, p.search_text()) for p in products]
        self._db.executemany("INSERT INTO docs(asin, contents) VALUES (?, ?)", rows)
        self._db.commit()
        self.size = len(rows)

    def search(self, keywords: str, k: int = SEARCH_RETURN_N) -> list[str]:
        """The ``k`` best-matching ASINs for ``keywords`` (ties keep catalog order); none for no words."""
        words = [w for w in _WORD.findall(keywords.lower()) if w not in _STOP]
        if not words:
            words = _WORD.findall(keywords.lower())
        if not words:
            return []
        # Quoted terms are plain words to FTS5, so no query syntax can leak in.
        match = " OR ".join(f'"{w}"' for w in dict.fromkeys(words))
        with self._lock:
            rows = self._db.execute(
                "SELECT asin FROM docs WHERE docs MATCH ? ORDER BY bm25(docs), rowid LIMIT ?", (match, k)
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self._db.close()
