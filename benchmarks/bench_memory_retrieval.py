"""Measure concept-memory retrieval latency at 10k and 100k concepts (p50/p95).

Corpus: synthetic concepts of made-up words drawn from a Zipf distribution (a 20,000
word vocabulary, exponent 1.07), about 45 words each; 90% in namespace ``bench``,
10% in ``other``. Queries: 6 words, 3 from a random ``bench`` concept (the target)
and 3 drawn from the Zipf distribution, against namespace ``bench``, top 10.

Paths timed, each from query text to top-10 records:

- ``fts5 naive``: one FTS5 query, all 6 terms ORed, ``ORDER BY bm25()``, joined to
  ``concepts`` for the namespace (SQLite only; the baseline from the issue).
- ``lexical``: ``SQLMemoryStore.search`` (rare-term candidates, then BM25 rescoring).
- ``embed rerank``: a lexical shortlist of 50, their stored vectors, cosine against
  the query vector, top 10. Stored vectors are random unit vectors (embedding 100k
  texts on a CPU takes longer than the benchmark); the query vector is precomputed,
  and encoding a query with all-MiniLM-L6-v2 is timed on its own (``embed`` extra).
- ``brute-force cosine``: numpy top-10 over all N x 384 float32 vectors, for reference.

Quality: ``recall@10`` is the share of queries whose target concept is in the top 10;
``overlap@10`` is the share of the naive FTS5 top 10 that ``lexical`` also returns.

    python benchmarks/bench_memory_retrieval.py --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from agentloop.memory import SQLMemoryStore
from agentloop.memory.retrieval import rerank

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "memory_retrieval.json"
DOCS = ROOT / "docs" / "memory.md"
START_MARK = "<!-- bench:memory_retrieval:start -->"
END_MARK = "<!-- bench:memory_retrieval:end -->"
VOCAB = 20_000
DIM = 384


class Corpus:
    """Made-up words with Zipf frequencies; deterministic for a seed."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        words: set[str] = set()
        while len(words) < VOCAB:
            words.add("".join(self.rng.choice(syllables) for _ in range(self.rng.randint(2, 4))))
        self.words = sorted(words)
        self.rng.shuffle(self.words)
        self.cum = list(accumulate(1.0 / (i + 1) ** 1.07 for i in range(VOCAB)))

    def zipf(self, n: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cum, k=n)

    def concept(self, i: int, namespace: str) -> dict[str, Any]:
        w = self.zipf
        return {
            "uid": f"{i:032x}",
            "namespace": namespace,
            "kind": "strategy",
            "title": " ".join(w(5)) + f" {i}",
            "situation": " ".join(w(12)),
            "cues": [" ".join(w(2)) for _ in range(3)],
            "suggestion": " ".join(w(20)),
        }


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "p50_ms": round(statistics.median(s), 2),
        "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 2),
        "mean_ms": round(statistics.fmean(s), 2),
    }


def timed(
    fn: Callable[[str], Any], queries: Sequence[str], warmup: int = 10
) -> tuple[dict[str, float], list[Any]]:
    for q in queries[:warmup]:
        fn(q)
    out, ms = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        ms.append((time.perf_counter() - t) * 1000)
    return percentiles(ms), out


class FixedQueryEmbedder:
    """Returns precomputed query vectors, so the rerank timing leaves out the model."""

    model_id = "bench-random"

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(url: str, n: int, corpus: Corpus) -> tuple[SQLMemoryStore, list[dict[str, Any]], float]:
    store = SQLMemoryStore(url)
    t = time.perf_counter()
    items = [corpus.concept(i, "bench" if i % 10 else "other") for i in range(n)]
    store.import_items(items)
    return store, items, time.perf_counter() - t


def run_size(url: str, n: int, n_queries: int, k: int, embed_model: Any) -> dict[str, Any]:
    corpus = Corpus(seed=n)
    store, items, build_s = build(url, n, corpus)
    print(f"[{n}] built in {build_s:.1f} s", file=sys.stderr)
    uid_of_id: dict[int, str] = {}
    with store.engine.connect() as conn:
        uid_of_id = dict(conn.execute(text("SELECT id, uid FROM concepts")).all())  # type: ignore[arg-type]
    bench = [it for it in items if it["namespace"] == "bench"]
    queries, targets = [], []
    for _ in range(n_queries):
        target = corpus.rng.choice(bench)
        words = " ".join(
            [target["title"], target["situation"], *target["cues"], target["suggestion"]]
        ).split()
        words = [w for w in words if not w.isdigit()]
        queries.append(" ".join(corpus.rng.sample(words, 3) + corpus.zipf(3)))
        targets.append(target["uid"])
    row: dict[str, Any] = {"concepts": n, "build_s": round(build_s, 1), "queries": n_queries}

    lexical, hits = timed(lambda q: store.search(q, namespace="bench", k=k), queries)
    lex_uids = [[h.concept.uid for h in hs] for hs in hits]
    row["lexical"] = lexical
    row["lexical_recall_at_10"] = round(
        sum(t in u for t, u in zip(targets, lex_uids, strict=True)) / n_queries, 3
    )

    if store.engine.dialect.name == "sqlite":
        sql = text(
            "SELECT f.rowid FROM concepts_fts f JOIN concepts c ON c.id = f.rowid "
            "WHERE concepts_fts MATCH :q AND c.namespace = 'bench' ORDER BY bm25(concepts_fts) LIMIT :k"
        )
        from agentloop.memory.retrieval import query_terms

        with store.engine.connect() as conn:

            def naive(q: str) -> list[int]:
                terms = " OR ".join(f'"{t}"' for t in query_terms(q, 64))
                return [r[0] for r in conn.execute(sql, {"q": f"search_text : ({terms})", "k": k})]

            naive_stats, naive_ids = timed(naive, queries)
        naive_uids = [[uid_of_id[i] for i in ids] for ids in naive_ids]
        row["fts5_naive"] = naive_stats
        row["fts5_naive_recall_at_10"] = round(
            sum(t in u for t, u in zip(targets, naive_uids, strict=True)) / n_queries, 3
        )
        overlap = [len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(lex_uids, naive_uids, strict=True)]
        row["overlap_at_10"] = round(statistics.fmean(overlap), 3)

    rng = np.random.default_rng(n)
    t = time.perf_counter()
    ids = sorted(uid_of_id)
    matrix = unit(rng, len(ids))
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        store.set_embeddings(
            dict(zip(chunk, matrix[start : start + 5000], strict=True)), FixedQueryEmbedder.model_id
        )
    print(f"[{n}] stored random vectors in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    embedder = FixedQueryEmbedder({q: v for q, v in zip(queries, unit(rng, n_queries), strict=True)})

    def embed_rerank(q: str) -> Any:
        return rerank(store, store.search(q, namespace="bench", k=50), q, embedder, k)

    row["embed_rerank"], _ = timed(embed_rerank, queries)

    def brute(q: str) -> Any:
        sims = matrix @ embedder.vectors[q]
        top = np.argpartition(-sims, k)[:k]
        return top[np.argsort(-sims[top])]

    row["bruteforce_cosine"], _ = timed(brute, queries)
    if embed_model is not None:
        row["minilm_query_encode"], _ = timed(lambda q: embed_model.encode([q]), queries[:100])
    store.close()
    return row


def _fmt(stats: dict[str, float] | None) -> str:
    return f"{stats['p50_ms']:.1f} / {stats['p95_ms']:.1f}" if stats else "-"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}, {report['cpus']} CPUs; Python {report['python']}; "
        f"SQLite {report['sqlite']}; {report['backend']}. {report['queries']} queries per size "
        f"(after 10 warm-up), top {report['k']}. Times are p50 / p95 in ms.",
        "",
        "| concepts | fts5 naive | lexical (ours) | embed rerank | brute-force cosine | MiniLM query encode "
        "| recall@10 naive / ours | overlap@10 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['concepts']:,} | {_fmt(r.get('fts5_naive'))} | **{_fmt(r['lexical'])}** "
            f"| {_fmt(r['embed_rerank'])} | {_fmt(r['bruteforce_cosine'])} | {_fmt(r.get('minilm_query_encode'))} "
            f"| {r.get('fts5_naive_recall_at_10', '-')} / {r['lexical_recall_at_10']} | {r.get('overlap_at_10', '-')} |"
        )
    return "\n".join(lines)


def write_docs(table: str) -> None:
    text_ = DOCS.read_text(encoding="utf-8")
    if START_MARK not in text_ or END_MARK not in text_:
        raise SystemExit(f"{DOCS} lacks the {START_MARK} / {END_MARK} markers")
    head, rest = text_.split(START_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    DOCS.write_text(f"{head}{START_MARK}\n{table}\n{END_MARK}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--url",
        help="PostgreSQL URL to run against (each size in a fresh schema); default: SQLite temp files",
    )
    parser.add_argument("--no-model", action="store_true", help="skip timing the MiniLM query encoder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--write-docs", action="store_true", help=f"put the table into {DOCS.name}")
    args = parser.parse_args(argv)

    embed_model = None
    if not args.no_model:
        try:
            from agentloop.memory import MiniLMEmbedder

            embed_model = MiniLMEmbedder()
            embed_model.encode(["warm up"])
        except ImportError:
            print("the embed extra is not installed: skipping the MiniLM timing", file=sys.stderr)

    import sqlite3

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            if args.url:
                url = _pg_schema_url(args.url, f"bench_{n}")
            else:
                url = f"sqlite:///{Path(tmp) / f'memory_{n}.sqlite'}"
            rows.append(run_size(url, n, args.queries, args.k, embed_model))
            print(json.dumps(rows[-1]), file=sys.stderr)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report = {
        "command": "python benchmarks/bench_memory_retrieval.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load_after": load,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "backend": "PostgreSQL" if args.url else "SQLite file (WAL)",
        "queries": args.queries,
        "k": args.k,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    print(table)
    if args.write_docs:
        write_docs(table)
        print(f"updated {DOCS}", file=sys.stderr)


def _pg_schema_url(base: str, schema: str) -> str:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from agentloop.memory import resolve_memory_url

    engine = create_engine(resolve_memory_url(base))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    url = make_url(resolve_memory_url(base)).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


if __name__ == "__main__":
    main()
