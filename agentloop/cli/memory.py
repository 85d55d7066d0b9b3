"""``agentloop memory ...``: inspect, search, export, import and prune a concept memory store.

``agentloop.cli`` mounts this with ``app.add_typer(memory_app, name="memory")``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentloop.cli._common import err, friendly_errors, print_json

__all__ = ["memory_app", "parse_age"]

memory_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Inspect and manage the concept memory (SQLite by default, or PostgreSQL).",
)

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        "--memory",
        envvar="AGENTLOOP_MEMORY",
        help="sqlite:///PATH, a file path, or postgresql://USER@HOST/DB: the URL 'agentloop run "
        "--memory' takes (default: memory.sqlite in $AGENTLOOP_HOME or the user data dir).",
    ),
]
# No short form: -n means --n (candidates per round) on every agentloop command.
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Only this namespace.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@contextmanager
def _store(db: str | None, *, create: bool = False) -> Iterator[Any]:
    """Open the store; only ``import`` (``create=True``) may create one that does not exist yet."""
    from agentloop.memory import MemoryStoreError
    from agentloop.memory.store import SQLMemoryStore

    try:
        store = SQLMemoryStore(db, create=create)
    except MemoryStoreError as exc:
        if create or not str(exc).startswith("no memory store"):
            raise
        raise MemoryStoreError(
            f"{exc}; check --db (or $AGENTLOOP_MEMORY). A store is created by "
            "'agentloop run SUITE --memory URL' or 'agentloop memory import FILE --db URL'"
        ) from None
    try:
        yield store
    finally:
        store.close()


_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}


def parse_age(text: str) -> timedelta:
    """``90d``, ``12h``, ``2w``, ``30m``, ``45s`` or a plain number of days."""
    m = _AGE.fullmatch(text.lower())
    if m is None:
        raise typer.BadParameter(f"expected an age like 90d, 12h or 2w, got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def _concept_table(rows: list[Any], *, score: list[float] | None = None) -> Table:
    table = Table()
    if score is not None:
        table.add_column("score", justify="right")
    table.add_column("id", justify="right")
    table.add_column("namespace")
    table.add_column("kind")
    table.add_column("title", ratio=1)
    table.add_column("shown/passed", justify="right")
    table.add_column("support", justify="right")
    table.add_column("updated")
    for i, c in enumerate(rows):
        cells = [
            str(c.id),
            c.namespace,
            c.kind,
            c.title,
            f"{c.usage_count}/{c.success_count}",
            str(c.support_count),
            f"{c.updated_at:%Y-%m-%d}",
        ]
        if score is not None:
            cells.insert(0, f"{score[i]:.3f}")
        table.add_row(*(escape(x) for x in cells))
    return table


@memory_app.command("list")
@friendly_errors
def list_(
    db: DbOpt = None,
    namespace: NamespaceOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Most concepts to show.")] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    order: Annotated[str, typer.Option(help="updated, created, usage, success or id.")] = "updated",
    as_json: JsonOpt = False,
) -> None:
    """List concepts, most recently updated first."""
    if order not in ("updated", "created", "usage", "success", "id"):
        raise typer.BadParameter(f"unknown order {order!r}", param_hint="--order")
    with _store(db) as store:
        rows = store.list(namespace=namespace, limit=limit, offset=offset, order=order)
    if as_json:
        print_json([c.to_dict() for c in rows])
        return
    Console().print(_concept_table(rows))


@memory_app.command("show")
@friendly_errors
def show(
    ref: Annotated[str, typer.Argument(help="A concept's id or uid.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one concept in full, with its provenance."""
    from agentloop.memory import MemoryStoreError

    with _store(db) as store:
        concept = store.get(ref)
    if concept is None:
        raise MemoryStoreError(f"no concept with id or uid {ref!r}")
    if as_json:
        print_json(concept.to_dict())
        return
    out = Console()
    out.rule(f"[bold]{escape(concept.title)}[/]  (id {concept.id}, {concept.kind}, v{concept.version})")
    out.print(f"[dim]namespace[/] {escape(concept.namespace)}   [dim]uid[/] {concept.uid}")
    out.print(f"[bold]When:[/] {escape(concept.situation or '-')}")
    out.print(f"[bold]Cues:[/] {escape('; '.join(concept.cues) or '-')}")
    out.print(f"[bold]Do:[/] {escape(concept.suggestion)}")
    for p in concept.parameters:
        out.print(f"  [cyan]{escape(p.name)}[/] ({escape(p.type)}) {escape(p.description)}")
    prov = concept.provenance
    out.print(
        f"[dim]shown {concept.usage_count}, passed {concept.success_count}, support {concept.support_count}; "
        f"created {concept.created_at:%Y-%m-%d %H:%M}, updated {concept.updated_at:%Y-%m-%d %H:%M} UTC[/]"
    )
    out.print(f"[dim]tasks:[/] {escape(', '.join(prov.task_ids) or '-')}")
    out.print(f"[dim]runs:[/] {escape(', '.join(prov.run_ids) or '-')}")
    for e in prov.evidence:
        where = f"candidate {e.candidate}" if e.candidate is not None else "its answer"
        out.print(
            f"[dim]from[/] task {escape(e.task_id)}, {where}: score {e.score:.2f}, "
            f"{'passed' if e.passed else 'not passed'} ({escape(e.verifier or 'verifier unknown')})"
        )
    for m in prov.merges:
        out.print(
            f"[dim]merged {m.at:%Y-%m-%d %H:%M} ({m.reason}, {m.similarity:.2f}):[/] "
            f"{escape(m.draft.title)}: {escape(m.draft.suggestion)}"
        )


@memory_app.command("search")
@friendly_errors
def search(
    query: Annotated[str, typer.Argument(help="Text to search for, e.g. a task's question.")],
    db: DbOpt = None,
    namespace: NamespaceOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, help="How many concepts.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Search concepts lexically (BM25), as a run's retrieval does."""
    with _store(db) as store:
        hits = store.search(query, namespace=namespace, k=k)
    if as_json:
        print_json([{"score": h.score, **h.concept.to_dict()} for h in hits])
        return
    if not hits:
        err.print("no matching concepts")
        return
    Console().print(_concept_table([h.concept for h in hits], score=[h.score for h in hits]))


@memory_app.command("stats")
@friendly_errors
def stats(db: DbOpt = None, namespace: NamespaceOpt = None, as_json: JsonOpt = False) -> None:
    """Count concepts (per namespace) and their uses."""
    with _store(db) as store:
        s = store.stats(namespace)
    if as_json:
        print_json(s.to_dict())
        return
    out = Console()
    out.print(f"[bold]{s.concepts}[/] concepts in {escape(s.url)} (schema {s.revision})")
    for ns, n in s.namespaces.items():
        out.print(f"  {escape(ns)}: {n}")
    out.print(
        f"uses: {s.uses} ({s.uses_passed} passed, {s.uses_failed} failed, "
        f"{s.uses - s.uses_passed - s.uses_failed} open); never shown: {s.never_used}; helped: {s.helped}"
    )
    out.print(escape(abstraction_line(s.to_dict())))


def abstraction_line(counts: dict[str, Any]) -> str:
    """One line on abstractions, from memory stats or a run summary's ``memory`` counts."""
    line = (
        f"abstractions: {counts.get('abstractions_attempted', 0)} attempted, "
        f"{counts.get('abstractions_accepted', 0)} accepted, {counts.get('abstractions_declined', 0)} "
        f"declined, {counts.get('abstractions_rejected', 0)} rejected"
    )
    if counts.get("first_rejection"):
        line += f" (first: {counts['first_rejection']})"
    return line


@memory_app.command("export")
@friendly_errors
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write.")],
    db: DbOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Write concepts and their uses to a JSON file (import reads it back)."""
    with _store(db) as store, err.status("exporting..."):
        n = store.export_json(out, namespace=namespace)
    err.print(f"exported {n} concepts to {escape(str(out))}")


@memory_app.command("import")
@friendly_errors
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A file written by export.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load an export. Known concepts (same uid) are updated if the file's copy is newer."""
    from agentloop.memory import MemoryStoreError

    with _store(db, create=True) as store, err.status("importing..."):
        try:
            report = store.import_json(file)
        except UnicodeDecodeError:
            raise MemoryStoreError(f"{file} is not a memory export: it is not UTF-8 text") from None
    if as_json:
        print_json(report.to_dict())
        return
    err.print(
        f"inserted {report.inserted}, merged {report.merged}, updated {report.updated}, "
        f"skipped {report.skipped} (already present); {report.uses} uses"
    )


@memory_app.command("prune")
@friendly_errors
def prune(
    db: DbOpt = None,
    namespace: NamespaceOpt = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="Drop concepts neither used nor updated for this long (90d, 12h, 2w)."
        ),
    ] = None,
    never_helped: Annotated[
        int | None,
        typer.Option("--never-helped", min=1, help="Drop concepts shown at least N times without a pass."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be dropped.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Drop stale or unhelpful concepts (with both options, a concept must match both)."""
    if older_than is None and never_helped is None:
        raise typer.BadParameter("give --older-than and/or --never-helped")
    age = parse_age(older_than) if older_than is not None else None
    with _store(db) as store:
        report = store.prune(older_than=age, never_helped=never_helped, namespace=namespace, dry_run=dry_run)
    if as_json:
        print_json(report.to_dict())
        return
    verb = "would drop" if dry_run else "dropped"
    err.print(f"{verb} {len(report.removed)} concepts")
    if report.removed:
        Console().print(_concept_table(list(report.removed)))


@memory_app.command("reindex")
@friendly_errors
def reindex(db: DbOpt = None) -> None:
    """Rebuild the search index and term statistics (only needed after an analyser change)."""
    with _store(db) as store, err.status("reindexing..."):
        store.rebuild_index()
        n = store.stats().concepts
    err.print(f"reindexed {n} concepts")
