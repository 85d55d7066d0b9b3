"""``agentloop view``: browse runs in a local web viewer, or export them as one HTML file."""

from __future__ import annotations

import ipaddress
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from agentloop.cli._common import err, friendly_errors
from agentloop.cli.report import STORE_HELP

__all__ = ["view"]


@friendly_errors
def view(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories written by agentloop run (or runs' names in --store); the first is the base."
        ),
    ],
    store: Annotated[str | None, typer.Option("--store", help=STORE_HELP)] = None,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to bind. Anything but loopback shows your runs to the network."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8470,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export", help="Write one self-contained HTML file instead of serving.", dir_okay=False
        ),
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the viewer in a web browser.")] = False,
) -> None:
    """Browse runs: config, metrics, the task table, each task's rounds and candidates, and comparisons."""
    from agentloop.view import ViewServer, export_html, open_runs

    sources = open_runs(run_dirs, store=store)
    if export is not None:
        written = export_html(sources, export)
        err.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", highlight=False)
        return
    server = ViewServer(sources, host=host, port=port)
    if not _loopback(host):
        err.print(f"[yellow]note:[/] serving on {host}: anyone who can reach it can read these runs")
    err.print(f"agentloop view: {server.url} (Ctrl-C stops it)", highlight=False)
    if open_browser:
        webbrowser.open(server.url)
    server.serve_forever()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
