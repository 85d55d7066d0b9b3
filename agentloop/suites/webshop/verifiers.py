"""WebShop verifiers: judge a finished episode's purchase.

``"rules"`` judges the purchase only from what the shopper saw (the instruction against
the bought product's pages, chosen options and listed price); it never reads the hidden
goal. ``"oracle"`` scores with the true reward, an upper bound.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from agentloop.graphs.task import Verdict
from agentloop.suites.webshop._names import VERIFIERS

if TYPE_CHECKING:
    from agentloop.suites.webshop.task import Outcome

__all__ = ["VERIFIERS", "VerifierName", "judge_purchase", "oracle_verdict"]

VerifierName = Literal["rules", "oracle"]

_PRICE_LIMIT = re.compile(r"price lower than ([\d.]+) dollars")

_REQUEST_WORDS = frozenset(
    """i im am looking for need want to buy find me get some a an the that is are which it its
    they should be with and in of please pair piece kind one would like also color colour size
    flavor flavour scent style type count fit lower than price dollars under tube bottle box bag
    some set kit""".split()
)
_SIZE_NAMES = re.compile(r"\b(travel|queen|king|twin|full|family|one) size\b")
_SPELLINGS = {"color": ("color", "colour"), "flavor": ("flavor", "flavour")}
_WORD = re.compile(r"[a-z0-9]+")


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def judge_purchase(outcome: Outcome) -> Verdict:
    """The goal-free rule verifier: does what was bought, as its pages showed it, fit the instruction?

    Three checks, each in [0, 1], averaged: the instruction's content words found in the
    product's title, bullets, description (and attributes, when shown) and chosen options;
    the option values the instruction names, chosen; the listed price under the
    instruction's limit. It passes when all words are found, the options fit and the
    price fits. The critique names what is off.
    """
    p = outcome.purchase
    if p is None:
        if outcome.ended == "stuck":
            return Verdict(
                0.0,
                False,
                "No purchase: the episode stopped after several invalid actions in a row. Answer with one "
                "line 'Action: search[keywords]' on the search page, or 'Action: click[item]' with an item "
                "shown in square brackets.",
            )
        why = "the action limit ran out" if outcome.ended == "step_limit" else "the compute budget ran out"
        return Verdict(
            0.0, False, f"No purchase: {why} before Buy Now. Search sooner and buy a fitting product."
        )
    instruction = outcome.instruction.lower()
    m = _PRICE_LIMIT.search(instruction)
    limit = float(m.group(1)) if m else None
    wish = _PRICE_LIMIT.sub(" ", instruction)
    problems: list[str] = []

    # Options: a dimension counts when the instruction names one of its values.
    requested = 0
    opt_hits = 0
    named_values: list[str] = []
    for dim, values in p.available_options.items():
        named = _named_values(wish, values)
        if not named:
            # The instruction may want a value this product does not offer at all.
            plain = _SIZE_NAMES.sub(" ", wish)  # "travel size" is a feature, not a size
            if any(re.search(rf"\b{w}\b", plain) for w in _SPELLINGS.get(dim, (dim,))):
                requested += 1
                problems.append(f"the instruction asks for a {dim} that this product does not offer")
            continue
        requested += 1
        named_values += named
        chosen = p.options.get(dim)
        if chosen in named:
            opt_hits += 1
        elif chosen is None:
            problems.append(f"no {dim} was selected; the instruction asks for {named[0]}")
        else:
            problems.append(f"{dim} {chosen} was selected; the instruction asks for {named[0]}")
    opt_score = opt_hits / requested if requested else 1.0

    # Content words: what the instruction wants, minus request phrasing and option values.
    for v in named_values:
        wish = re.sub(rf"(?<![a-z0-9]){re.escape(v)}(?![a-z0-9])", " ", wish)
    words = [w for w in dict.fromkeys(_WORD.findall(wish)) if w not in _REQUEST_WORDS and not w.isdigit()]
    page = " ".join([p.name, *p.bullet_points, p.description, *(p.attributes or ()), *p.options.values()])
    seen = {_stem(w) for w in _WORD.findall(page.lower())}
    missing = [w for w in words if _stem(w) not in seen]
    coverage = 1.0 - len(missing) / len(words) if words else 1.0
    if missing:
        problems.insert(0, "the product's pages never mention " + ", ".join(f"'{w}'" for w in missing))

    price = _listed_price(p.price_tag)
    price_ok = limit is None or price is None or price <= limit
    if not price_ok:
        problems.append(f"its price {p.price_tag} is above the limit of ${limit:.2f}")

    score = (coverage + opt_score + float(price_ok)) / 3
    passed = not missing and opt_hits == requested and price_ok
    head = f"Bought {p.asin} '{p.name}' at {p.price_tag}"
    if p.options:
        head += " with " + ", ".join(f"{k}: {v}" for k, v in p.options.items())
    feedback = f"{head}. " + (
        "It fits the instruction." if passed else "Problems: " + "; ".join(problems) + "."
    )
    details = {
        "verifier": "rules",
        "coverage": round(coverage, 4),
        "missing_words": missing,
        "options_requested": requested,
        "options_hit": opt_hits,
        "price_ok": price_ok,
    }
    return Verdict(score, passed, feedback, details)


def oracle_verdict(outcome: Outcome) -> Verdict:
    """The true WebShop reward as the verdict: an upper bound, since it reads the hidden goal."""
    info = outcome.reward_info
    if info is None:
        return Verdict(0.0, False, "No purchase (true reward 0).", {"verifier": "oracle"})
    parts = (
        f"type factor {info.r_type:g}, attributes {info.attr_hits}/{info.n_attrs}, "
        f"options {info.option_hits}/{info.n_options}, price {'within' if info.price_ok else 'over'} the limit"
    )
    return Verdict(
        info.reward,
        info.success,
        f"True reward {info.reward:.2f}: {parts}.",
        {"verifier": "oracle", **info.to_dict()},
    )


# --- internals ------------------------------------------------------------------------------


def _named_values(text: str, values: Sequence[str]) -> list[str]:
    """Values that ``text`` names as whole words; a value inside a longer named one does not count."""
    named = [v for v in values if re.search(rf"(?<![a-z0-9.]){re.escape(v)}(?![a-z0-9]|\.\d)", text)]
    return [v for v in named if not any(v != o and v in o for o in named)]


def _listed_price(tag: str) -> float | None:
    m = re.search(r"\$\s*([\d.]+)", tag)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None
