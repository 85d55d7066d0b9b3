"""Hostile predictions through ``agentloop eval text2sql`` on a copy of the shipped Spider data.

``test_sql_tool.py`` checks each defence of the sandbox on a purpose-built database; this runs the
real command, in a subprocess, on the official layout, and checks the files afterwards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from agentloop.suites.text2sql import default_spider_dir

QUERY_LIMIT_S = 1.0
SIX_WAY = "city a, city b, city c, city d, city e, city f"  # world_1.city has 4,079 rows

# (database, hostile SQL, words the error must contain); {tmp} is a scratch folder outside the copy.
# As in the official evaluator, only the first statement of a text runs (the rest never reaches
# SQLite), so a write after a harmless SELECT scores as that SELECT: wrong, with no error.
HOSTILE: list[tuple[str, str, str]] = [
    ("concert_singer", "DROP TABLE singer", "not allowed"),
    ("concert_singer", "DELETE FROM singer", "not allowed"),
    ("concert_singer", "UPDATE singer SET age = 0", "not allowed"),
    ("concert_singer", "INSERT INTO singer (singer_id, name) VALUES (99, 'x')", "not allowed"),
    ("concert_singer", "WITH s AS (SELECT 1) DELETE FROM singer", "not allowed"),
    ("concert_singer", "/* looks harmless */ DROP TABLE concert", "not allowed"),
    ("concert_singer", "ATTACH DATABASE '{tmp}/evil.sqlite' AS evil", "not allowed"),
    ("concert_singer", "PRAGMA writable_schema=1", "not allowed"),
    ("concert_singer", "PRAGMA writable_schema = ON; UPDATE sqlite_master SET sql = 'x'", "not allowed"),
    ("concert_singer", "DELETE FROM singer; SELECT count(*) FROM singer", "not allowed"),
    ("concert_singer", "VACUUM", "not allowed"),
    ("concert_singer", "VACUUM INTO '{tmp}/stolen.sqlite'", "not allowed"),
    ("concert_singer", "SELECT load_extension('{tmp}/evil')", "load_extension"),
    ("concert_singer", "SELECT 1; DROP TABLE singer", ""),
    ("concert_singer", "SELECT name FROM singer WHERE 0; DELETE FROM singer;", ""),
    ("concert_singer", "SELECT 'x'; ATTACH DATABASE '{tmp}/evil.sqlite' AS evil", ""),
    (
        "concert_singer",
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r",
        "timed out",
    ),
    ("world_1", f"SELECT count(*) FROM {SIX_WAY}", "timed out"),
    ("world_1", f"SELECT max(a.name || f.name) FROM {SIX_WAY}", "timed out"),
]
# Streams rows until the row cap (then it scores 0 with no error) or the time limit, whichever comes first.
ROW_FLOOD = ("world_1", f"SELECT * FROM {SIX_WAY}")


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_hostile_predictions_score_zero_and_change_nothing(tmp_path: Path) -> None:
    data = tmp_path / "spider"
    shutil.copytree(default_spider_dir(), data)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    records = json.loads((data / "dev.json").read_text(encoding="utf-8"))

    # Every line is the gold query except the hostile ones, each on a question of its database, so
    # the gold lines also show that the databases still answer correctly afterwards.
    lines = [r["query"] for r in records]
    free = {
        db: [i for i, r in enumerate(records) if r["db_id"] == db] for db in ("concert_singer", "world_1")
    }
    hostile: dict[int, str] = {}  # line index -> expected error text
    for db, sql, expected in HOSTILE:
        index = free[db].pop(0)
        lines[index] = sql.format(tmp=scratch)
        hostile[index] = expected
    flood_index = free[ROW_FLOOD[0]].pop(0)
    lines[flood_index] = ROW_FLOOD[1]
    predictions = tmp_path / "pred.sql"
    predictions.write_text("\n".join(lines) + "\n", encoding="utf-8")

    before = _digests(data)
    assert sum(name.endswith(".sqlite") for name in before) == 19
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "agentloop", "eval", "text2sql", "--data", str(data)]
        + ["--predictions", str(predictions), "--json", "--timeout", str(QUERY_LIMIT_S)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]

    assert _digests(data) == before  # same files, byte for byte: no journal, WAL or attached DB left
    assert list(scratch.iterdir()) == []
    wrong = {
        r["index"]: r
        for r in results
        if r["index"] in hostile and not (r["correct"] is False and hostile[r["index"]] in (r["error"] or ""))
    }
    assert wrong == {}, "\n".join(f"{lines[i]!r}: {r}" for i, r in wrong.items())
    assert results[flood_index]["correct"] is False
    others = [r for r in results if r["index"] not in hostile and r["index"] != flood_index]
    assert all(r["correct"] for r in others), [r for r in others if not r["correct"]]
    # The runaway queries overlap in the thread pool, and each stops at the 1 s limit.
    print(f"hostile eval: {wall:.1f} s")
    assert wall < 30, f"eval took {wall:.1f} s"
