"""What decides a run: :class:`RunSpec`, a plain value that validates its fields and looks nothing up.

The runner resolves the suite, graph and backend a spec names, once, and fills in what the
suite decides (:meth:`RunSpec.for_suite`). What a stored config means to the report
(budget keys, :class:`RunSummary`) is in :mod:`agentloop.records.config`.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentloop._plugins import normalize_reference
from agentloop.backends.registry import DEFAULT_BACKEND
from agentloop.records.config import BUDGET_KEYS, RunSummary
from agentloop.types import small_local_model

if TYPE_CHECKING:
    from agentloop.graphs.budget import Budget
    from agentloop.graphs.context import LoopConfig
    from agentloop.memory import AbstractionStyle
    from agentloop.suites import Suite

__all__ = [
    "BUDGET_KEYS",
    "BUDGET_UNITS",
    "EXECUTORS",
    "NO_PROGRESS_WAVES",
    "RESULT_KEYS",
    "SHARED_BUDGET_GRAPHS",
    "STORED_DEFAULTS",
    "RunSpec",
    "RunSummary",
]

#: Where a run's tasks run: in this process, or on a pool of Ray actors (``agentloop[ray]``).
EXECUTORS: tuple[str, ...] = ("local", "ray")
#: What ``--budget-total`` counts: candidates sampled, or generated (completion) tokens.
BUDGET_UNITS: tuple[str, ...] = ("candidates", "tokens")
#: The graphs that spend a run-level budget (``--budget-total``): they stop a task early on
#: their own, so its unspent share can go to later tasks.
SHARED_BUDGET_GRAPHS: tuple[str, ...] = ("adaptive", "adaptive_sample", "adaptive_flat")
#: With ``--budget-total``, a task whose first this-many waves earned no credit stops (``no_progress``).
NO_PROGRESS_WAVES = 2


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything that decides a run's results, plus how fast to get them (``concurrency``, ``base_url``)."""

    suite: str = "text2sql"
    graph: str = "iad"
    backend: str = DEFAULT_BACKEND
    verifier: str | None = None  # None: the suite's default (exec for text2sql, rules for webshop)
    # How the suite phrases its prompt: "auto" lets the suite pick per backend (see its docs).
    prompt: str = "auto"
    data: str | None = None  # None: the suite's packaged data
    offset: int = 0
    limit: int | None = None
    n: int = 4
    rounds: int = 3
    # Candidates per round, round by round (the last repeats); empty: n every round.
    n_schedule: tuple[int, ...] = ()
    max_tokens: int = 256
    max_steps: int | None = None  # actions per episode in agent suites (webshop); None: the suite's default
    # How a webshop episode acts: react (the model writes actions), choice (likelihood choice
    # among the page's clickables), first (the search-first-click-buy floor), or auto.
    policy: str = "auto"
    # Text2SQL: schema (every SQL candidate decoded under the database's grammar), none, or auto
    # (schema for in-process backends that support constraints; see Text2SQLSuite.constrain_mode).
    constrain: str = "auto"
    temperature: float = 0.7
    top_p: float = 1.0
    # Stopping: None stops once the verifier passes a candidate; a number once the best
    # score reaches it. ``patience``: rounds without a better best before stopping.
    threshold: float | None = None
    patience: int | None = None
    # Per-task compute caps (None: no cap), held exactly by the graphs' budget tracker:
    # candidates sampled, generated tokens, and wall seconds.
    max_candidates: int | None = None
    max_tokens_total: int | None = None
    max_seconds: float | None = None
    # A run-level budget (docs/graphs.md, "A budget for the whole run"): ``budget_total`` of
    # ``budget_unit`` (candidates or generated tokens) shared by every task of an adaptive graph,
    # handed out by the ledger (agentloop.runs.ledger); a task draws on the savings of tasks at
    # least ``budget_window + 1`` places before it. None: no run-level budget.
    budget_total: int | None = None
    budget_unit: str = "candidates"
    budget_window: int = 8
    seed: int | None = 0
    concurrency: int = 4
    # One server URL, or several (comma-separated) spread over the Ray workers.
    base_url: str | None = None
    # Where tasks run (docs/scale.md): "local" (this process) or "ray" (a pool of Ray actors on
    # the cluster at ``ray_address``, or on one started here; ``workers`` actors, default one per
    # CPU, at most ``concurrency``). Speed knobs: a run resumes under either executor.
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    # Concept memory (docs/memory.md): a store URL or SQLite path, None for no memory. Every
    # memory setting decides results, so a resume must repeat them (RESULT_KEYS).
    memory: str | None = None
    memory_update: str = "task"
    memory_select: str = "lexical"
    memory_k: int = 3
    memory_namespace: str | None = None  # None: the suite's name
    # How concepts are abstracted: "json", "completion" (small models), or "auto": completion
    # for in-process transformers models, json otherwise (see memory_abstraction()).
    memory_abstract: str = "auto"
    # Which answers become lessons: "passed" (the gold-free verifier passed the best candidate),
    # "best" (the best candidate, even if it failed) or "all" (every task with an answer).
    memory_write: str = "passed"
    # Another backend id that writes and selects lessons while ``backend`` solves (None: the
    # run's backend). Its tokens are charged to memory's usage like any abstraction.
    memory_backend: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_schedule", tuple(self.n_schedule))
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {self.offset}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.policy not in ("auto", "react", "choice", "first"):
            raise ValueError(f"policy must be auto, react, choice or first, got {self.policy!r}")
        if self.constrain not in ("auto", "schema", "none"):
            raise ValueError(f"constrain must be auto, schema or none, got {self.constrain!r}")
        self._check_executor()
        for name in ("max_candidates", "max_tokens_total"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or unset for no cap), got {value}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 (or unset for no cap), got {self.max_seconds}")
        # A file reference is made absolute, like ``data``: a resume from elsewhere compares equal.
        object.__setattr__(self, "suite", normalize_reference(self.suite))
        object.__setattr__(self, "graph", normalize_reference(self.graph))
        if self.data is not None:
            # Absolute, so that a resume from another directory compares equal.
            object.__setattr__(self, "data", str(Path(self.data).expanduser().resolve()))
        self._check_memory()
        self._check_budget_total()
        self.loop_config()  # validates n, rounds, max_tokens, temperature, top_p, stopping
        self.budget()  # validates the caps

    def _check_executor(self) -> None:
        from agentloop.errors import AgentloopError, did_you_mean

        if self.executor not in EXECUTORS:
            raise AgentloopError(did_you_mean("executor", self.executor, EXECUTORS))
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.executor == "local":
            if len(self.endpoints()) > 1:
                raise AgentloopError(
                    f"{len(self.endpoints())} --base-url endpoints are spread over Ray workers: add "
                    "--executor ray, or give one URL"
                )
            for flag, value in (("--ray-address", self.ray_address), ("--workers", self.workers)):
                if value is not None:
                    raise AgentloopError(f"{flag} goes with --executor ray")

    def _check_budget_total(self) -> None:
        from agentloop.errors import AgentloopError

        if self.budget_unit not in BUDGET_UNITS:
            raise AgentloopError(f"--budget-unit {self.budget_unit!r}: use one of {', '.join(BUDGET_UNITS)}")
        if self.budget_window < 0:
            raise AgentloopError(f"--budget-window must be >= 0, got {self.budget_window}")
        if self.budget_total is None:
            return
        if self.budget_total < 1:
            raise AgentloopError(
                f"--budget-total must be >= 1 ({self.budget_unit} for the whole run), got {self.budget_total}"
            )
        if self.graph not in SHARED_BUDGET_GRAPHS:
            raise AgentloopError(
                f"--budget-total shares one budget across tasks only with an adaptive graph, not "
                f"{self.graph!r}: add --graph adaptive (or {', '.join(SHARED_BUDGET_GRAPHS[1:])}), or cap "
                "each task with --max-candidates / --max-tokens-total"
            )

    def endpoints(self) -> list[str]:
        """``base_url`` split into its endpoints (several, comma-separated, for Ray workers to share)."""
        return [u.strip() for u in (self.base_url or "").split(",") if u.strip()]

    def _check_memory(self) -> None:
        from agentloop.memory import SELECT_MODES, UPDATE_MODES, WRITE_MODES, check_namespace
        from agentloop.memory.store import resolve_memory_url

        if self.memory_update not in UPDATE_MODES:
            raise ValueError(
                f"memory_update must be one of {', '.join(UPDATE_MODES)}, got {self.memory_update!r}"
            )
        if self.memory_select not in SELECT_MODES:
            raise ValueError(
                f"memory_select must be one of {', '.join(SELECT_MODES)}, got {self.memory_select!r}"
            )
        if self.memory_k < 1:
            raise ValueError(f"memory_k must be >= 1, got {self.memory_k}")
        if self.memory_write not in WRITE_MODES:
            raise ValueError(
                f"memory_write must be one of {', '.join(WRITE_MODES)}, got {self.memory_write!r}"
            )
        if self.memory_backend is not None and not self.memory_backend.strip():
            raise ValueError("memory_backend must be a backend id such as 'openai:gpt-4o-mini', or unset")
        self.memory_abstraction()
        if self.memory is None:
            return
        url = resolve_memory_url(self.memory)
        if url.startswith("sqlite") and ":///" in url and not url.endswith(":memory:"):
            # Absolute, like ``data``: a resume from another directory compares equal.
            head, _, path = url.partition(":///")
            url = f"{head}:///{Path(path).expanduser().resolve()}"
        object.__setattr__(self, "memory", url)
        if self.memory_namespace is not None:
            object.__setattr__(self, "memory_namespace", check_namespace(self.memory_namespace))

    def for_suite(self, suite: Suite) -> RunSpec:
        """This spec with what the suite decides filled in: its default verifier (a given one is
        checked against the suite's) and, with memory, its name as the memory namespace. The
        runner calls it once, with the suite it resolved."""
        changes: dict[str, Any] = {}
        if self.verifier is None:
            changes["verifier"] = suite.default_verifier
        else:
            suite.check_verifier(self.verifier)  # an unknown name fails before any model loads
        if self.memory is not None and self.memory_namespace is None:
            from agentloop.memory import check_namespace

            changes["memory_namespace"] = check_namespace(suite.name)
        return replace(self, **changes) if changes else self

    def loop_config(self) -> LoopConfig:
        from agentloop.graphs.context import LoopConfig

        return LoopConfig(
            n=self.n,
            rounds=self.rounds,
            n_schedule=self.n_schedule,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            threshold=self.threshold,
            patience=self.patience,
            # Under a run-level budget, a task with no credit after its first waves gives up.
            give_up_after=NO_PROGRESS_WAVES if self.budget_total is not None else None,
            concurrency=self.concurrency,
            seed=self.seed,
        )

    def budget(self, allowance: int | None = None) -> Budget:
        """Each task's own caps (every task gets a fresh tracker, so tasks never share one).

        ``allowance``: the task's share of ``budget_total`` (in ``budget_unit``), which tightens
        the per-task cap of that unit.
        """
        from agentloop.graphs.budget import Budget

        candidates, tokens = self.max_candidates, self.max_tokens_total
        if allowance is not None:
            if self.budget_unit == "candidates":
                candidates = allowance if candidates is None else min(candidates, allowance)
            else:
                tokens = allowance if tokens is None else min(tokens, allowance)
        return Budget(max_candidates=candidates, max_tokens=tokens, max_wall_s=self.max_seconds)

    def budget_key(self) -> dict[str, Any]:
        """What makes two runs compute-matched: caps, candidates per round, rounds, tokens per candidate."""
        return {k: getattr(self, k) for k in BUDGET_KEYS}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.memory is not None:
            # The run store keeps this config: never a database password.
            from sqlalchemy.engine import make_url

            d["memory"] = make_url(self.memory).render_as_string(hide_password=True)
        return d

    def memory_abstraction(self) -> AbstractionStyle:
        """``memory_abstract`` resolved: ``auto`` is ``completion`` for in-process transformers
        models (the embedded 135M model cannot write the JSON the other asks for), else ``json``;
        the model asked is ``memory_backend`` when set.
        """
        from agentloop.memory import ABSTRACTION_STYLES

        if self.memory_abstract == "auto":
            writer = self.memory_backend or self.backend
            return "completion" if small_local_model(writer) else "json"
        if self.memory_abstract not in ABSTRACTION_STYLES:
            raise ValueError(
                f"memory_abstract must be auto, {', '.join(ABSTRACTION_STYLES)}, got {self.memory_abstract!r}"
            )
        return self.memory_abstract  # type: ignore[return-value]

    def result_keys(self) -> tuple[str, ...]:
        """The :data:`RESULT_KEYS` a resume compares: without memory, its settings do not matter
        (and runs stored before memory existed lack them).
        """
        if self.memory is not None:
            return RESULT_KEYS
        return tuple(k for k in RESULT_KEYS if k == "memory" or not k.startswith("memory_"))


# Settings a resumed run must share with the original: all but the speed knobs (how many tasks
# at once, which servers, which executor and cluster) and ``limit``
# (a resume with a larger --limit extends the run: stored tasks are kept, the rest are run).
# The memory settings count as results: which store and how it is read and written decide
# the answers.
RESULT_KEYS: tuple[str, ...] = tuple(
    k
    for k in RunSpec.__dataclass_fields__
    if k not in ("concurrency", "base_url", "executor", "ray_address", "workers", "limit")
)


# What a run stored before a setting existed is taken to have had its default.
STORED_DEFAULTS: dict[str, Any] = {
    k: f.default for k, f in RunSpec.__dataclass_fields__.items() if f.default is not MISSING
}
# Runs stored before --constrain existed decoded without a grammar, whatever auto means now.
STORED_DEFAULTS["constrain"] = "none"
# Webshop runs stored before --policy existed had the model write every action.
STORED_DEFAULTS["policy"] = "react"
# The structure hash of a user or plugin graph (None for the built-ins, and before it existed).
STORED_DEFAULTS["graph_hash"] = None
