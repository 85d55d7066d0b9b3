"""A budget for the whole run (``--budget-total``): each task's allowance, the same whatever the timing.

The rule (docs/graphs.md, "A budget for the whole run"), for ``T`` planned tasks at
positions ``0 … T-1`` (task order), a budget ``B`` and a window ``W``:

* **Base share.** Task ``i`` gets ``B // T``, plus one if ``i < B % T`` (the shares add up to ``B``).
* **Savings.** A task that finished without an error on its first attempt *releases* what it
  did not spend (its allowance less its spend). A task stored with an error, or retried after
  one, holds its whole allowance: its spend is not final, so nothing of it is handed on.
* **Grants.** Task ``i`` may draw on the savings of the tasks at positions ``<= i - W - 1``,
  less what earlier tasks have drawn already (the *pool*). It takes as much of the pool as it
  can spend: ``min(pool, cap - base)`` where ``cap`` is the most one task can spend (its
  ``n``; unbounded when unknown), so the rest stays for the tasks after it.
* **Waiting.** Task ``i`` starts only once every task at ``<= i - W - 1`` has finished, so at
  most ``W + 1`` tasks run at once whatever ``--concurrency`` says.

Allowances depend only on the budget, the task order and the spends of finished tasks, never
on which task finished first, so a run gives the same allowances under any concurrency and
after a resume (which rebuilds the ledger from the stored tasks). Spend never exceeds ``B``:
every task is held to its allowance, and grants only hand on what finished tasks left unspent.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Ledger", "TaskSpend"]


@dataclass(frozen=True, slots=True)
class TaskSpend:
    """What a finished task spent, and whether its savings go back to the pool."""

    spent: int
    releases: bool


class Ledger:
    """Allowances for the tasks of one run, computed in task order (see the module's rule)."""

    def __init__(self, total: int, tasks: int, *, window: int, cap: int | None = None):
        if total < 1 or tasks < 0 or window < 0:
            raise ValueError(f"bad ledger: total={total}, tasks={tasks}, window={window}")
        self.total = total
        self.tasks = tasks
        self.window = window
        self.cap = cap
        self._allowances: list[int] = []
        self._granted = 0  # drawn from the pool by the tasks whose allowance is known
        self._finished: dict[int, TaskSpend] = {}

    def base(self, i: int) -> int:
        share, extra = divmod(self.total, max(self.tasks, 1))
        return share + (1 if i < extra else 0)

    def ready(self, i: int) -> bool:
        """Whether task ``i``'s allowance is decided: every task it may draw on has finished."""
        return all(j in self._finished for j in range(i - self.window))

    def allowance(self, i: int) -> int:
        """Task ``i``'s allowance (computing those before it first); only once :meth:`ready`."""
        if not 0 <= i < self.tasks:
            raise IndexError(f"task position {i} is outside 0..{self.tasks - 1}")
        while len(self._allowances) <= i:
            k = len(self._allowances)
            if not self.ready(k):
                raise RuntimeError(f"task {k}'s allowance waits for tasks up to {k - self.window - 1}")
            base = self.base(k)
            pool = self._released_before(k - self.window) - self._granted
            room = pool if self.cap is None else max(0, min(pool, self.cap - base))
            self._granted += room
            self._allowances.append(base + room)
        return self._allowances[i]

    def finish(self, i: int, spent: int, *, releases: bool) -> None:
        """Record what task ``i`` spent; ``releases``: it finished without an error at its first try."""
        self._finished[i] = TaskSpend(spent, releases)

    def is_finished(self, i: int) -> bool:
        return i in self._finished

    @property
    def spent(self) -> int:
        return sum(s.spent for s in self._finished.values())

    def _released_before(self, end: int) -> int:
        """Savings released by the finished tasks at positions ``< end`` (their allowances are known)."""
        total = 0
        for j in range(max(end, 0)):
            s = self._finished[j]
            if s.releases:
                total += max(self._allowances[j] - s.spent, 0)
        return total

    def allowances(self) -> list[int | None]:
        """Every task's allowance as far as it is decided (None where it waits)."""
        out: list[int | None] = []
        for i in range(self.tasks):
            if not self.ready(i) and i >= len(self._allowances):
                out.extend([None] * (self.tasks - i))
                break
            out.append(self.allowance(i))
        return out
