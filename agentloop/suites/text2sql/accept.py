"""Check SQL strings against a grammar the way decoding feeds it: llguidance's matcher, bytes or tokens.

Re-exported by :mod:`agentloop.suites.text2sql.grammar`, which builds the grammars.
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING

from agentloop.errors import AgentloopError

if TYPE_CHECKING:
    import llguidance

__all__ = ["MissingLlguidanceError", "SqlAcceptor"]


class MissingLlguidanceError(AgentloopError, ImportError):
    def __init__(self) -> None:
        super().__init__("schema-constrained SQL needs llguidance; install it with: pip install llguidance")


class SqlAcceptor:
    """Whether SQL strings match one grammar, fed to llguidance as decoding would feed them.

    With no tokenizer the SQL goes in byte by byte; pass an ``llguidance.LLTokenizer``
    (``llguidance.hf.from_tokenizer(...)``) to feed a model's tokens instead. The grammar is
    compiled once; one acceptor is not safe to share between threads.
    """

    def __init__(self, grammar: str, tokenizer: llguidance.LLTokenizer | None = None):
        llg = _import_llguidance()
        self._tokenizer = tokenizer if tokenizer is not None else _byte_tokenizer()
        # A pristine matcher, copied for each check: reset() does not clear an error state.
        from agentloop.backends.guidance import parser_limits  # the limits decoding runs with

        self._initial = llg.LLMatcher(
            self._tokenizer, llg.LLMatcher.grammar_from_lark(grammar), log_level=0, limits=parser_limits()
        )
        if self._initial.is_error():
            raise AgentloopError(f"invalid SQL grammar: {self._initial.get_error()}")

    def error(self, sql: str, *, masks: bool = False) -> str | None:
        """None when ``sql`` is a complete sentence of the grammar, otherwise why not (one line).

        ``masks=True`` also computes the token mask before each token, as a decoder does, so
        a grammar that the matcher cannot mask within its limits fails here too.
        """
        matcher = self._initial.deep_copy()
        tokens = self._tokenizer.tokenize_str(sql)
        if masks:
            import numpy as np

            bits = np.zeros((self._tokenizer.vocab_size + 31) // 32, dtype=np.int32)
            consumed = 0
            for token in tokens:
                matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
                if matcher.is_error():
                    return "matcher error: " + matcher.get_error().strip().splitlines()[0]
                if not matcher.consume_token(token) or matcher.is_error():
                    break
                consumed += 1
        else:
            consumed = matcher.try_consume_tokens(tokens)
        if consumed < len(tokens):
            at = len(self._tokenizer.decode_bytes(tokens[:consumed]))
            text = sql.encode()
            return f"rejected at byte {at}: {text[max(0, at - 30) : at]!r} then {text[at : at + 20]!r}"
        if not matcher.is_accepting():
            return "incomplete: the grammar expects more after the end of the text"
        return None

    def accepts(self, sql: str) -> bool:
        return self.error(sql) is None


def _import_llguidance() -> ModuleType:
    try:
        import llguidance
    except ImportError as exc:
        raise MissingLlguidanceError() from exc
    return llguidance


class _ByteVocabulary:
    """The 256 single bytes plus an end-of-sequence token, as llguidance's TokenizerWrapper wants."""

    eos_token_id = 256
    bos_token_id = None
    special_token_ids = [256]
    tokens = [bytes([b]) for b in range(256)] + [b"<eos>"]

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)


@lru_cache(maxsize=1)
def _byte_tokenizer() -> llguidance.LLTokenizer:
    llg = _import_llguidance()
    return llg.LLTokenizer(llg.TokenizerWrapper(_ByteVocabulary()))
