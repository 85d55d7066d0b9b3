"""A tiny worked example of ``report --frontier`` and ``--compare --matched`` (docs/results.md).

A scripted model answers examples/arith's 20 problems: each problem has its own chance
of a right sample, a refine prompt raises it, wrong answers land near the gold. Five runs
(greedy, best-of-8, self-consistency 8, IAD 2x4, adaptive cap 8) go into DIR; then::

    python examples/frontier_demo.py runs/demo
    agentloop report runs/demo/bon8 --compare runs/demo/sc8 --compare runs/demo/greedy \\
        --compare runs/demo/iad2x4 --compare runs/demo/adaptive8 --frontier
    agentloop report runs/demo/bon8 --compare runs/demo/adaptive8 --compare runs/demo/iad2x4 --matched
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections import Counter
from pathlib import Path

from agentloop.backends import FunctionBackend
from agentloop.runs import RunSpec, run_suite_sync
from agentloop.types import ChatRequest

HERE = Path(__file__).resolve().parent
SUITE = f"{HERE / 'arith_suite.py'}:ArithSuite"
PROBLEMS = [json.loads(line) for line in (HERE / "arith" / "problems.jsonl").read_text().splitlines()]
CHANCE = [0.9, 0.6, 0.3, 0.1]  # a right sample's chance, by problem (cycled): easy to hard
RUNS = {
    "greedy": {"graph": "greedy"},
    "bon8": {"graph": "best_of_n", "n": 8},
    "sc8": {"graph": "self_consistency", "n": 8},
    "iad2x4": {"graph": "iad", "n": 2, "rounds": 4},
    "adaptive8": {"graph": "adaptive", "n": 8},
}


class Model:
    """Seeded per prompt and sample: the same prompt gives the same answers in every run."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def __call__(self, request: ChatRequest) -> list[str]:
        prompt = request.messages[-1].content
        i = next(i for i, p in enumerate(PROBLEMS) if p["question"] in prompt)
        gold, chance = PROBLEMS[i]["answer"], CHANCE[i % len(CHANCE)]
        if "Answer:" in prompt.split(PROBLEMS[i]["question"], 1)[-1]:  # a refine prompt shows answers
            chance = min(1.0, chance + 0.3)
        out = []
        for _ in range(request.n):
            j = self.seen[prompt]
            self.seen[prompt] += 1
            rng = random.Random(hashlib.sha256(f"{prompt}|{j}".encode()).hexdigest())
            answer = gold if rng.random() < chance else gold + rng.choice([-2, -1, 1])
            out.append(f"Answer: {answer}")
        return out


def main(out: Path) -> None:
    for name, options in RUNS.items():
        spec = RunSpec(suite=SUITE, limit=len(PROBLEMS), verifier="exact", backend="function", **options)  # type: ignore[arg-type]
        run_suite_sync(spec, backend=FunctionBackend(Model()), run_dir=out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))
