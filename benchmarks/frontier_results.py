"""Write one suite's accuracy-vs-compute results file from stored runs, as docs/results.md quotes them.

The first run is the base (a ``best_of_n`` run); every other run is compared with it twice:
at equal compute (``report --matched``: the base's curve at the other's own mean cost) and
plainly (all of the base's candidates). With ``--vote`` the base's candidates picked by
majority vote join as ``BASE (vote)``: the self-consistency curve of the same samples.
Everything goes through ``agentloop report`` itself, so the file holds what a user would
see, with the commands that print it::

    python benchmarks/frontier_results.py benchmarks/runs/ws29 bon8 greedy adaptive_sample8 \\
        --vote --what "WebShop, 116 goals" --out benchmarks/results/webshop_frontier_116.json

Runs are named relative to ``ROOT`` (the directory the commands are run from).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


def report(root: Path, args: list[str]) -> Any:
    """``agentloop report ARGS --json`` run in ``root``, parsed."""
    cmd = [sys.executable, "-m", "agentloop", "report", *args, "--json"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"agentloop report {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}"
        )
    return json.loads(done.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="The directory the run dirs are named from.")
    p.add_argument("base", help="The best_of_n run that the others are compared with.")
    p.add_argument("others", nargs="+", help="The other runs.")
    p.add_argument("--cost", default="candidates")
    p.add_argument("--vote", action="store_true", help="Add the base's candidates by majority vote.")
    p.add_argument("--what", default="", help="One line saying what was measured.")
    p.add_argument(
        "--run-commands", nargs="*", default=[], help="The agentloop run commands that made the runs."
    )
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    compare = [x for o in a.others for x in ("--compare", o)]
    vote = ["--vote"] if a.vote else []
    frontier_args = [a.base, *a.others, "--frontier", "--cost", a.cost, *vote]
    matched_args = [a.base, *compare, "--matched", "--cost", a.cost, *vote]
    plain_args = [a.base, *compare]
    frontier = report(a.root, frontier_args)
    matched = report(a.root, matched_args)
    plain = report(a.root, plain_args)
    result = {
        "what": a.what,
        "commands": [
            *a.run_commands,
            f"cd {a.root}",
            shlex.join(["agentloop", "report", *frontier_args]),
            shlex.join(["agentloop", "report", *matched_args]),
            shlex.join(["agentloop", "report", *plain_args]),
        ],
        "frontier": frontier.get("frontier"),
        "tasks_note": frontier.get("tasks_note"),
        "matched": matched.get("matched"),
        "plain": plain,
    }
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
