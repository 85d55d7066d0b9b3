"""Load Text2SQL examples: Spider's official layout, or a plain JSONL file for BIRD or custom databases.

Official layout (a directory, or one questions file inside it)::

    DIR/dev.json            [{"db_id": ..., "question": ..., "query": ...}, ...]
    DIR/tables.json         schemas (not needed for execution accuracy, so not read)
    DIR/database/<db_id>/<db_id>.sqlite

JSONL, one object per line: ``question``, ``db_path`` (relative to the file), optional
``gold_sql`` and ``id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from agentloop.errors import DatasetError
from agentloop.suites.text2sql.hardness import Difficulty, spider_difficulty

__all__ = [
    "DatasetError",
    "Text2SQLExample",
    "default_spider_dir",
    "load_jsonl_examples",
    "load_spider",
    "load_text2sql",
]


@dataclass(frozen=True, slots=True)
class Text2SQLExample:
    index: int  # position in the file; predictions are matched to examples by it
    id: str
    question: str
    db_id: str
    db_path: Path
    gold_sql: str | None
    difficulty: Difficulty | None  # Spider hardness of gold_sql; None without gold or if it won't parse


def default_spider_dir() -> Path:
    """The Spider dev subset shipped in the package (645 questions, 19 databases)."""
    root = resources.files("agentloop") / "data" / "spider"
    if not isinstance(root, Path):  # e.g. installed inside a zip: SQLite needs real files
        raise DatasetError(
            "the packaged Spider data is not on the file system (agentloop is installed as a zip); "
            "pass a data directory explicitly (--data DIR)"
        )
    return root


def load_text2sql(data: str | Path | None = None) -> list[Text2SQLExample]:
    """Load examples from a Spider-layout directory, a Spider-style ``.json`` file or a ``.jsonl`` file.

    ``None`` loads the packaged Spider dev subset.
    """
    if data is None:
        return load_spider()
    path = Path(data)
    if path.is_dir():
        return load_spider(path)
    if not path.exists():
        raise DatasetError(
            f"dataset not found: {path} (give a Spider directory with dev.json and database/, "
            "a Spider-style .json file, or a .jsonl file)"
        )
    if path.suffix == ".jsonl":
        return load_jsonl_examples(path)
    return load_spider(path.parent, questions=path.name)


def load_spider(data_dir: str | Path | None = None, *, questions: str = "dev.json") -> list[Text2SQLExample]:
    """Load a questions file in the official Spider layout; databases come from ``data_dir/database``."""
    root = default_spider_dir() if data_dir is None else Path(data_dir)
    qpath = root / questions
    if not qpath.is_file():
        raise DatasetError(
            f"Spider questions file not found: {qpath}; the official layout needs {questions} next to "
            "a database/ folder (or pass a .json/.jsonl file directly)"
        )
    db_root = root / "database"
    if not db_root.is_dir():
        raise DatasetError(
            f"Spider database folder not found: {db_root}; unpack the release so that "
            f"database/<db_id>/<db_id>.sqlite sits next to {qpath.name}"
        )
    records = _read_json_list(qpath)
    examples: list[Text2SQLExample] = []
    missing_dbs: set[str] = set()
    for index, record in enumerate(records):
        db_id = _field(record, "db_id", qpath, index)
        question = _field(record, "question", qpath, index)
        gold = record.get("query", record.get("SQL"))  # "SQL" is BIRD's name for the gold query
        db_path = db_root / db_id / f"{db_id}.sqlite"
        if not db_path.is_file():
            missing_dbs.add(db_id)
        examples.append(
            _example(index, str(record.get("id", f"{qpath.stem}-{index}")), question, db_id, db_path, gold)
        )
    if missing_dbs:
        names = ", ".join(sorted(missing_dbs))
        raise DatasetError(
            f"{len(missing_dbs)} database(s) used by {qpath.name} are missing under {db_root}: {names}; "
            "each needs database/<db_id>/<db_id>.sqlite (or drop their questions from the file)"
        )
    return examples


def load_jsonl_examples(path: str | Path) -> list[Text2SQLExample]:
    """Load ``{"question", "db_path", "gold_sql"?, "id"?}`` lines; ``db_path`` is relative to the file."""
    path = Path(path)
    examples: list[Text2SQLExample] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object per line")
            index = len(examples)
            question = _field(record, "question", path, index, lineno)
            db_path = Path(_field(record, "db_path", path, index, lineno))
            if not db_path.is_absolute():
                db_path = path.parent / db_path
            if not db_path.is_file():
                raise DatasetError(
                    f"{path}:{lineno}: database file not found: {db_path} (db_path is relative to the JSONL file)"
                )
            gold = record.get("gold_sql")
            db_id = str(record.get("db_id", db_path.stem))
            examples.append(_example(index, str(record.get("id", index)), question, db_id, db_path, gold))
    return examples


def _example(index: int, id_: str, question: str, db_id: str, db_path: Path, gold: object) -> Text2SQLExample:
    gold_sql = str(gold) if gold is not None else None
    difficulty = spider_difficulty(gold_sql) if gold_sql else None
    return Text2SQLExample(index, id_, question, db_id, db_path, gold_sql, difficulty)


def _read_json_list(path: Path) -> list[dict[str, object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path}: expected a JSON list of objects, as in Spider's dev.json")
    return data


def _field(record: dict[str, object], key: str, path: Path, index: int, lineno: int | None = None) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        where = f"{path}:{lineno}" if lineno is not None else f"{path} (example {index})"
        raise DatasetError(f"{where}: missing or empty field '{key}'")
    return value
