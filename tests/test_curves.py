"""Curves from one run (against brute force over every k-subset), frontiers and compute-matched comparisons."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import random
import sqlite3
import statistics
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentloop.backends import FunctionBackend
from agentloop.cli import app
from agentloop.graphs import Candidate, Verdict, nodes
from agentloop.records import RunReport, open_store
from agentloop.records.curves import CandidateStat, CurveError, best_of_k, load_curve, majority_of_k
from agentloop.records.pareto import frontier
from agentloop.runs import RunSpec, run_suite_sync
from agentloop.types import ChatRequest

ROOT = Path(__file__).resolve().parents[1]
SUITE = f"{ROOT / 'examples' / 'arith_suite.py'}:ArithSuite"
GOLD = [
    json.loads(line) for line in (ROOT / "examples" / "arith" / "problems.jsonl").read_text().splitlines()
]


# --- brute force ---------------------------------------------------------------------------


def random_cands(rng: random.Random, n: int) -> list[CandidateStat]:
    # Few distinct scores and keys, so ties and split votes are common.
    return [
        CandidateStat(
            score=rng.choice([0.0, 0.5, 1.0]),
            passed=rng.random() < 0.5,
            verified=rng.random() < 0.85,
            value=rng.choice([0.0, 1.0, 0.25]),
            key=rng.choice(["a", "b", "c", None]),
        )
        for _ in range(n)
    ]


def graph_pick(subset: list[CandidateStat]) -> float:
    """The value of what ``nodes.best_of`` itself picks from the subset's candidates (0 if none)."""
    cands = [
        Candidate(0, i, "", "h", verdict=Verdict(c.score, passed=c.passed) if c.verified else None)
        for i, c in enumerate(subset)
    ]
    best = nodes.best_of(cands)
    return 0.0 if best is None else subset[best.index].value


def vote_pick(subset: list[CandidateStat]) -> float:
    keys = [c.key for c in subset if c.key is not None]
    if not keys:
        return subset[0].value
    counts = Counter(keys)
    top = max(counts.values())
    winner = next(k for k in keys if counts[k] == top)  # ties: the key seen first
    return next(c for c in subset if c.key == winner).value


@pytest.mark.parametrize("seed", range(40))
def test_best_of_k_matches_brute_force_over_every_subset(seed: int) -> None:
    rng = random.Random(seed)
    cands = random_cands(rng, rng.randint(1, 7))
    for k in range(1, len(cands) + 1):
        brute = statistics.fmean(graph_pick(list(s)) for s in itertools.combinations(cands, k))
        assert best_of_k(cands, k) == pytest.approx(brute)


@pytest.mark.parametrize("seed", range(40))
def test_majority_of_k_matches_brute_force_over_every_subset(seed: int) -> None:
    rng = random.Random(seed)
    cands = random_cands(rng, rng.randint(1, 7))
    for k in range(1, len(cands) + 1):
        brute = statistics.fmean(vote_pick(list(s)) for s in itertools.combinations(cands, k))
        value, exact = majority_of_k(cands, k)
        assert exact and value == pytest.approx(brute)


def test_majority_of_k_samples_when_subsets_are_many() -> None:
    rng = random.Random(7)
    cands = random_cands(rng, 18)  # C(18, 9) = 48620 subsets: sampled, seeded
    value, exact = majority_of_k(cands, 9, rng=random.Random(1))
    again, _ = majority_of_k(cands, 9, rng=random.Random(1))
    brute = statistics.fmean(vote_pick(list(s)) for s in itertools.combinations(cands, 9))
    assert not exact and value == again
    assert value == pytest.approx(brute, abs=0.05)


def test_best_of_k_ends() -> None:
    right, wrong = CandidateStat(1.0, True, value=1.0), CandidateStat(0.0, value=0.0)
    assert best_of_k([wrong, right, wrong], 1) == pytest.approx(1 / 3)
    assert best_of_k([wrong, right, wrong], 3) == 1.0
    # Equal verdicts: the earlier candidate is kept, whatever its value.
    tie = CandidateStat(1.0, True, value=0.0)
    assert best_of_k([tie, right], 2) == 0.0


# --- stored runs ---------------------------------------------------------------------------

# Per problem, the four candidates' answers: "g" is the gold, numbers are wrong answers.
SCRIPT = [["g", "g", 1, 1], [1, "g", 2, 2], [1, 2, 3, "g"], [1, 1, 1, 1], ["g", "g", "g", "g"]]


def model(request: ChatRequest) -> list[str]:
    prompt = request.messages[-1].content
    i = next(i for i, row in enumerate(GOLD[: len(SCRIPT)]) if row["question"] in prompt)
    answers = [GOLD[i]["answer"] if a == "g" else -int(a) for a in SCRIPT[i]]
    return [f"Answer: {a}" for a in answers[: request.n]]


def run(tmp: Path, name: str, graph: str, verifier: str = "exact", n: int = 4) -> Path:
    spec = RunSpec(suite=SUITE, graph=graph, limit=len(SCRIPT), n=n, verifier=verifier, backend="function")
    run_suite_sync(spec, backend=FunctionBackend(model), run_dir=tmp / name)
    return tmp / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("curves")
    return {
        "bon": run(tmp, "bon", "best_of_n"),
        "sc": run(tmp, "sc", "self_consistency"),
        "greedy": run(tmp, "greedy", "greedy"),
    }


def test_every_candidate_keeps_its_official_score(runs: dict[str, Path]) -> None:
    with open_store(runs["bon"]) as store:
        table = store.candidate_table()
    officials = [[c["official"]["correct"] for c in table[f"arith-{i}"]] for i in range(len(SCRIPT))]
    assert officials == [[a == "g" for a in row] for row in SCRIPT]
    with open_store(runs["sc"]) as store:
        keys = [c["official"]["key"] for c in store.candidate_table()["arith-1"]]
    assert keys[0] == "-1" and keys[2] == keys[3] == "-2"


def test_a_best_of_n_curve_ends_at_the_run_and_starts_at_one_sample(runs: dict[str, Path]) -> None:
    report = RunReport.load(runs["bon"])
    curve = load_curve(report)
    assert curve.ks == [1, 2, 3, 4] and curve.costs == [1.0, 2.0, 3.0, 4.0]
    assert curve.means[-1] == pytest.approx(report.metrics()["accuracy"]) == pytest.approx(0.8)
    assert curve.means[0] == pytest.approx(statistics.fmean(a == "g" for row in SCRIPT for a in row))
    # Oracle verifier: best of 2 is right when either candidate is; task 0 has 2 of 4 right.
    assert curve.values[0][1] == pytest.approx(1 - 1 / 6)
    assert all(lo <= m <= hi for lo, m, hi in zip(curve.ci_low, curve.means, curve.ci_high, strict=True))


def test_a_vote_curve_ends_at_the_run(runs: dict[str, Path]) -> None:
    report = RunReport.load(runs["sc"])
    curve = load_curve(report)
    assert curve.means[-1] == pytest.approx(report.metrics()["accuracy"])
    assert curve.values[1][-1] == 0.0  # 2 wins the vote over 1 and the gold


def test_a_best_of_n_runs_votes_draw_the_self_consistency_curve(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Both graphs sample alike, so best-of-n's candidates by vote are the self-consistency run."""
    bon = copy_run(runs["bon"], tmp_path / "bon", "SELECT 1")
    with pytest.raises(CurveError, match="stored no vote keys"):
        load_curve(RunReport.load(bon), vote=True)
    first = CliRunner().invoke(app, ["report", str(bon), "--frontier", "--vote", "--json"])
    assert first.exit_code == 0, first.output
    assert "adding vote keys to) 20 candidates of bon" in first.stderr
    with open_store(bon) as store:
        table = store.candidate_table()
    assert [c["official"]["key"] for c in table["arith-1"]] == ["-1", str(GOLD[1]["answer"]), "-2", "-2"]
    # The scores stay as they were; only the keys are new.
    assert [c["official"]["correct"] for c in table["arith-1"]] == [False, True, False, False]
    voted = load_curve(RunReport.load(bon), vote=True)
    sc = load_curve(RunReport.load(runs["sc"]))
    assert voted.label == "bon (vote)" and voted.graph.startswith("self_consistency")
    assert voted.values == sc.values and voted.means == sc.means
    (suite,) = json.loads(first.stdout)["frontier"]["suites"]
    assert [c["run"] for c in suite["curves"]] == ["bon", "bon (vote)"]
    # Keys are added once: the second report scores nothing.
    result = CliRunner().invoke(app, ["report", str(bon), "--matched", "--vote", "--json"])
    assert result.exit_code == 0, result.output
    assert "vote keys" not in result.stderr
    (row,) = json.loads(result.stdout)["matched"]
    assert row["other"] == "bon (vote)" and row["base_k"] == 4.0
    assert row["difference"] == pytest.approx(
        round(sc.means[-1] - load_curve(RunReport.load(bon)).means[-1], 4)
    )


def test_vote_errors_are_one_line(runs: dict[str, Path]) -> None:
    code, out = cli(str(runs["greedy"]), "--frontier", "--vote")
    assert code != 0 and "give a best_of_n run" in out and "Traceback" not in out
    code, out = cli(str(runs["bon"]), "--vote")
    assert code != 0 and "--vote adds vote curves" in out
    with pytest.raises(CurveError, match="a vote curve comes from a best_of_n run"):
        load_curve(RunReport.load(runs["greedy"]), vote=True)


def test_the_frontier_keeps_only_configurations_nothing_cheaper_beats(runs: dict[str, Path]) -> None:
    curves = [load_curve(RunReport.load(runs[n])) for n in ("bon", "greedy")]
    assert not curves[1].sampled and curves[1].costs == [1.0]
    points = frontier(curves)
    on = [p.config for p in points if p.on_frontier]
    values = [p.value for p in points if p.on_frontier]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert on[-1] == "bon k=4"


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["report", *args])
    return result.exit_code, result.output


def test_report_frontier_tables_and_json(runs: dict[str, Path], tmp_path: Path) -> None:
    code, out = cli(
        str(runs["bon"]), "--compare", str(runs["sc"]), "--compare", str(runs["greedy"]), "--frontier"
    )
    assert code == 0, out
    assert "best configuration at each cost level" in out and "bon k=4" in out
    code, out = cli(
        str(runs["bon"]), "--compare", str(runs["greedy"]), "--frontier", "--cost", "tokens", "--json"
    )
    assert code == 0, out
    data = json.loads(out)["frontier"]
    (suite,) = data["suites"]
    assert data["cost"] == "tokens" and [c["run"] for c in suite["curves"]] == ["bon", "greedy"]
    assert len(suite["curves"][0]["points"]) == 4 and suite["frontier"]
    # Several runs as arguments (`report A B C --frontier`) read as A --compare B --compare C.
    code, positional = cli(str(runs["bon"]), str(runs["greedy"]), "--frontier", "--cost", "tokens", "--json")
    assert code == 0, positional
    assert json.loads(positional) == json.loads(out)


def test_report_frontier_plot(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    code, out = cli(
        str(runs["bon"]), "--compare", str(runs["greedy"]), "--frontier", "--plot", str(tmp_path / "f.png")
    )
    assert code == 0, out
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_a_frontier_over_two_suites_is_one_table_and_panel_each(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    other = copy_run(
        runs["greedy"],
        tmp_path / "other",
        "UPDATE runs SET suite = 'other', config = json_set(config, '$.suite_name', 'other')",
    )
    code, out = cli(str(runs["bon"]), "--compare", str(other), "--frontier", "--json")
    assert code == 0, out
    suites = {s["suite"]: s for s in json.loads(out)["frontier"]["suites"]}
    assert set(suites) == {"arith", "other"}
    assert [c["run"] for c in suites["other"]["curves"]] == ["other"]
    code, out = cli(str(runs["bon"]), "--compare", str(other), "--frontier")
    assert "arith: accuracy vs candidates per task" in out and "other: accuracy vs candidates per task" in out
    if importlib.util.find_spec("matplotlib") is not None:
        from PIL import Image

        code, out = cli(
            str(runs["bon"]), "--compare", str(other), "--frontier", "--plot", str(tmp_path / "two.png")
        )
        assert code == 0, out
        one = cli(str(runs["bon"]), "--frontier", "--plot", str(tmp_path / "one.png"))[0]
        assert one == 0
        # A panel per suite: twice as wide as one suite's chart.
        (w2, h2), (w1, h1) = Image.open(tmp_path / "two.png").size, Image.open(tmp_path / "one.png").size
        assert h2 == h1 and w2 == 2 * w1


def test_matched_compares_at_the_other_runs_cost(runs: dict[str, Path]) -> None:
    code, out = cli(str(runs["bon"]), "--compare", str(runs["greedy"]), "--matched", "--json")
    assert code == 0, out
    (row,) = json.loads(out)["matched"]
    # greedy spent one candidate a task: best-of-n's curve at k=1 is the mean of the candidates.
    greedy = statistics.fmean(row_[0] == "g" for row_ in SCRIPT)
    at_one = statistics.fmean(a == "g" for row_ in SCRIPT for a in row_)
    assert row["matched"] and row["base_k"] == 1.0
    assert row["difference"] == pytest.approx(round(greedy - at_one, 4))
    lo, hi = row["ci"]
    assert lo <= row["difference"] <= hi
    code, out = cli(str(runs["bon"]), "--compare", str(runs["greedy"]), "--matched")
    assert code == 0 and "at equal compute" in out


def test_matched_interpolates_between_neighbouring_k(runs: dict[str, Path], tmp_path: Path) -> None:
    from agentloop.records.pareto import matched_difference

    base = RunReport.load(runs["bon"])
    curve = load_curve(base)
    # A best-of-3 run keeps the first 3 candidates: 0.6, against the expectation over 3-subsets, 0.7.
    three = RunReport.load(run(tmp_path, "bon3", "best_of_n", n=3))
    d = matched_difference(curve, base, load_curve(three), three)
    assert d.base_k == 3.0 and d.difference == pytest.approx(0.6 - 0.7)
    assert "cannot be told apart" in d.verdict
    # At 2.5 candidates a task, halfway between k=2 and k=3 of the base's curve.
    greedy = RunReport.load(runs["greedy"])
    spent = dataclasses.replace(load_curve(greedy), costs=[2.5])
    d = matched_difference(curve, base, spent, greedy)
    halfway = statistics.fmean((row[1] + row[2]) / 2 for row in curve.values)
    assert d.base_k == 2.5
    assert d.difference == pytest.approx(statistics.fmean(row[0] == "g" for row in SCRIPT) - halfway)
    assert "better" in d.verdict or "cannot be told apart" in d.verdict


def test_call_share_prices_a_batched_call_whole() -> None:
    from agentloop.records.curves import call_share

    # One call made all 8 candidates: any k needs that one call.
    assert [call_share(k, 8, 1) for k in (1, 4, 8)] == [1.0, 1.0, 1.0]
    # Two calls of 4: k <= 4 needs one of them, k > 4 both.
    assert [call_share(k, 8, 2) for k in (1, 4, 5, 8)] == [0.5, 0.5, 1.0, 1.0]
    # A call per candidate, or several (a WebShop episode's steps): k/N.
    assert call_share(3, 8, 8) == call_share(3, 8, 56) == pytest.approx(3 / 8)
    # A task that stored fewer candidates spent at k beyond them what it spent.
    assert call_share(6, 4, 4) == 1.0


def test_cost_at_k_scales_prompts_by_calls_and_completions_by_candidates(runs: dict[str, Path]) -> None:
    from agentloop.records.curves import cost_at_k

    report = RunReport.load(runs["bon"])
    tasks = report.tasks
    # The scripted backend answers all n of a request in one call, as llama.cpp and vLLM do.
    assert all(t.llm_calls == 1 and t.candidates == 4 for t in tasks)
    calls = load_curve(report, cost="calls")
    assert calls.costs == [1.0, 1.0, 1.0, 1.0]
    tokens = load_curve(report, cost="tokens")
    assert tokens.costs[0] == pytest.approx(
        statistics.fmean(t.prompt_tokens + t.completion_tokens / 4 for t in tasks)
    )
    assert tokens.costs[-1] == pytest.approx(statistics.fmean(t.total_tokens for t in tasks))
    completion = load_curve(report, cost="completion")
    assert completion.costs[1] == pytest.approx(statistics.fmean(t.completion_tokens / 2 for t in tasks))
    # Sampled one call per step (an episode of 7 steps): everything scales k/N.
    episodes = dataclasses.replace(
        tasks[0], llm_calls=28, prompt_tokens=2800, completion_tokens=400, cost_usd=0.32
    )
    assert cost_at_k(episodes, "calls", 1, 4) == 7.0
    assert cost_at_k(episodes, "tokens", 1, 4) == pytest.approx(800.0)
    assert cost_at_k(episodes, "usd", 2, 4) == pytest.approx(0.16)
    batched = dataclasses.replace(
        tasks[0], llm_calls=1, prompt_tokens=600, completion_tokens=400, cost_usd=0.5
    )
    # One call of 4 at k=1: the whole prompt and a quarter of the completions; USD as the tokens.
    assert cost_at_k(batched, "tokens", 1, 4) == pytest.approx(700.0)
    assert cost_at_k(batched, "usd", 1, 4) == pytest.approx(0.5 * 700 / 1000)


def test_matched_takes_the_largest_k_a_level_cost_buys(runs: dict[str, Path]) -> None:
    # In calls, a batched best-of-4 costs one call at every k, as greedy does: at equal
    # compute, greedy meets best-of-4 itself.
    code, out = cli(
        str(runs["bon"]), "--compare", str(runs["greedy"]), "--matched", "--cost", "calls", "--json"
    )
    assert code == 0, out
    (row,) = json.loads(out)["matched"]
    assert row["base_k"] == 4.0 and row["note"] in (None, "")


def test_matched_falls_back_when_the_base_has_no_curve(runs: dict[str, Path]) -> None:
    code, out = cli(str(runs["greedy"]), "--compare", str(runs["bon"]), "--matched", "--json")
    assert code == 0, out
    (row,) = json.loads(out)["matched"]
    assert not row["matched"] and "has no curve" in row["note"] and row["paired_tasks"] == len(SCRIPT)


def copy_run(src: Path, dst: Path, sql: str) -> Path:
    dst.mkdir()
    (dst / "run.sqlite").write_bytes((src / "run.sqlite").read_bytes())
    with sqlite3.connect(dst / "run.sqlite") as db:
        db.execute(sql)
    return dst


def test_one_line_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    code, out = cli(str(runs["bon"]), "--frontier", "--cost", "joules")
    assert code != 0 and "unknown --cost 'joules'" in out and "Traceback" not in out
    # The scripted backend prices nothing: USD is refused, not drawn as free.
    code, out = cli(str(runs["bon"]), "--frontier", "--cost", "usd")
    assert code != 0 and "no USD price" in out and "Traceback" not in out
    code, out = cli(str(runs["bon"]), "--compare", str(runs["greedy"]), "--matched", "--plot", "x.png")
    assert code != 0 and "add --frontier" in out and not Path("x.png").exists()
    empty = copy_run(runs["bon"], tmp_path / "empty", "DELETE FROM candidates")
    code, out = cli(str(empty), "--frontier")
    assert code != 0 and "stored no candidates" in out
    old = copy_run(runs["bon"], tmp_path / "old", "UPDATE candidates SET official = NULL")
    code, out = cli(str(old), "--frontier")
    assert code != 0 and "revision 0004" in out
    # --matched needs only the other run's own point: an old sampling run compares as it ran.
    code, out = cli(str(runs["bon"]), "--compare", str(old), "--matched", "--json")
    assert code == 0, out
    (row,) = json.loads(out)["matched"]
    assert row["matched"] and row["base_k"] == 4.0 and row["difference"] == 0.0
    partial = copy_run(
        runs["bon"], tmp_path / "partial", "UPDATE candidates SET official = NULL WHERE id = 1"
    )
    code, out = cli(str(partial), "--frontier")
    assert code != 0 and "failed to score 1 candidate(s)" in out
    other = copy_run(
        runs["greedy"],
        tmp_path / "other",
        "UPDATE runs SET suite = 'other', config = json_set(config, '$.suite_name', 'other')",
    )
    code, out = cli(str(runs["bon"]), "--compare", str(other), "--matched")
    assert code != 0 and "other suites" in out
    with pytest.raises(CurveError):
        load_curve(RunReport.load(runs["bon"]), cost="joules")
    code, out = cli(str(runs["bon"]), "--matched")
    assert code != 0 and "give one with --compare" in out
    code, out = cli(str(runs["bon"]), "--cost", "tokens")
    assert code != 0 and "--cost sets the compute axis" in out


def test_the_worked_example_in_docs_results_holds(tmp_path: Path) -> None:
    """examples/frontier_demo.py: what docs/results.md says of its frontier and matched comparisons."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("frontier_demo", ROOT / "examples" / "frontier_demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.main(tmp_path)
    runs = [str(tmp_path / name) for name in demo.RUNS]
    code, out = cli(
        runs[1], *(a for r in runs[2:] + runs[:1] for a in ("--compare", r)), "--frontier", "--json"
    )
    assert code == 0, out
    (suite,) = json.loads(out)["frontier"]["suites"]
    front = [p["config"] for p in suite["frontier"]]
    assert front[:2] == ["bon8 k=1", "bon8 k=2"] and "adaptive8" in front
    docs = (ROOT / "docs" / "results.md").read_text()
    code, out = cli(runs[1], "--compare", runs[4], "--compare", runs[0], "--matched", "--json")
    adaptive, greedy = json.loads(out)["matched"]
    assert adaptive["verdict"].startswith("adaptive8 is better than bon8") and adaptive["verdict"] in docs
    assert "cannot be told apart" in greedy["verdict"]


def test_a_frontier_compares_runs_on_the_tasks_they_share(runs: dict[str, Path], tmp_path: Path) -> None:
    # The greedy run lost task 3 (all of whose candidates are wrong), so best-of-n is cut to the
    # other four tasks too, and its curve is their mean, not the five-task one.
    short = copy_run(runs["greedy"], tmp_path / "short", "DELETE FROM task_results WHERE task_id = 'arith-3'")
    code, out = cli(str(runs["bon"]), str(short), "--frontier", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert "bon 5 -> 4" in data["tasks_note"]
    bon = data["frontier"]["suites"][0]["curves"][0]
    assert bon["run"] == "bon" and bon["points"][-1]["value"] == pytest.approx(4 / 4)
    code, out = cli(str(runs["bon"]), str(runs["greedy"]), "--frontier", "--json")
    assert code == 0 and "tasks_note" not in json.loads(out)
