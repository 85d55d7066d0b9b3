"""Records: what a run stored and how it is read back (the run store, its schema and migrations, and the report).

Nothing here imports a suite, a graph or a backend: a run reports and opens in the viewer
from what its store recorded, even when the plugin that wrote it is gone.
"""

from __future__ import annotations

from agentloop._lazy import lazy_getattr

_LAZY = {
    "BUDGET_KEYS": "config",
    "RunSummary": "config",
    "CandidateScore": "store",
    "ConfigMismatchError": "store",
    "RUN_DB": "store",
    "RunExistsError": "store",
    "RunInfo": "store",
    "RunNotFoundError": "store",
    "RunStore": "store",
    "RunStoreError": "store",
    "RunStoreUnavailableError": "store",
    "StoredRun": "store",
    "StoredTask": "store",
    "TaskOutcome": "store",
    "open_store": "store",
    "Curve": "curves",
    "MatchedDifference": "pareto",
    "load_curve": "curves",
    "load_point": "curves",
    "matched_difference": "pareto",
    "PairedDifference": "report",
    "RunReport": "report",
    "check_comparable": "report",
    "paired_difference": "report",
    "plot_reports": "render",
    "render_failures": "render",
    "render_reports": "render",
    "reports_json": "report",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
