"""The run's progress bar: tasks done, accuracy or reward so far, tokens and ETA (terminals only)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agentloop.records.store import TaskOutcome

__all__ = ["Bar", "progress_bar"]


class Bar:
    def __init__(self, progress: Progress | None, total: int, done: int):
        self.progress = progress
        self.done = done
        self.correct = 0.0  # tasks right, or rewards summed (suites scored by reward)
        self.seen = 0
        self.tokens = 0
        self.errors = 0
        self.task = (
            progress.add_task("tasks", total=total, completed=done, **self._fields()) if progress else None
        )

    def _fields(self) -> dict[str, Any]:
        acc = f"{self.correct / self.seen:.3f}" if self.seen else "-"
        errors = f" errors {self.errors}" if self.errors else ""
        return {"acc": acc, "tokens": _human(self.tokens), "errors": errors}

    def advance(self, outcome: TaskOutcome) -> None:
        self.seen += 1
        self.correct += outcome.reward if outcome.reward is not None else int(outcome.correct)
        self.errors += int(outcome.error is not None)
        self.tokens += outcome.usage.prompt_tokens + outcome.usage.completion_tokens
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, **self._fields())


class progress_bar:
    """A rich bar on stderr showing tasks done, accuracy so far, tokens and ETA (terminal only)."""

    def __init__(self, progress: bool | Console, title: str, *, scores_reward: bool, total: int, done: int):
        console = progress if isinstance(progress, Console) else Console(stderr=True)
        enabled = bool(progress) and console.is_terminal
        self.progress = (
            Progress(
                TextColumn(title),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(("reward" if scores_reward else "acc") + " {task.fields[acc]}"),
                TextColumn("{task.fields[tokens]} tokens{task.fields[errors]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
            )
            if enabled
            else None
        )
        self.bar = Bar(self.progress, total, done)

    def __enter__(self) -> Bar:
        if self.progress is not None:
            self.progress.start()
        return self.bar

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _human(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    if n >= 1_000:
        return f"{n / 1000:.1f}k"
    return str(n)
