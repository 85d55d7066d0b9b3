"""Accuracy-vs-compute curves from one stored run (frontiers and matched comparisons: :mod:`.pareto`).

A ``best_of_n`` or ``self_consistency`` run with n=N stored N candidates per task, each
with its verdict and (from store revision 0004) its official score. Choosing k of them
at random and letting the graph's own rule pick one gives the metric that run would have
had with n=k; its expectation over all k-subsets is the curve point at k (Brown et al.
2024 estimate coverage curves the same way). Best-of-k is exact: rank the candidates in
the graph's preference order; the i-th (0-based) is chosen exactly when it is in the
subset and none ranked above it is, in C(N-1-i, k-1) of the C(N, k) subsets. Majority of k
has no such closed form: every subset is enumerated while there are few, else a seeded
sample is drawn. Intervals come from a seeded bootstrap over tasks.

Cost at k is each task's stored spend as sampling k of its N candidates alone would have
spent it (:func:`cost_at_k`; :data:`COST_NOTES`). Other graphs give one point: their mean
value at their mean cost.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentloop.errors import AgentloopError
from agentloop.records.report import RunReport
from agentloop.records.store import StoredTask, open_store

__all__ = [
    "COSTS",
    "COST_NOTES",
    "CURVE_GRAPHS",
    "CandidateStat",
    "Curve",
    "CurveError",
    "best_of_k",
    "call_share",
    "cost_at_k",
    "load_curve",
    "load_point",
    "majority_of_k",
    "task_cost",
]

CostKind = Literal["tokens", "completion", "candidates", "calls", "usd"]
COSTS: tuple[str, ...] = ("tokens", "completion", "candidates", "calls", "usd")
COST_NOTES: dict[str, str] = {
    "tokens": "prompt + completion tokens per task; at k, completion scaled k/N and the prompt priced per "
    "call k needs (a batched call sends it once for all its candidates)",
    "completion": "completion tokens per task; at k, scaled k/N (each candidate's own tokens)",
    "candidates": "candidates (or episodes) per task; at k, k",
    "calls": "LLM calls per task; at k, the calls k candidates need (one batched call makes several)",
    "usd": "USD per task where the backend priced it; at k, scaled as its tokens are",
}
#: The graphs whose stored candidates give a curve, and the rule that picks one of k.
CURVE_GRAPHS: dict[str, Literal["best", "vote"]] = {"best_of_n": "best", "self_consistency": "vote"}
# Enumerate a task's k-subsets for the vote while there are at most this many; else sample.
EXACT_LIMIT = 3000
SAMPLES = 1000


class CurveError(AgentloopError, ValueError):
    """A curve or frontier cannot be drawn from what was stored: the CLI prints it as one line."""


@dataclass(frozen=True, slots=True)
class CandidateStat:
    """What choosing among candidates needs of one: its verdict, official value and vote key."""

    score: float = 0.0
    passed: bool = False
    verified: bool = True  # had a verdict (best_of skips candidates without one)
    value: float = 0.0  # official: reward, or 1.0 when correct
    key: str | None = None  # self-consistency vote key; None abstains


def best_of_k(cands: Sequence[CandidateStat], k: int) -> float:
    """The expected value of the verifier's pick of k candidates drawn without replacement (exact).

    Ties break as ``nodes.best_of`` breaks them: higher (score, passed) wins, else the
    earlier. Unverified candidates are never picked; a subset of only those scores 0.
    """
    n = len(cands)
    k = min(k, n)
    if k <= 0:
        return 0.0
    order = sorted(range(n), key=lambda i: (not cands[i].verified, -cands[i].score, -cands[i].passed, i))
    total = math.comb(n, k)
    return sum(
        cands[i].value * math.comb(n - 1 - rank, k - 1) / total
        for rank, i in enumerate(order)
        if cands[i].verified
    )


def _vote(subset: Sequence[CandidateStat]) -> float:
    """``nodes.vote`` over ``subset`` (in stored order): the most common key, ties to the first seen."""
    groups: dict[str, list[CandidateStat]] = {}
    for c in subset:
        if c.key is not None:
            groups.setdefault(c.key, []).append(c)
    if not groups:
        return subset[0].value if subset else 0.0
    return max(groups.values(), key=len)[0].value


def majority_of_k(
    cands: Sequence[CandidateStat], k: int, *, rng: random.Random | None = None
) -> tuple[float, bool]:
    """The expected value of the vote over k of ``cands``, and whether it is exact (else sampled)."""
    n = len(cands)
    k = min(k, n)
    if k <= 0:
        return 0.0, True
    if math.comb(n, k) <= EXACT_LIMIT:
        values = [_vote([cands[i] for i in s]) for s in itertools.combinations(range(n), k)]
        return statistics.fmean(values), True
    rng = rng or random.Random(0)
    values = [_vote([cands[i] for i in sorted(rng.sample(range(n), k))]) for _ in range(SAMPLES)]
    return statistics.fmean(values), False


def task_cost(t: StoredTask, cost: str) -> float | None:
    """One task's stored spend in ``cost`` units (None: USD was not priced)."""
    if cost == "tokens":
        return float(t.total_tokens)
    if cost == "completion":
        return float(t.completion_tokens)
    if cost == "candidates":
        return float(t.candidates)
    if cost == "calls":
        return float(t.llm_calls)
    if cost == "usd":
        return t.cost_usd
    raise CurveError(f"unknown --cost {cost!r}; use one of {', '.join(COSTS)}")


def call_share(k: int, n: int, calls: float) -> float:
    """The share of a task's ``calls`` that sampling ``k`` of its ``n`` candidates alone makes.

    ``n / calls`` candidates came from a call. At one or fewer (each candidate its own call,
    or several, as a WebShop episode's steps), the share is k/n. Batched (several candidates
    a call), k candidates need ``ceil(k / per_call)`` of the ``ceil(n / per_call)`` calls the
    run made: one batched call of 8 costs a call at k=1 too.
    """
    k = min(k, n)
    if n <= 0:
        return 1.0
    per_call = n / calls if calls > 0 else 1.0
    if per_call <= 1.0:
        return k / n
    return math.ceil(k / per_call - 1e-9) / math.ceil(n / per_call - 1e-9)


def cost_at_k(t: StoredTask, cost: str, k: int, n: int) -> float:
    """Task ``t``'s spend in ``cost`` units had it sampled ``k`` of its ``n`` stored candidates.

    Candidates and completion tokens are each candidate's own, so they scale k/n. Calls and
    the prompt tokens they send scale by :func:`call_share`. USD scales as the tokens do.
    """
    sampled = min(k, n) / n if n > 0 else 1.0
    share = call_share(k, n, t.llm_calls)
    if cost == "candidates":
        return t.candidates * sampled
    if cost == "completion":
        return t.completion_tokens * sampled
    if cost == "calls":
        return t.llm_calls * share
    tokens = t.prompt_tokens * share + t.completion_tokens * sampled
    if cost == "tokens":
        return tokens
    if cost == "usd":
        usd = t.cost_usd or 0.0
        return usd * tokens / t.total_tokens if t.total_tokens else usd * sampled
    raise CurveError(f"unknown --cost {cost!r}; use one of {', '.join(COSTS)}")


@dataclass(frozen=True, slots=True)
class Curve:
    """A run's metric at each k (one point for runs that are not sampling runs), with 95% intervals.

    ``values[t][j]`` is task ``task_ids[t]``'s expected value at ``ks[j]``: what matched
    comparisons pair per task.
    """

    label: str
    suite: str
    graph: str
    metric: str
    cost: str
    ks: list[int | None]  # None: the run's own configuration (a single point)
    costs: list[float]
    means: list[float]
    ci_low: list[float]
    ci_high: list[float]
    task_ids: list[str]
    values: list[list[float]] = field(repr=False)
    exact: bool = True

    @property
    def sampled(self) -> bool:
        """Whether this is a curve over k (else one point)."""
        return self.ks != [None]

    def point_label(self, j: int) -> str:
        k = self.ks[j]
        return self.label if k is None else f"{self.label} k={k}"

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.label,
            "suite": self.suite,
            "graph": self.graph,
            "metric": self.metric,
            "cost": self.cost,
            "exact": self.exact,
            "points": [
                {
                    "k": k,
                    "cost": _r(c),
                    "value": _r(m),
                    "ci": [_r(lo), _r(hi)],
                }
                for k, c, m, lo, hi in zip(
                    self.ks, self.costs, self.means, self.ci_low, self.ci_high, strict=True
                )
            ],
        }


def load_curve(
    report: RunReport,
    *,
    cost: str = "candidates",
    store: str | None = None,
    seed: int = 0,
    resamples: int = 1000,
    officials: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    vote: bool = False,
) -> Curve:
    """``report``'s curve over k (sampling runs) or its single point, in ``cost`` units.

    ``officials``: official scores by (task id, position) for candidates the store holds none
    for (a rescoring that could not be saved: see :mod:`agentloop.runs.rescore`).

    ``vote``: a ``best_of_n`` run's candidates picked by majority vote instead of by verdict.
    Both graphs sample a task's candidates alike (same prompt, and seeds from the run's seed,
    round and index alone), so this is the curve ``self_consistency`` with the same n and
    seed would draw; it needs the candidates' vote keys (``report --vote`` adds them offline).
    """
    if CURVE_GRAPHS.get(report.run.graph) is None:
        if vote:
            raise CurveError(
                f"run {report.label} is a {report.run.graph} run: a vote curve comes from a best_of_n run's candidates"
            )
        return load_point(report, cost=cost, seed=seed, resamples=resamples)
    rule = "vote" if vote else CURVE_GRAPHS[report.run.graph]
    tasks = report.tasks
    costs = _task_costs(report, cost)
    metric = _metric(report)
    with open_store(Path(report.run_dir), store=store) as opened:
        table = opened.candidate_table(report.run.name)
    if not any(table.values()):
        raise CurveError(f"run {report.label} stored no candidates: a curve over k needs its trajectory")
    if officials:
        for task_id, rows in table.items():
            for c in rows:
                if c.get("official") is None and (task_id, c["position"]) in officials:
                    c["official"] = dict(officials[(task_id, c["position"])])
    per_task = [[_stat(c) for c in table.get(t.task_id, [])] for t in tasks]
    missing = sum(s is None for cands in per_task for s in cands)
    if missing == sum(len(cands) for cands in per_task):
        raise CurveError(
            f"run {report.label} was stored before candidates kept their official scores (store revision "
            "0004): score them offline with agentloop report --frontier --rescore, or rerun it to draw its curve"
        )
    if missing:
        raise CurveError(
            f"run {report.label}: the suite failed to score {missing} candidate(s), so its curve would "
            "count them as neither right nor wrong; fix the suite's score and rescore them (report --rescore), "
            "or rerun it"
        )
    stats: list[list[CandidateStat]] = [[s for s in cands if s is not None] for cands in per_task]
    if vote and not any(s.key is not None for cands in stats for s in cands):
        raise CurveError(
            f"run {report.label} stored no vote keys: add them offline with agentloop report --frontier --vote"
        )
    n = max(len(c) for c in stats)
    ks = list(range(1, n + 1))
    rng = random.Random(seed)
    values: list[list[float]] = []
    exact = True
    for cands in stats:
        row = []
        for k in ks:
            if rule == "best":
                row.append(best_of_k(cands, k))
            else:
                v, was_exact = majority_of_k(cands, k, rng=rng)
                exact = exact and was_exact
                row.append(v)
        values.append(row)
    # A task that stored fewer candidates than N (a call came back short) spent what it spent at k >= its count.
    mean_costs = [
        statistics.fmean(
            cost_at_k(t, cost, k, len(cands)) if cands else c
            for t, c, cands in zip(tasks, costs, stats, strict=True)
        )
        for k in ks
    ]
    curve = _curve(report, cost, metric, list(ks), mean_costs, values, exact, seed, resamples)
    if vote and CURVE_GRAPHS[report.run.graph] == "best":
        curve = dataclasses.replace(
            curve, label=f"{report.label} (vote)", graph=f"self_consistency, from {report.graph_label}"
        )
    return curve


def load_point(report: RunReport, *, cost: str = "candidates", seed: int = 0, resamples: int = 1000) -> Curve:
    """``report`` as one point, whatever its graph: its mean metric at its mean cost, with a 95% interval.

    What :func:`load_curve` gives a run that is not a sampling run; the viewer also draws a
    sampling run whose curve cannot be read (stored before revision 0004) this way.
    """
    costs = _task_costs(report, cost)
    point = [[t.value] for t in report.tasks]
    return _curve(
        report, cost, _metric(report), [None], [statistics.fmean(costs)], point, True, seed, resamples
    )


def _task_costs(report: RunReport, cost: str) -> list[float]:
    """Each task's stored spend in ``cost`` units; refused with one line when there is none to read."""
    if cost not in COSTS:
        raise CurveError(f"unknown --cost {cost!r}; use one of {', '.join(COSTS)}")
    if not report.tasks:
        raise CurveError(f"run {report.label} stored no tasks")
    spend = [task_cost(t, cost) for t in report.tasks]
    if any(s is None for s in spend):
        raise CurveError(f"run {report.label} has no USD price for some tasks; use another --cost")
    return [float(s or 0.0) for s in spend]


def _metric(report: RunReport) -> str:
    return "reward" if report.scores_reward else report.metric


def _stat(c: dict[str, Any]) -> CandidateStat | None:
    official = c.get("official")
    if not isinstance(official, dict):
        return None
    reward = official.get("reward")
    value = float(reward) if reward is not None else float(bool(official.get("correct")))
    # A candidate that did not parse still has a (failed) verdict, and best_of may keep it.
    verified = isinstance(c.get("verdict"), dict)
    key = official.get("key")
    return CandidateStat(
        float(c["score"]), bool(c["passed"]), verified, value, key if isinstance(key, str) else None
    )


def _curve(
    report: RunReport,
    cost: str,
    metric: str,
    ks: list[int | None],
    costs: list[float],
    values: list[list[float]],
    exact: bool,
    seed: int,
    resamples: int,
) -> Curve:
    means = [statistics.fmean(row[j] for row in values) for j in range(len(ks))]
    lows, highs = _bootstrap(values, seed=seed, resamples=resamples)
    return Curve(
        label=report.label,
        suite=report.suite_label,
        graph=report.graph_label,
        metric=metric,
        cost=cost,
        ks=ks,
        costs=costs,
        means=means,
        ci_low=lows,
        ci_high=highs,
        task_ids=[t.task_id for t in report.tasks],
        values=values,
        exact=exact,
    )


def _bootstrap(
    values: Sequence[Sequence[float]], *, seed: int, resamples: int, confidence: float = 0.95
) -> tuple[list[float], list[float]]:
    """Percentile intervals of each column's mean, resampling tasks (rows) with replacement."""
    rng = random.Random(seed)  # the same run always prints the same interval
    n = len(values)
    width = len(values[0]) if values else 0
    draws: list[list[float]] = [[] for _ in range(width)]
    for _ in range(resamples):
        rows = [values[rng.randrange(n)] for _ in range(n)]
        for j in range(width):
            draws[j].append(statistics.fmean(r[j] for r in rows))
    tail = (1.0 - confidence) / 2
    lows, highs = [], []
    for d in draws:
        d.sort()
        lows.append(d[int(tail * (resamples - 1))])
        highs.append(d[int((1.0 - tail) * (resamples - 1))])
    return lows, highs


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _g(x: float) -> str:
    return f"{x:.4g}"
