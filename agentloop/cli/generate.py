"""``agentloop generate``: sample completions for one prompt from any backend."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from agentloop.cli._common import BackendOpt, BaseUrlOpt, above_zero, err, friendly_errors, print_json

__all__ = ["generate"]

ConcurrencyOpt = Annotated[
    int, typer.Option(min=1, help="Most requests in flight at once (remote backends).")
]
RetriesOpt = Annotated[int, typer.Option(min=0, help="Retries on 429/5xx/timeouts, with backoff.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for one request.")]


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
        typer.Option(min=0.0, max=1.0, callback=above_zero, help="Nucleus sampling mass (0 < p <= 1)."),
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
