"""The ``agentloop`` command line: one module per command group, each a thin layer over the public API.

The core (backends, graphs, evals, memory, webshop) never imports this package.
"""

from __future__ import annotations

import typer

from agentloop.cli.eval import eval_app
from agentloop.cli.generate import generate
from agentloop.cli.graphs import graphs_app
from agentloop.cli.memory import memory_app
from agentloop.cli.models import models_app
from agentloop.cli.report import report
from agentloop.cli.run import run
from agentloop.cli.view import view

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Inference-time compute for LLM agents. Errors print one line; AGENTLOOP_DEBUG=1 shows the traceback.",
)
app.command("generate")(generate)
app.command("run")(run)
app.command("report")(report)
app.command("view")(view)
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
app.add_typer(memory_app, name="memory")
app.add_typer(graphs_app, name="graphs")


def main() -> None:
    app()
