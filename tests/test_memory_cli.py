"""``agentloop memory ...`` (mounted here on a bare Typer app, as agentloop.cli mounts it)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agentloop.cli.memory import memory_app, parse_age
from agentloop.memory import ConceptDraft, Evidence, Provenance, SQLMemoryStore

app = typer.Typer()
app.add_typer(memory_app, name="memory")
runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    # Wide enough that rich tables do not wrap titles.
    return runner.invoke(
        app, ["memory", *args], env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    with SQLMemoryStore(url) as store:
        store.add(
            ConceptDraft(
                title="Count rows per group",
                situation="how many per category",
                cues=("how many", "for each"),
                suggestion="GROUP BY the key with COUNT(*).",
            ),
            namespace="spider",
            provenance=Provenance(
                ("q1",), ("r1",), evidence=(Evidence("q1", "r1", candidate=2, score=0.75, verifier="exec"),)
            ),
        )
        store.add(
            ConceptDraft(title="Most recent row", suggestion="ORDER BY date DESC LIMIT 1.", cues=("latest",)),
            namespace="bird",
        )
        store.add(
            ConceptDraft(title="count rows per group", suggestion="Group and count."),
            namespace="spider",
            provenance=Provenance(("q2",)),
        )
    return url


def test_stats_json(db: str) -> None:
    r = invoke("stats", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["concepts"] == 2 and data["namespaces"] == {"bird": 1, "spider": 1}
    assert json.loads(invoke("stats", "--db", db, "--json", "--namespace", "bird").stdout)["concepts"] == 1
    human = invoke("stats", "--db", db)
    assert "2 concepts" in human.stdout and "spider: 1" in human.stdout


def test_memory_is_another_name_for_db_as_run_spells_it(db: str) -> None:
    assert json.loads(invoke("stats", "--memory", db, "--json").stdout) == json.loads(
        invoke("stats", "--db", db, "--json").stdout
    )


def test_stats_on_the_default_database(tmp_path: Path, db: str) -> None:
    env = {"AGENTLOOP_HOME": str(tmp_path / "home"), "AGENTLOOP_MEMORY": ""}
    r = invoke("stats", "--json", env=env)
    assert r.exit_code == 2 and "no memory store at" in r.output
    assert not (tmp_path / "home").exists()
    assert invoke("import", str(_export(db, tmp_path)), env=env).exit_code == 0
    r = invoke("stats", "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["concepts"] == 2
    assert (tmp_path / "home" / "memory.sqlite").exists()


def _export(db: str, tmp_path: Path) -> Path:
    out = tmp_path / "export.json"
    assert invoke("export", "--db", db, "--out", str(out)).exit_code == 0
    return out


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["show", "1"],
        ["search", "q"],
        ["stats"],
        ["export", "--out", "x.json"],
        ["prune", "--never-helped", "1"],
        ["reindex"],
    ],
)
def test_commands_other_than_import_never_create_a_store(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no" / "such" / "m.sqlite"
    r = invoke(*command, "--db", f"sqlite:///{missing}")
    assert r.exit_code == 2 and f"no memory store at {missing}" in r.output, r.output
    assert not (tmp_path / "no").exists()


def test_namespace_has_no_short_form(db: str) -> None:
    # -n means --n (candidates) on every agentloop command; --namespace is spelled out.
    r = runner.invoke(app, ["memory", "stats", "--db", db, "-n", "bird"])
    assert r.exit_code == 2 and "No such option" in r.output


def test_list_show_search(db: str) -> None:
    listed = json.loads(invoke("list", "--db", db, "--json", "--order", "id").stdout)
    assert [c["title"] for c in listed] == ["Count rows per group", "Most recent row"]
    assert "Count rows per group" in invoke("list", "--db", db).stdout

    shown = json.loads(invoke("show", str(listed[0]["uid"]), "--db", db, "--json").stdout)
    assert shown["provenance"]["task_ids"] == ["q1", "q2"] and shown["support_count"] == 2
    text = invoke("show", "1", "--db", db).stdout
    assert "GROUP BY the key" in text and "q1, q2" in text and "Group and count." in text
    # Where the lesson came from: the candidate, its score, the verdict and the verifier.
    assert "from task q1, candidate 2: score 0.75, passed (exec)" in " ".join(text.split())

    hits = json.loads(
        invoke("search", "how many rows for each", "--db", db, "--json", "--namespace", "spider").stdout
    )
    assert [h["title"] for h in hits] == ["Count rows per group"] and hits[0]["score"] > 0
    assert "no matching concepts" in invoke("search", "zebra", "--db", db).output


def test_show_missing_and_bad_urls_are_one_line_errors(db: str, tmp_path: Path) -> None:
    r = invoke("show", "999", "--db", db)
    assert r.exit_code == 2 and "no concept with id or uid '999'" in r.output
    r = invoke("stats", "--db", "mysql://x@y/z")
    assert r.exit_code == 2 and "unsupported memory URL" in r.output and "Traceback" not in r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = invoke("import", str(bad), "--db", db)
    assert r.exit_code == 2 and "not a memory export" in r.output


def test_export_then_import_into_a_fresh_database(db: str, tmp_path: Path) -> None:
    out = tmp_path / "export.json"
    r = invoke("export", "--db", db, "--out", str(out))
    assert r.exit_code == 0 and "exported 2 concepts" in r.output
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    report = json.loads(invoke("import", str(out), "--db", fresh, "--json").stdout)
    assert report["inserted"] == 2
    assert json.loads(invoke("stats", "--db", fresh, "--json").stdout)["concepts"] == 2
    assert "skipped 2" in invoke("import", str(out), "--db", fresh).output
    invoke("export", "--db", db, "--out", str(out), "--namespace", "bird")
    assert len(json.loads(out.read_text())["concepts"]) == 1


def test_prune(db: str) -> None:
    with SQLMemoryStore(db) as store:
        (c,) = store.list(namespace="bird")
        store.record_uses([(c.id, 1.0)], task_id="t", run_id="r")
        store.record_outcome(task_id="t", run_id="r", passed=False)
    r = invoke("prune", "--db", db)
    assert r.exit_code == 2 and "--older-than and/or --never-helped" in r.output
    dry = json.loads(invoke("prune", "--db", db, "--never-helped", "1", "--dry-run", "--json").stdout)
    assert dry["removed"] == 1 and dry["dry_run"] and dry["concepts"][0]["title"] == "Most recent row"
    r = invoke("prune", "--db", db, "--never-helped", "1")
    assert "dropped 1 concepts" in r.output
    assert json.loads(invoke("stats", "--db", db, "--json").stdout)["concepts"] == 1
    assert "dropped 0" in invoke("prune", "--db", db, "--older-than", "30d").output


def test_reindex(db: str) -> None:
    r = invoke("reindex", "--db", db)
    assert r.exit_code == 0 and "reindexed 2 concepts" in r.output


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("7", timedelta(days=7)),
    ],
)
def test_parse_age(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


def test_parse_age_rejects_garbage() -> None:
    with pytest.raises(typer.BadParameter):
        parse_age("soon")
