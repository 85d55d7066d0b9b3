"""Does int8 hold up well enough to be the CPU default? The two checks the default hangs on.

Usage: python benchmarks/bench_int8.py [--parts agreement,batching,accuracy] [--prompts 100] [--questions 100]
       [--runs-root DIR] [--out FILE]

  agreement: greedy outputs of int8 and fp32 on 200 shipped prompts: the first-round
             request of the first 100 Text2SQL questions (few-shot prompt, schema grammar,
             as the main job sends them) and 100 WebShop step prompts (few-shot ReAct pages
             from rollouts driven by a scripted policy: search with the instruction's words,
             open the first product, pick options, buy). Reported: the share of token
             positions where the two outputs agree (over the longer output), the share
             before the first difference, and whole outputs that are identical.
  accuracy:  execution accuracy of greedy decoding on the first 100 Text2SQL questions,
             fp32 against int8, each stored as a run; the paired difference and its
             interval come from ``agentloop report FP32_RUN --compare INT8_RUN``.
  teacher:   teacher-forced, every position of ``--teacher-prompts`` Text2SQL prompts: how often
             int8's next-token argmax equals fp32's, and the total variation distance of the
             two next-token distributions, for int8 without and with SmoothQuant smoothing.
  batching:  not about int8: fp32 greedy outputs served 8 at a time in one batch against
             the same prompts served one at a time (``batching=False``), on
             ``--batching-prompts`` prompts per suite: how often batched kernels flip a
             near-tie in the last bits of fp32.

The default switches to int8 only if agreement >= 95% of tokens and accuracy is not
lower beyond noise (docs/performance.md has the outcome).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _baseline import Clock, load_average, set_threads

from agentloop.backends import ChatRequest
from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.models import ensure_embedded_model
from agentloop.runs import RunSpec, run_suite
from agentloop.suites import get_suite
from agentloop.suites.webshop.task import load_webshop_tasks

NAV = {"Back to Search", "< Prev", "Next >", "Search", "Description", "Features", "Reviews"}


def text2sql_requests(count: int) -> list[ChatRequest]:
    suite = get_suite("text2sql")
    spec = RunSpec(suite="text2sql", graph="greedy", limit=count)
    out = []
    for item in suite.items(spec, TransformersBackend()):
        task = item.task
        messages = tuple(task.build_messages())
        constraint = task.request_constraint(messages)
        out.append(
            ChatRequest(
                messages=messages,
                raw_prompt=task.completion_prompt(messages),
                constraint=constraint,
                stop=() if constraint is not None else tuple(dict.fromkeys(suite.stop + task.stop)),
                max_tokens=64,
                temperature=0.0,
            )
        )
    return out


class _ScriptedStep:
    """A rollout's step function that records each prompt and answers with a plausible action."""

    temperature = 0.0
    seed = 0

    def __init__(self, task: Any):
        self.task = task
        self.prompts: list[str] = []

    async def __call__(self, prompt: Any, *, constraint: Any = None, max_tokens: Any = None) -> str:
        raw = self.task.completion_prompt(prompt)
        self.prompts.append(raw)
        if raw.endswith("search["):
            return " ".join(self.task.instruction.split()[2:8]) + "]"
        page = raw.rsplit("Page:", 1)[-1]
        items = [i for i in re.findall(r"\[([^\[\]]{1,60})\]", page) if i not in NAV]
        products = [i for i in items if re.fullmatch(r"B0\w+", i)]
        pick = products[0] if products else next((i for i in items if i != "Buy Now"), "Buy Now")
        if len(self.prompts) > 3:
            pick = "Buy Now"
        return pick + "]"

    async def score(self, prompt: Any, continuations: Any) -> None:
        return None


async def webshop_requests(count: int) -> list[ChatRequest]:
    out: list[ChatRequest] = []
    for task in load_webshop_tasks(limit=count, prompt_format="fewshot", policy="react", max_steps=4):
        step = _ScriptedStep(task)
        await task.rollout(step, task.build_messages())
        stop = tuple(getattr(task, "stop", ()) or ("]",))
        out.extend(
            ChatRequest(raw_prompt=p, max_tokens=32, temperature=0.0, stop=stop) for p in step.prompts[:3]
        )
        if len(out) >= count:
            break
    return out[:count]


async def generate_all(
    backend: TransformersBackend, reqs: list[ChatRequest], in_flight: int = 8
) -> list[str]:
    gate = asyncio.Semaphore(in_flight)

    async def one(r: ChatRequest) -> str:
        async with gate:
            return (await backend.generate(r)).texts[0]

    return list(await asyncio.gather(*(one(r) for r in reqs)))


def agreement(tok: Any, a: list[str], b: list[str]) -> dict[str, Any]:
    same = prefix = total = exact = 0
    for x, y in zip(a, b, strict=True):
        ta = tok(x, add_special_tokens=False)["input_ids"]
        tb = tok(y, add_special_tokens=False)["input_ids"]
        total += max(len(ta), len(tb))
        same += sum(1 for i, j in zip(ta, tb, strict=False) if i == j)
        k = 0
        while k < min(len(ta), len(tb)) and ta[k] == tb[k]:
            k += 1
        prefix += k
        exact += int(ta == tb)
    return {
        "prompts": len(a),
        "tokens": total,
        "position_agreement": round(same / total, 4) if total else 1.0,
        "prefix_agreement": round(prefix / total, 4) if total else 1.0,
        "identical_outputs": round(exact / len(a), 4) if a else 1.0,
    }


async def part_agreement(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = ensure_embedded_model()
    fp32, int8 = TransformersBackend(model_dir), TransformersBackend(model_dir, dtype="int8")
    fp32.load()
    int8.load()
    sets = {"text2sql": text2sql_requests(args.prompts), "webshop": await webshop_requests(args.prompts)}
    out: dict[str, Any] = {}
    texts: dict[str, tuple[list[str], list[str]]] = {}
    for name, reqs in sets.items():
        with Clock() as c:
            a = await generate_all(fp32, reqs)
            b = await generate_all(int8, reqs)
        texts[name] = (a, b)
        lengths = [len(fp32.encode(r)) for r in reqs]
        out[name] = {
            **agreement(fp32._tokenizer, a, b),
            "prompt_tokens_median": sorted(lengths)[len(lengths) // 2],
            "prompt_tokens_max": max(lengths),
            "wall_s": round(c.seconds, 1),
        }
        print(name, out[name], flush=True)
    all_a = texts["text2sql"][0] + texts["webshop"][0]
    all_b = texts["text2sql"][1] + texts["webshop"][1]
    out["all"] = agreement(fp32._tokenizer, all_a, all_b)
    out["examples"] = [{"fp32": x, "int8": y} for x, y in zip(all_a, all_b, strict=True) if x != y][:5]
    print("all", out["all"], flush=True)
    return out


async def part_batching(args: argparse.Namespace) -> dict[str, Any]:
    """fp32 greedy outputs served 8 at a time in one batch against the same served one at a time."""
    model_dir = ensure_embedded_model()
    alone, batched = TransformersBackend(model_dir, batching=False), TransformersBackend(model_dir)
    alone.load()
    batched.load()
    k = args.batching_prompts
    reqs = text2sql_requests(k) + (await webshop_requests(k))
    with Clock() as c:
        a = await generate_all(alone, reqs)
        b = await generate_all(batched, reqs)
    out = {**agreement(alone._tokenizer, a, b), "wall_s": round(c.seconds, 1)}
    out["differing"] = [{"alone": x, "batched": y} for x, y in zip(a, b, strict=True) if x != y]
    print("batching", out, flush=True)
    return out


async def part_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = ensure_embedded_model()
    root = Path(args.runs_root or tempfile.mkdtemp(prefix="int8_acc_"))
    runs = {}
    for name, dtype in (("fp32", "float32"), ("int8", "int8")):
        backend = TransformersBackend(model_dir, dtype=dtype)
        backend.load()
        spec = RunSpec(
            suite="text2sql", graph="greedy", limit=args.questions, backend=f"transformers?dtype={dtype}"
        )
        with Clock() as c:
            summary = await run_suite(spec, run_dir=root / name, backend=backend)
        runs[name] = {"run_dir": str(root / name), "metrics": summary.metrics, "wall_s": round(c.seconds, 1)}
        print(name, runs[name], flush=True)
        await backend.aclose()
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentloop",
            "report",
            runs["fp32"]["run_dir"],
            "--compare",
            runs["int8"]["run_dir"],
        ],
        capture_output=True,
        text=True,
    )
    runs["compare_report"] = report.stdout + report.stderr
    print(runs["compare_report"], flush=True)
    return runs


def part_teacher(args: argparse.Namespace) -> dict[str, Any]:
    """Teacher-forced next-token agreement with fp32 at every prompt position: int8 unsmoothed vs smoothed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentloop.backends._int8 import calibration_ids, quantize_int8

    model_dir = ensure_embedded_model()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [r.raw_prompt for r in text2sql_requests(args.teacher_prompts)]

    def load() -> Any:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def logits(model: Any, text: str) -> Any:
        with torch.inference_mode():
            return model(tok(text, return_tensors="pt").input_ids).logits[0]

    ref = load()
    expected = [logits(ref, p) for p in prompts]
    out: dict[str, Any] = {"prompts": len(prompts), "positions": sum(e.shape[0] for e in expected)}
    for name, calibration in (("unsmoothed", None), ("smoothed", calibration_ids(tok))):
        model = load()
        quantize_int8(model, calibration)
        same, tv = 0, 0.0
        for p, e in zip(prompts, expected, strict=True):
            got = logits(model, p)
            same += int((got.argmax(-1) == e.argmax(-1)).sum())
            tv += float(0.5 * (got.softmax(-1) - e.softmax(-1)).abs().sum(-1).sum())
        out[name] = {
            "argmax_agreement": round(same / out["positions"], 4),
            "total_variation": round(tv / out["positions"], 4),
        }
        print(name, out[name], flush=True)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="agreement,accuracy")
    ap.add_argument("--prompts", type=int, default=100, help="prompts per suite")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--batching-prompts", type=int, default=25, help="prompts per suite for --parts batching")
    ap.add_argument("--teacher-prompts", type=int, default=6, help="Text2SQL prompts for --parts teacher")
    ap.add_argument("--runs-root", default=None)
    ap.add_argument("--out", default="benchmarks/results/int8.json")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    set_threads(args.threads)
    parts = args.parts.split(",")
    import torch

    results: dict[str, Any] = {"load_average_start": load_average(), "torch_threads": torch.get_num_threads()}
    if "agreement" in parts:
        results["agreement"] = await part_agreement(args)
    if "batching" in parts:
        results["batching"] = await part_batching(args)
    if "accuracy" in parts:
        results["accuracy"] = await part_accuracy(args)
    if "teacher" in parts:
        results["teacher"] = part_teacher(args)
    results["load_average_end"] = load_average()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "accuracy"}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
