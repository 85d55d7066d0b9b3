"""What the viewer reads from a run directory: the cached report, task pages, one task's rounds, comparisons.

A :class:`RunSource` keeps one run's task rows (never the trajectories) in memory while
the store is unchanged, so filtering and paging a 10,000-task run are list operations;
a task's candidates and prompts are read when its page is opened.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import statistics
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from agentloop.records.report import PairedDifference, RunReport, pair_tasks, paired_difference
from agentloop.records.store import RUN_DB, STORE_FILE, RunStore, StoredTask, open_store
from agentloop.types import Message

__all__ = [
    "SORT_KEYS",
    "CandidateView",
    "Comparison",
    "CompareRow",
    "DiffLine",
    "Interval",
    "RoundView",
    "RunSource",
    "TaskDetail",
    "TaskPage",
    "TaskQuery",
    "WebShopStep",
    "mean_interval",
    "prompt_diff",
    "safe_config",
]

Outcome = Literal["all", "correct", "wrong", "error"]
_OUTCOMES: tuple[Outcome, ...] = ("all", "correct", "wrong", "error")

SORT_KEYS: dict[str, Callable[[StoredTask], Any]] = {
    "index": lambda t: t.index,
    "task": lambda t: t.task_id,
    "outcome": lambda t: (t.error is None, t.value),
    "score": lambda t: t.score,
    "difficulty": lambda t: t.difficulty or "",  # by the run's own bucket order: see RunSource.tasks
    "stop": lambda t: t.stop_reason or "",
    "candidates": lambda t: t.candidates,
    "rounds": lambda t: t.rounds,
    "tokens": lambda t: t.total_tokens,
    "time": lambda t: t.wall_s,
}


# --- the task table ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """A task table's filter, order and page, as read from (and written back to) a URL query."""

    outcome: Outcome = "all"
    reward_min: float | None = None
    reward_max: float | None = None
    difficulty: str = ""
    stop: str = ""
    text: str = ""
    sort: str = "index"
    desc: bool = False
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TaskQuery:
        """Read a query leniently: a value that does not parse keeps its default."""
        outcome = params.get("outcome", "all")
        sort = params.get("sort", "index")
        return cls(
            outcome=outcome if outcome in _OUTCOMES else "all",  # type: ignore[arg-type]
            reward_min=_float(params.get("rmin")),
            reward_max=_float(params.get("rmax")),
            difficulty=params.get("difficulty", "")[:40],
            stop=params.get("stop", "")[:40],
            text=params.get("q", "")[:200],
            sort=sort if sort in SORT_KEYS else "index",
            desc=params.get("desc", "") in ("1", "true"),
            page=max(1, _int(params.get("page")) or 1),
            per_page=min(500, max(10, _int(params.get("per")) or 50)),
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The non-default settings (after ``changes``) as URL parameters."""
        q = replace(self, **changes)
        out = {
            "outcome": q.outcome if q.outcome != "all" else "",
            "rmin": _fmt_float(q.reward_min),
            "rmax": _fmt_float(q.reward_max),
            "difficulty": q.difficulty,
            "stop": q.stop,
            "q": q.text,
            "sort": q.sort if q.sort != "index" else "",
            "desc": "1" if q.desc else "",
            "page": str(q.page) if q.page != 1 else "",
            "per": str(q.per_page) if q.per_page != 50 else "",
        }
        return {k: v for k, v in out.items() if v}

    def matches(self, t: StoredTask) -> bool:
        if self.outcome == "error" and t.error is None:
            return False
        if self.outcome == "correct" and (t.error is not None or not t.correct):
            return False
        if self.outcome == "wrong" and (t.error is not None or t.correct):
            return False
        if self.reward_min is not None and t.value < self.reward_min:
            return False
        if self.reward_max is not None and t.value > self.reward_max:
            return False
        if self.difficulty and (t.difficulty or "unknown") != self.difficulty:
            return False
        if self.stop and (t.stop_reason or "none") != self.stop:
            return False
        if self.text:
            needle = self.text.lower()
            return needle in t.question.lower() or needle in t.task_id.lower()
        return True


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of the filtered, sorted task table."""

    rows: list[StoredTask]
    matching: int
    total: int
    page: int
    pages: int


# --- one task ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: Literal["same", "add", "del", "skip"]
    text: str


@dataclass(frozen=True, slots=True)
class WebShopStep:
    action: str
    summary: str
    observation: str | None


@dataclass(frozen=True, slots=True)
class CandidateView:
    position: int
    round: int
    index: int
    text: str
    answer: str | None
    parse_error: str | None
    score: float
    passed: bool
    feedback: str
    details: dict[str, Any]
    chosen: bool
    best_of_round: bool  # the round's one top score
    tied: bool  # shares the round's top score with another candidate
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str | None
    steps: list[WebShopStep] = field(default_factory=list)
    ending: str = ""
    reward: float | None = None


@dataclass(frozen=True, slots=True)
class RoundView:
    number: int  # 0-based
    prompt: list[Message] | None
    prompt_hashes: list[str]
    diff: list[DiffLine] | None  # against the previous round's prompt; None for the first round
    candidates: list[CandidateView]
    best_score: float


@dataclass(frozen=True, slots=True)
class TaskDetail:
    task: StoredTask
    position: int  # in the run's task order
    rounds: list[RoundView]
    lessons: list[str] | None
    lessons_written: list[str] | None
    error_detail: str | None
    prompts_stored: bool
    prev_id: str | None
    next_id: str | None


# --- comparisons ---------------------------------------------------------------------------


Group = Literal["improved", "regressed", "unchanged"]


@dataclass(frozen=True, slots=True)
class CompareRow:
    base: StoredTask
    others: list[StoredTask | None]  # the paired task of each later run, None where unpaired
    group: Group | None  # against the chosen later run; None when unpaired


@dataclass(frozen=True, slots=True)
class Comparison:
    """Runs over the same tasks: per-task outcomes side by side and each later run's paired difference."""

    sources: list[RunSource]
    against: int  # the later run (1-based in ``sources``) the groups compare with the first
    rows: list[CompareRow]
    counts: dict[str, int]
    differences: list[PairedDifference]

    def select(self, group: str) -> list[CompareRow]:
        return [r for r in self.rows if group in ("", "all") or r.group == group]


# --- reading a run -------------------------------------------------------------------------


class RunSource:
    """One run directory (or a run's name in the database ``store``) as the viewer reads it.

    Safe to share between server threads.
    """

    def __init__(self, run_dir: str | Path, label: str | None = None, *, store: str | None = None):
        self.path = Path(run_dir)
        self.label = label or self.path.name or str(self.path)
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._store_url = store
        self._store: RunStore | None = None
        self._cached: tuple[str, RunReport, dict[str, int]] | None = None

    @property
    def store_url(self) -> str | None:
        """The database URL given for this run (None: its run directory's own store)."""
        return self._store_url

    def _open(self) -> RunStore:
        with self._open_lock:
            if self._store is None:
                self._store = open_store(self.path, store=self._store_url)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def version(self) -> str:
        """Changes whenever a task is committed: the database file's and its WAL's size and time,
        or for a run in a shared database, its task count and newest row there.
        """
        if (self.path / STORE_FILE).is_file() or not (self.path / RUN_DB).is_file():
            return "-".join(str(v) for v in self._open().version())
        parts = []
        for name in (RUN_DB, f"{RUN_DB}-wal"):
            try:
                st = os.stat(self.path / name)
            except FileNotFoundError:
                continue
            parts.append(f"{st.st_mtime_ns}.{st.st_size}")
        return "-".join(parts)

    def report(self) -> RunReport:
        """The run's report, read again only when the store changed since the last call."""
        return self._current()[1]

    def _current(self) -> tuple[str, RunReport, dict[str, int]]:
        with self._lock:
            version = self.version()
            if self._cached is None or self._cached[0] != version:
                report = RunReport(self.path, self._open().load())
                positions = {t.task_id: i for i, t in enumerate(report.tasks)}
                self._cached = (version, report, positions)
            return self._cached

    def position(self, task_id: str) -> int:
        """The task's place in the run's task order (-1 when the run lacks it)."""
        return self._current()[2].get(task_id, -1)

    def tasks(self, query: TaskQuery) -> TaskPage:
        report = self.report()
        matching = [t for t in report.tasks if query.matches(t)]
        if query.sort == "difficulty":
            # The run recorded its suite's buckets, easiest first; tasks without one sort last.
            order = {d: i for i, d in enumerate(report.difficulties)}
            matching.sort(key=lambda t: order.get(t.difficulty or "", len(order)), reverse=query.desc)
        else:
            matching.sort(key=SORT_KEYS[query.sort], reverse=query.desc)
        pages = max(1, math.ceil(len(matching) / query.per_page))
        page = min(query.page, pages)
        start = (page - 1) * query.per_page
        return TaskPage(
            matching[start : start + query.per_page], len(matching), len(report.tasks), page, pages
        )

    def task(self, task_id: str) -> TaskDetail | None:
        """One task with its rounds, candidates, prompts and lessons; ``None`` if the run lacks it."""
        _, report, positions = self._current()
        position = positions.get(task_id)
        if position is None:
            return None
        task = report.tasks[position]
        with self._lock:
            store = self._open()
            trajectory = store.trajectory(task_id, report.run.name)
            prompts = store.prompts(task_id, report.run.name)  # empty for runs stored before prompts
            extra = store.task_extra(task_id, report.run.name)
        lessons, written, error_detail = extra if extra is not None else (None, None, None)
        tasks = report.tasks
        return TaskDetail(
            task=task,
            position=position,
            rounds=_rounds(trajectory, prompts),
            lessons=list(lessons) if lessons is not None else None,
            lessons_written=list(written) if written else None,
            error_detail=error_detail,
            prompts_stored=bool(prompts),
            prev_id=tasks[position - 1].task_id if position > 0 else None,
            next_id=tasks[position + 1].task_id if position + 1 < len(tasks) else None,
        )

    def compare(self, others: Sequence[RunSource], *, against: int = 1) -> Comparison:
        """This run against ``others``, paired as ``agentloop report --compare`` pairs them."""
        base = self.report()
        reports = [o.report() for o in others]
        against = min(max(1, against), len(reports))
        paired: list[dict[int, StoredTask]] = []
        for r in reports:
            pairs, _ = pair_tasks(base.tasks, r.tasks)
            paired.append({id(b): o for b, o in pairs})
        rows: list[CompareRow] = []
        counts = {"improved": 0, "regressed": 0, "unchanged": 0, "unpaired": 0}
        for t in base.tasks:
            row_others = [p.get(id(t)) for p in paired]
            chosen = row_others[against - 1]
            group: Group | None = None
            if chosen is not None:
                d = chosen.value - t.value
                group = "improved" if d > 0 else "regressed" if d < 0 else "unchanged"
            counts[group or "unpaired"] += 1
            rows.append(CompareRow(t, row_others, group))
        return Comparison(
            sources=[self, *others],
            against=against,
            rows=rows,
            counts=counts,
            differences=[paired_difference(base, r) for r in reports],
        )


# --- pictures and config -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    mean: float
    low: float
    high: float


def mean_interval(values: Sequence[float], confidence_z: float = 1.96) -> Interval | None:
    """The mean of per-task values in [0, 1] with a 95% interval: Wilson's for 0/1 values
    (accuracy), the normal approximation otherwise (reward). Cheap at any size, unlike the
    bootstrap that the paired differences use."""
    n = len(values)
    if n == 0:
        return None
    mean = statistics.fmean(values)
    z = confidence_z
    if all(v in (0.0, 1.0) for v in values):
        denom = 1 + z * z / n
        centre = (mean + z * z / (2 * n)) / denom
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
        return Interval(mean, max(0.0, centre - half), min(1.0, centre + half))
    sd = statistics.stdev(values) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return Interval(mean, max(0.0, mean - half), min(1.0, mean + half))


_SECRET_KEY = re.compile(
    r"(^|_)(api_?key|key|token|secret|password|passwd|auth|authorization)$", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^@/\s]+@")


def safe_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config for display: secret-looking keys and URL passwords masked."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if _SECRET_KEY.search(k) and v not in (None, "", False):
            out[k] = "***"
        elif isinstance(v, str):
            out[k] = _URL_PASSWORD.sub(r"\1***@", v)
        else:
            out[k] = v
    return out


# --- internals -----------------------------------------------------------------------------


def prompt_text(messages: Sequence[Message]) -> str:
    return "\n".join(f"[{m.role}]\n{m.content}" for m in messages)


def prompt_diff(old: str, new: str, *, context: int = 3) -> list[DiffLine]:
    """Line diff of two prompts; unchanged lines more than ``context`` away from a change fold into one line."""
    a, b = old.splitlines(), new.splitlines()
    out: list[DiffLine] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op != "equal":
            out += [DiffLine("del", s) for s in a[i1:i2]]
            out += [DiffLine("add", s) for s in b[j1:j2]]
            continue
        same = a[i1:i2]
        head = context if i1 > 0 else 0  # lines after the previous change
        tail = context if i2 < len(a) or j2 < len(b) else 0  # lines before the next change
        if len(same) <= head + tail + 1:
            out += [DiffLine("same", s) for s in same]
            continue
        out += [DiffLine("same", s) for s in same[:head]]
        out.append(DiffLine("skip", f"{len(same) - head - tail} unchanged lines"))
        out += [DiffLine("same", s) for s in same[len(same) - tail :]]
    return out


def _rounds(trajectory: list[dict[str, Any]], prompts: Mapping[str, list[Message]]) -> list[RoundView]:
    by_round: dict[int, list[dict[str, Any]]] = {}
    for c in trajectory:
        by_round.setdefault(int(c["round"]), []).append(c)
    rounds: list[RoundView] = []
    previous: str | None = None
    for number in sorted(by_round):
        cands = by_round[number]
        hashes = list(dict.fromkeys(str(c["prompt_hash"]) for c in cands))
        prompt = prompts.get(hashes[0]) if hashes else None
        text = prompt_text(prompt) if prompt is not None else None
        diff = prompt_diff(previous, text) if previous is not None and text is not None else None
        top = max((float(c["score"]) for c in cands), default=0.0)
        at_top = sum(float(c["score"]) == top for c in cands)
        views = [
            _candidate(
                c,
                best_of_round=float(c["score"]) == top and at_top == 1,
                tied=float(c["score"]) == top and at_top > 1,
            )
            for c in cands
        ]
        rounds.append(RoundView(number, prompt, hashes, diff, views, top))
        previous = text if text is not None else previous
    return rounds


_STEP_LINE = re.compile(r"^(\d+)\. (.*?) -> (.*)$")


def _candidate(c: dict[str, Any], *, best_of_round: bool, tied: bool = False) -> CandidateView:
    verdict = c.get("verdict") or {}
    steps, ending, reward = _webshop_steps(c.get("text") or "", c.get("answer"))
    return CandidateView(
        position=int(c["position"]),
        round=int(c["round"]),
        index=int(c["index"]),
        text=c.get("text") or "",
        answer=c.get("answer"),
        parse_error=c.get("parse_error"),
        score=float(c.get("score") or 0.0),
        passed=bool(c.get("passed")),
        feedback=str(verdict.get("feedback") or ""),
        details=dict(verdict.get("details") or {}),
        chosen=bool(c.get("best")),
        best_of_round=best_of_round,
        tied=tied,
        prompt_tokens=int(c.get("prompt_tokens") or 0),
        completion_tokens=int(c.get("completion_tokens") or 0),
        latency_s=float(c.get("latency_s") or 0.0),
        finish_reason=c.get("finish_reason"),
        steps=steps,
        ending=ending,
        reward=reward,
    )


def _webshop_steps(text: str, answer: str | None) -> tuple[list[WebShopStep], str, float | None]:
    """A WebShop episode's steps (action, one-line summary, the page when stored); none for other suites."""
    if not text.startswith("Actions:"):
        return [], "", None
    outcome: dict[str, Any] = {}
    if answer:
        try:
            parsed = json.loads(answer)
            outcome = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            pass
    observations = outcome.get("observations") or []
    steps: list[WebShopStep] = []
    ending = ""
    for line in text.splitlines()[1:]:
        m = _STEP_LINE.match(line)
        if m is None:
            ending = line.removeprefix("Outcome: ")
            continue
        i = len(steps)
        page = observations[i] if i < len(observations) and isinstance(observations[i], str) else None
        steps.append(WebShopStep(m.group(2), m.group(3), page))
    reward = outcome.get("reward")
    return steps, ending, float(reward) if isinstance(reward, int | float) else None


def _float(value: str | None) -> float | None:
    try:
        x = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _fmt_float(x: float | None) -> str:
    return "" if x is None else f"{x:g}"
