"""Rescoring runs stored before candidates kept their official scores (store revision 0004), offline.

A run stored today and the same run with its candidates' official scores taken away (as a
pre-0004 store holds them) give the same frontier once the second is rescored; rescoring
twice does nothing the second time; a suite that cannot rescore, or is gone, is one line.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentloop.backends import FunctionBackend
from agentloop.cli import app
from agentloop.records import RunStore, open_store
from agentloop.runs import RunSpec, run_suite_sync
from agentloop.runs.rescore import RescoreError, rescore_run_sync
from agentloop.types import ChatRequest

ROOT = Path(__file__).resolve().parents[1]
ARITH = f"{ROOT / 'examples' / 'arith_suite.py'}:ArithSuite"
GOLD = [
    json.loads(line) for line in (ROOT / "examples" / "arith" / "problems.jsonl").read_text().splitlines()
]
OLD_RELEASE = ROOT / "tests" / "fixtures" / "release_0_1" / "text2sql_run"
# Per problem, the four candidates' answers: "g" is the gold, numbers are wrong answers.
SCRIPT = [["g", "g", 1, 1], [1, "g", 2, 2], [1, 2, 3, "g"], [1, 1, 1, 1], ["g", "x", "g", "g"]]


def model(request: ChatRequest) -> list[str]:
    prompt = request.messages[-1].content
    i = next(i for i, row in enumerate(GOLD[: len(SCRIPT)]) if row["question"] in prompt)
    out = []
    for a in SCRIPT[i][: request.n]:
        out.append("no idea" if a == "x" else f"Answer: {GOLD[i]['answer'] if a == 'g' else -int(a)}")
    return out


def run(tmp: Path, name: str, graph: str, suite: str = ARITH) -> Path:
    spec = RunSpec(suite=suite, graph=graph, limit=len(SCRIPT), n=4, verifier="exact", backend="function")
    run_suite_sync(spec, backend=FunctionBackend(model), run_dir=tmp / name)
    return tmp / name


def as_old(src: Path, dst: Path, sql: str = "UPDATE candidates SET official = NULL") -> Path:
    """``src`` as a store from before revision 0004 holds it: no candidate has an official score."""
    dst.mkdir(parents=True)
    (dst / "run.sqlite").write_bytes((src / "run.sqlite").read_bytes())
    with sqlite3.connect(dst / "run.sqlite") as db:
        db.execute(sql)
    return dst


def officials(run_dir: Path) -> dict[str, list[Any]]:
    with open_store(run_dir) as store:
        return {t: [c["official"] for c in cands] for t, cands in store.candidate_table().items()}


def report(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["report", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("rescore")
    return {"bon": run(tmp, "bon", "best_of_n"), "sc": run(tmp, "sc", "self_consistency")}


@pytest.mark.parametrize("graph", ["bon", "sc"])
def test_a_rescored_old_run_draws_the_frontier_it_would_have_stored(
    runs: dict[str, Path], graph: str, tmp_path: Path
) -> None:
    old = as_old(runs[graph], tmp_path / graph)  # the same name: the same labels in the JSON
    code, out, err = report(str(old), "--frontier")
    assert code != 0 and "revision 0004" in err and "--rescore" in err
    code, want, _ = report(str(runs[graph]), "--frontier", "--json")
    assert code == 0
    code, got, err = report(str(old), "--frontier", "--json", "--rescore")
    assert code == 0, err
    assert json.loads(got) == json.loads(want)
    assert f"rescoring 20 candidates of {graph} offline (arith)" in err and "saved in its store" in err
    # Each candidate's score (and, voting, its key) as the runner stored it; the unparsed one too.
    assert officials(old) == officials(runs[graph])
    # --matched reads the rescored curve as well, with nothing left to rescore.
    code, out, err = report(str(old), "--compare", str(runs["bon"]), "--matched", "--json", "--rescore")
    assert code == 0 and "rescoring" not in err and json.loads(out)["matched"][0]["matched"]


def test_rescoring_is_done_once(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = as_old(runs["bon"], tmp_path / "bon")
    first = rescore_run_sync(old)
    assert (first.candidates, first.failed, first.saved, first.suite) == (20, 0, True, "arith")
    stored = officials(old)

    def no_suite(name: str) -> None:
        raise AssertionError("a rescored run loads no suite")

    monkeypatch.setattr("agentloop.runs.rescore.get_suite", no_suite)
    again = rescore_run_sync(old)
    assert (again.candidates, again.failed) == (0, 0) and officials(old) == stored
    code, out, err = report(str(old), "--frontier", "--rescore")
    assert code == 0 and "rescoring" not in err and "bon k=4" in out
    # A run stored today has nothing to rescore either.
    assert rescore_run_sync(runs["sc"]).candidates == 0


def test_only_candidates_without_a_score_are_rescored(runs: dict[str, Path], tmp_path: Path) -> None:
    """A pre-0004 run resumed by today's agentloop holds both: the stored scores stay as they are."""
    half = as_old(runs["bon"], tmp_path / "bon", "UPDATE candidates SET official = NULL WHERE id % 2 = 0")
    with sqlite3.connect(half / "run.sqlite") as db:
        db.execute(
            """UPDATE candidates SET official = '{"correct": true, "reward": 0.5, "key": "mine"}' WHERE id = 1"""
        )
    done = rescore_run_sync(half)
    assert done.candidates == 10
    got, want = officials(half), officials(runs["bon"])
    assert got["arith-0"][0] == {"correct": True, "reward": 0.5, "key": "mine"}
    got["arith-0"][0] = want["arith-0"][0]
    assert got == want


def test_an_unwritable_store_is_rescored_for_this_report_only(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    old = as_old(runs["bon"], tmp_path / "bon")

    def read_only(self: RunStore, scores: object) -> int:
        raise OperationalError(
            "UPDATE candidates", {}, sqlite3.OperationalError("attempt to write a readonly database")
        )

    monkeypatch.setattr(RunStore, "fill_official", read_only)
    code, want, _ = report(str(runs["bon"]), "--frontier", "--json")
    code, got, err = report(str(old), "--frontier", "--json", "--rescore")
    assert code == 0, err
    assert json.loads(got) == json.loads(want)
    assert "could not be written (attempt to write a readonly database)" in err and "this report only" in err
    assert all(o is None for cands in officials(old).values() for o in cands)


def test_a_reader_holding_the_store_open_does_not_stop_rescoring(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    old = as_old(runs["bon"], tmp_path / "bon")
    viewer = sqlite3.connect(old / "run.sqlite")
    try:
        viewer.execute("BEGIN")
        assert viewer.execute("SELECT count(*) FROM candidates WHERE official IS NULL").fetchone() == (20,)
        assert rescore_run_sync(old).saved
        # The viewer's snapshot is its own until it reads again.
        assert viewer.execute("SELECT count(*) FROM candidates WHERE official IS NULL").fetchone() == (20,)
        viewer.execute("COMMIT")
        assert viewer.execute("SELECT count(*) FROM candidates WHERE official IS NULL").fetchone() == (0,)
    finally:
        viewer.close()


def test_the_first_releases_text2sql_run_is_rescored(tmp_path: Path) -> None:
    old = tmp_path / "text2sql_run"
    shutil.copytree(OLD_RELEASE, old)
    code, out, err = report(str(old), "--frontier", "--json", "--rescore")
    assert code == 0, err
    assert "rescoring 6 candidates of text2sql_run offline (text2sql)" in err
    (suite,) = json.loads(out)["frontier"]["suites"]
    assert [p["value"] for p in suite["curves"][0]["points"]] == [1.0, 1.0]  # every candidate was the gold
    assert all(
        o == {"correct": True, "reward": None, "key": None} for c in officials(old).values() for o in c
    )


def test_a_suite_that_is_gone_is_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    gone = tmp_path / "gone" / "arith_suite.py"
    old = as_old(runs["bon"], tmp_path / "bon")
    with sqlite3.connect(old / "run.sqlite") as db:
        db.execute("UPDATE runs SET suite = ?", (f"{gone}:ArithSuite",))
    code, out, err = report(str(old), "--frontier", "--rescore")
    assert code != 0 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert f"its suite '{gone}:ArithSuite' does not load" in line and "put the suite back" in line
    # Back where the run found it, it rescores.
    gone.parent.mkdir()
    shutil.copy(ROOT / "examples" / "arith_suite.py", gone)
    (gone.parent / "arith").mkdir()
    shutil.copy(ROOT / "examples" / "arith" / "problems.jsonl", gone.parent / "arith" / "problems.jsonl")
    code, out, err = report(str(old), "--frontier", "--rescore")
    assert code == 0, err


EPISODES = """
from agentloop.graphs import Rollout, RolloutTask, Verdict
from agentloop.suites import Score, Suite, SuiteItem
from agentloop.types import Message


class Say(RolloutTask):
    def __init__(self, i):
        self.id = f"say-{i}"

    def build_messages(self, lessons=()):
        return [Message("user", "say something")]

    async def rollout(self, step, messages):
        text = await step(messages)
        return Rollout(text=text or "", answer={"said": text})

    async def verify(self, candidate):
        return Verdict(1.0, passed=True)


class Episodes(Suite):
    name = "episodes"

    def items(self, spec, backend=None):
        return [SuiteItem(Say(i), i, "say something") for i in range(2)]

    async def score(self, item, result):
        return Score(correct=result.answer == {"said": "hello"})
"""


def test_a_suite_that_cannot_rescore_offline_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "episodes.py").write_text(EPISODES)
    spec = RunSpec(suite=f"{tmp_path / 'episodes.py'}:Episodes", graph="best_of_n", n=2, backend="function")
    run_suite_sync(spec, backend=FunctionBackend(lambda r: "hello"), run_dir=tmp_path / "ep")
    old = as_old(tmp_path / "ep", tmp_path / "old" / "ep")
    code, out, err = report(str(old), "--frontier", "--rescore")
    assert code != 0 and "Traceback" not in err
    assert "cannot rescore run ep offline: suite 'episodes' keeps whole episodes as candidates" in err
    with pytest.raises(RescoreError, match="rerun it to draw its curve"):
        rescore_run_sync(old)


def test_rescore_goes_with_frontier_or_matched(runs: dict[str, Path]) -> None:
    code, out, err = report(str(runs["bon"]), "--rescore")
    assert code != 0 and "--rescore scores stored candidates for --frontier and --matched" in err


def test_a_webshop_run_is_rescored_by_replaying_its_episodes(tmp_path: Path) -> None:
    """A stored episode keeps its actions: replayed in a fresh environment, they give its reward again."""
    from agentloop.webshop import BUY_NOW, WebShopEnv, load_catalog, run_expert

    catalog = load_catalog()
    goals = catalog.goals[:2]
    plans: dict[str, list[list[str]]] = {}
    for g in goals:
        env = WebShopEnv(catalog)
        env.reset(g)
        env.step(f"search[{g.name}]")
        other = next(a for a in env.clickables() if a in catalog.products and a != g.asin)
        expert = [t.action for t in run_expert(WebShopEnv(catalog), g).turns]
        near_miss = ["think[a cheaper one]", f"search[{g.name}]", f"click[{other}]", f"click[{BUY_NOW}]"]
        plans[g.instruction_text] = [expert, near_miss]
    started: dict[str, int] = {}

    def fn(request: ChatRequest) -> str:
        task = request.messages[1].content.split("Customer instruction: ", 1)[1]
        history = (
            request.messages[-1].content.split("Your actions so far:\n", 1)[1].split("\n\nCurrent page:")[0]
        )
        done = 0 if history == "(none yet)" else len(history.splitlines())
        instruction = task.split("\n\n", 1)[0].strip()
        if done == 0:  # each goal's episodes alternate between the two plans
            started[instruction] = started.get(instruction, -1) + 1
            which = started[instruction] % 2
        else:
            which = int("think[" in history.splitlines()[0])
        plan = plans[instruction][which]
        return f"Thought: go.\nAction: {plan[done] if done < len(plan) else f'click[{BUY_NOW}]'}"

    spec = RunSpec(suite="webshop", graph="best_of_n", n=2, limit=2, backend="function", max_tokens=64)
    run_suite_sync(spec, backend=FunctionBackend(fn), run_dir=tmp_path / "shop")
    stored = officials(tmp_path / "shop")
    rewards = sorted(o["reward"] for cands in stored.values() for o in cands)
    assert rewards[0] < 1.0 and rewards[-1] == 1.0  # both kinds of episode were played
    # The reward the episode stored is not read: the replay pays it again.
    sql = "UPDATE candidates SET official = NULL, answer = json_set(answer, '$.reward', 0.123)"
    old = as_old(tmp_path / "shop", tmp_path / "old" / "shop", sql)
    done = rescore_run_sync(old)
    assert (done.candidates, done.failed, done.suite) == (4, 0, "webshop")
    assert officials(old) == stored


def test_a_humaneval_run_is_rescored_by_its_hidden_tests(tmp_path: Path) -> None:
    from agentloop.suites.humaneval.data import load_problems

    problems = load_problems()[:2]
    wrong = "```python\ndef truncate_number(number):\n    return 0.5\n```"

    def fn(request: ChatRequest) -> list[str]:
        p = next(p for p in problems if f"def {p.entry_point}(" in request.messages[-1].content)
        right = f"```python\n{p.prompt + p.canonical_solution}```"
        return [right, wrong, "I cannot do this one."][: request.n]

    spec = RunSpec(suite="humaneval", graph="self_consistency", n=3, limit=2, backend="function")
    run_suite_sync(spec, backend=FunctionBackend(fn), run_dir=tmp_path / "he")
    stored = officials(tmp_path / "he")
    assert [o["correct"] for o in stored["HumanEval/0"]] == [True, False, False]
    old = as_old(tmp_path / "he", tmp_path / "old" / "he")
    done = rescore_run_sync(old)
    assert (done.candidates, done.failed, done.suite) == (6, 0, "humaneval")
    assert officials(old) == stored
