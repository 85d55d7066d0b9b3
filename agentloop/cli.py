"""The agentloop command line (thin: parse arguments, call the public API)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Inference-time compute for LLM agents.")


def main() -> None:
    app()
