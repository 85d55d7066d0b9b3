"""The WebShop verifiers' names and what each checks: light enough for the suite class to read."""

from __future__ import annotations

__all__ = ["VERIFIERS"]

VERIFIERS: dict[str, str] = {
    "rules": "goal-free rules: the instruction against the bought product's pages, options and price",
    "oracle": "the true WebShop reward (reads the hidden goal): an upper bound, not a fair verifier",
}
