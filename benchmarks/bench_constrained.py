"""Cost of constrained decoding and of likelihood scoring in the transformers backend.

Usage: python benchmarks/bench_constrained.py [--model PATH] [--repeats 3] [--libs] [--out FILE]

Measures, on the embedded SmolLM2-135M (fp32, CPU unless CUDA is present):
  1. decode tokens/s at n=8, 64 new tokens (``ignore_eos``), on the same prompt,
     unconstrained against a mid-size Lark grammar (a SQL SELECT subset over a
     12-table schema) and against a regex;
  2. ``score`` of 10 continuations after a ~600-token prompt, against generating
     one of them (greedy, its token count, prefix cache cleared before each);
  3. with ``--libs``: llguidance against xgrammar on the same grammar (tokenizer
     setup, grammar and regex compile time, mask time per step at n=8).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from agentloop.backends import ChatRequest, Constraint
from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.models import ensure_embedded_model

TABLES = {f"table_{i}": [f"col_{i}_{j}" for j in range(8)] for i in range(12)}
_T = " | ".join(f'"{t}"' for t in TABLES)
_C = " | ".join(f'"{c}"' for cs in TABLES.values() for c in cs)
# Written in GBNF so that both libraries read the very same grammar (llguidance
# converts it to Lark with gbnf_to_lark; xgrammar reads GBNF natively).
GBNF = f"""
root ::= select
select ::= "SELECT " distinct? items " FROM " from where? group? order? limit?
distinct ::= "DISTINCT "
items ::= item (", " item)*
item ::= "*" | agg | colref (" AS " ident)?
agg ::= aggname "(" ("*" | colref) ")"
aggname ::= "COUNT" | "MAX" | "MIN" | "SUM" | "AVG"
colref ::= (table ".")? column
from ::= table (" AS " ident)? join*
join ::= " JOIN " table (" AS " ident)? " ON " colref " = " colref
where ::= " WHERE " cond ((" AND " | " OR ") cond)*
cond ::= colref " " op " " value | colref " IN (" select ")" | colref " LIKE " string
op ::= "=" | "!=" | "<" | ">" | "<=" | ">="
value ::= number | string | colref
number ::= [0-9]+ ("." [0-9]+)?
string ::= "'" [^']* "'"
group ::= " GROUP BY " colref (", " colref)* (" HAVING " agg " " op " " value)?
order ::= " ORDER BY " (colref | agg) (" ASC" | " DESC")?
limit ::= " LIMIT " [0-9]+
ident ::= [a-zA-Z_] [a-zA-Z0-9_]*
table ::= {_T}
column ::= {_C}
"""
REGEX = r"search\[[a-z0-9 ]{1,400}\]"
# For the decode rate: cannot end within 64 tokens, so every row decodes all of them.
DECODE_REGEX = r"search\[[a-z0-9 ,.]{300,400}\]"
SCHEMA = "\n".join(f"CREATE TABLE {t} ({', '.join(f'{c} TEXT' for c in cs)});" for t, cs in TABLES.items())


def lark_grammar() -> str:
    from llguidance.gbnf_to_lark import any_to_lark

    return str(any_to_lark(GBNF))


def decode_rates(
    b: TransformersBackend, variants: dict[str, Constraint | None], repeats: int
) -> dict[str, Any]:
    """Tokens/s per variant; runs are interleaved so that load from other jobs hits all alike."""
    base = ChatRequest.from_prompt(
        "Write one SQL query over this schema, as long as you like.\n" + SCHEMA[:800],
        n=8,
        temperature=1.0,
        max_tokens=64,
        seed=0,
        extra={"ignore_eos": True},
    )
    rates: dict[str, list[float]] = {k: [] for k in variants}
    toks: dict[str, list[int]] = {k: [] for k in variants}
    for r in range(repeats + 1):
        for name, constraint in variants.items():
            resp = b.generate_sync(base.replace(seed=r, constraint=constraint))
            if r == 0:
                continue  # warm-up: prefix cache, compiled grammar, llguidance tokenizer
            # Prefill is a reused prefix here, so latency is (nearly) all decode.
            rates[name].append(resp.usage.completion_tokens / resp.usage.latency_s)
            toks[name].append(resp.usage.completion_tokens)
    return {
        k: {"tokens_per_s": statistics.median(rates[k]), "tokens": statistics.median(toks[k])}
        for k in variants
    }


def score_vs_generate(b: TransformersBackend, repeats: int) -> dict[str, float]:
    schema = "\n".join(SCHEMA.splitlines()[:8])  # about 600 prompt tokens with the question
    prompt = "Database schema:\n" + schema + "\nWhich table holds the orders? Answer with a table name."
    req = ChatRequest.from_prompt(prompt, temperature=0.0)
    conts = [f"table_{i}" for i in range(10)]
    ntok = len(b._tokenizer(conts[0], add_special_tokens=False)["input_ids"])
    gen = req.replace(max_tokens=ntok, extra={"ignore_eos": True})
    times: dict[str, list[float]] = {k: [] for k in ("score_cold", "gen_cold", "score_warm", "gen_warm")}
    for _ in range(repeats):
        for name, call in (
            ("score", lambda: b.score_sync(req, conts)),
            ("gen", lambda: b.generate_sync(gen)),
        ):
            b.clear_prefix_cache()  # cold: the whole prompt is prefilled
            t = time.perf_counter()
            call()
            times[f"{name}_cold"].append(time.perf_counter() - t)
            t = time.perf_counter()  # warm: the prompt is in the prefix cache, as after a generate
            call()
            times[f"{name}_warm"].append(time.perf_counter() - t)
    return {
        "prompt_tokens": len(b.encode(req)),
        "continuation_tokens": ntok,
        **{f"{k}_s": statistics.median(v) for k, v in times.items()},
    }


def compare_libs(model_dir: Path, steps: int = 60) -> dict[str, Any]:
    import llguidance as llg
    import llguidance.hf
    import numpy as np
    import xgrammar as xgr
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = AutoConfig.from_pretrained(str(model_dir)).vocab_size

    def walk(fill: Any, consume: Any) -> float:
        # Random walks through the grammar: n=8 rows, each step a mask then one allowed token.
        rng, times = random.Random(0), []
        for _ in range(steps):
            t = time.perf_counter()
            bits = fill()
            times.append(time.perf_counter() - t)
            allowed = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :vocab]
            for i in range(8):
                ids = [x for x in np.flatnonzero(allowed[i]) if x != tok.eos_token_id]
                if ids:
                    consume(i, int(rng.choice(ids)))
        return statistics.median(times) * 1000

    out: dict[str, Any] = {}
    t = time.perf_counter()
    lt = llguidance.hf.from_tokenizer(tok, n_vocab=vocab)
    tok_s = time.perf_counter() - t
    t = time.perf_counter()
    m0 = llg.LLMatcher(lt, lark_grammar(), log_level=0)
    comp = time.perf_counter() - t
    t = time.perf_counter()
    llg.LLMatcher(lt, llg.LLMatcher.grammar_from_regex(REGEX), log_level=0)
    rx = time.perf_counter() - t
    ms = [m0.deep_copy() for _ in range(8)]
    bits = np.zeros((8, (vocab + 31) // 32), dtype=np.int32)

    def lfill() -> Any:
        for i, m in enumerate(ms):
            m.unsafe_compute_mask_ptr(bits[i].ctypes.data, bits.shape[1] * 4)
        return bits

    out["llguidance"] = {
        "tokenizer_ms": tok_s * 1000,
        "grammar_compile_ms": comp * 1000,
        "regex_compile_ms": rx * 1000,
        "mask_n8_ms": walk(lfill, lambda i, x: ms[i].consume_token(x)),
    }
    t = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab)
    tok_s = time.perf_counter() - t
    compiler = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=False)
    t = time.perf_counter()
    cg = compiler.compile_grammar(GBNF)
    comp = time.perf_counter() - t
    t = time.perf_counter()
    compiler.compile_regex(REGEX)
    rx = time.perf_counter() - t
    xm = [xgr.GrammarMatcher(cg) for _ in range(8)]
    xb = xgr.allocate_token_bitmask(8, info.vocab_size)

    def xfill() -> Any:
        for i, m in enumerate(xm):
            if not m.is_terminated():
                m.fill_next_token_bitmask(xb, i)
        return xb.numpy()

    out["xgrammar"] = {
        "tokenizer_ms": tok_s * 1000,
        "grammar_compile_ms": comp * 1000,
        "regex_compile_ms": rx * 1000,
        "mask_n8_ms": walk(xfill, lambda i, x: xm[i].accept_token(x)),
        "vocab_type": str(info.vocab_type),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--libs", action="store_true", help="also compare llguidance and xgrammar")
    ap.add_argument("--out", default="benchmarks/results/constrained.json")
    args = ap.parse_args()
    model_dir = Path(args.model) if args.model else ensure_embedded_model()
    b = TransformersBackend(model_dir)
    b.load()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
        "note": "shared machine: other jobs ran on the same cores",
    }
    variants = {
        "unconstrained": None,
        "grammar": Constraint.grammar(lark_grammar()),
        "regex": Constraint.regex(DECODE_REGEX),
    }
    rates = decode_rates(b, variants, args.repeats)
    free = rates["unconstrained"]["tokens_per_s"]
    results["decode_n8"] = {
        **rates,
        "grammar_ratio": rates["grammar"]["tokens_per_s"] / free,
        "regex_ratio": rates["regex"]["tokens_per_s"] / free,
    }
    results["score"] = score_vs_generate(b, args.repeats)
    if args.libs:
        results["libs"] = compare_libs(model_dir)
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
