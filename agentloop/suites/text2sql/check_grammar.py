"""Check a Spider-layout dir's gold queries against their schema grammars, and time the grammars.

``python -m agentloop.suites.text2sql.check_grammar [DATA] [--tokenizer MODEL_DIR]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from agentloop.suites.text2sql.accept import SqlAcceptor
from agentloop.suites.text2sql.data import load_text2sql
from agentloop.suites.text2sql.grammar import schema_grammar

__all__ = ["check_gold"]


def check_gold(argv: Sequence[str] | None = None) -> int:
    """Time the grammars of a Spider-layout dir and check its gold queries against them
    (``python -m agentloop.suites.text2sql.check_grammar``)."""
    parser = argparse.ArgumentParser(
        prog="python -m agentloop.suites.text2sql.check_grammar", description=check_gold.__doc__
    )
    parser.add_argument(
        "data", nargs="?", help="Spider-layout dir or questions file (default: the shipped subset)"
    )
    parser.add_argument(
        "--tokenizer", help="feed a Hugging Face tokenizer's tokens (a model dir) instead of bytes"
    )
    args = parser.parse_args(argv)
    tokenizer = None
    if args.tokenizer:
        import llguidance.hf
        from transformers import PreTrainedTokenizerFast

        # llguidance reads the Rust tokenizer, so only fast tokenizers work.
        tokenizer = llguidance.hf.from_tokenizer(PreTrainedTokenizerFast.from_pretrained(args.tokenizer))
    examples = [e for e in load_text2sql(args.data) if e.gold_sql is not None]
    acceptors: dict[Path, SqlAcceptor] = {}
    for path in sorted({e.db_path for e in examples}):
        start = time.perf_counter()
        grammar = schema_grammar(path)
        acceptors[path] = SqlAcceptor(grammar, tokenizer)
        # Constructing the matcher compiles lexer and parser; the first mask is computed lazily.
        print(f"{path.stem:32} {len(grammar):6} chars  {1000 * (time.perf_counter() - start):6.1f} ms")
    start = time.perf_counter()
    rejected = [(e, err) for e in examples if (err := acceptors[e.db_path].error(e.gold_sql or ""))]
    elapsed = time.perf_counter() - start
    print(f"accepted {len(examples) - len(rejected)}/{len(examples)} gold queries in {elapsed:.2f} s")
    for example, err in rejected:
        print(f"  {example.id} [{example.db_id}] {err}\n    {example.gold_sql}")
    return 0


if __name__ == "__main__":
    raise SystemExit(check_gold())
