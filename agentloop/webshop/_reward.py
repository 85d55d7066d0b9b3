"""WebShop's reward for a purchase: type factor x (attribute, option and price hits) / their count.

This follows ``get_reward`` in the original WebShop's ``web_agent_site/engine/goal.py``
(Yao et al., 2022; MIT), the version on its main branch (see docs/webshop.md), colour set
and synthetic-goal option pairs included, with two documented substitutions:

* fuzzy matching is rapidfuzz's ``token_set_ratio`` behind the preprocessing thefuzz
  applies (code points 128-255 dropped, lower case, other non-alphanumerics to spaces,
  rounded to an int): thefuzz 0.20 and later is exactly this;
* nouns come from :func:`title_nouns`, a lexicon rule, because the spaCy English model the
  original loads is not installable here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentloop.errors import AgentloopError

if TYPE_CHECKING:
    from agentloop.webshop._catalog import Goal, Product

__all__ = [
    "COLORS",
    "FUZZ_THRESHOLD",
    "RewardInfo",
    "fuzzy_score",
    "get_reward",
    "normalize_color",
    "title_nouns",
    "type_reward",
]

FUZZ_THRESHOLD = 85  # a fuzzy match needs a score strictly above this

# WebShop's colour set (``COLOR_SET`` in the original's engine/normalize.py), in its order:
# the first word contained in an option value is that value's normalised form. Order
# matters: "dark grey" becomes "dark" (d before g) but "light grey" becomes "grey", so the
# two miss each other, while "dark grey" meets "dark green" and "heather grey" meets "grey".
COLORS: tuple[str, ...] = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black",
    "blue", "blush", "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel",
    "champagne", "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee",
    "cognac", "copper", "coral", "cranberry", "cream", "crystal", "dark", "denim", "eggplant",
    "elephant", "espresso", "fuchsia", "gold", "granite", "grape", "graphite", "grass", "gray",
    "green", "grey", "heather", "indigo", "ivory", "ivy", "khaki", "lavender", "lemon",
    "leopard", "light", "lilac", "lime", "magenta", "maroon", "mauve", "merlot", "midnight",
    "mint", "mocha", "multicolor", "mushroom", "mustard", "natural", "navy", "nude", "olive",
    "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow", "red", "rose", "royal",
    "rust", "sand", "sapphire", "seashell", "silver", "skull", "slate", "steel", "stone",
    "stonewash", "sunflower", "tan", "taupe", "teal", "tiger", "turquoise", "violet", "walnut",
    "wheat", "white", "wine", "yellow",
)  # fmt: skip

# Colour adjectives the noun rule drops from titles. Not COLORS: that set also holds words
# that name things in a title ("coffee", "skull", "stone", "christmas").
_TITLE_COLOR_WORDS = frozenset(
    """alabaster apricot aqua ash asphalt azure beige black blue blush bordeaux bronze brown
    burgundy camel camo caramel champagne charcoal cheetah chestnut chocolate cognac copper
    coral cranberry cream crimson denim espresso fuchsia gold graphite gray green grey indigo
    ivory khaki lavender lemon leopard lilac lime magenta maroon mauve mint mocha multicolor
    mustard navy nude olive orange peach pewter pink plum purple rainbow red rose ruby rust
    sage sand silver slate tan taupe teal turquoise violet walnut white wine yellow""".split()
)


class MissingRapidfuzzError(AgentloopError, ImportError):
    def __init__(self) -> None:
        super().__init__("the WebShop reward needs rapidfuzz; install it with: pip install 'rapidfuzz>=3'")


def _rapidfuzz() -> Any:
    try:
        from rapidfuzz import fuzz, utils
    except ImportError:
        raise MissingRapidfuzzError() from None
    return fuzz, utils


# thefuzz's "force ASCII" deletes code points 128-255 only; anything above (curly quotes,
# dashes) survives and default_process then turns it into a space, as it does punctuation.
_LATIN1 = {i: None for i in range(128, 256)}


def fuzzy_score(a: str, b: str) -> int:
    """thefuzz's ``token_set_ratio(a, b)``: 0-100, after its preprocessing, rounded to an int."""
    fuzz, utils = _rapidfuzz()
    pa = utils.default_process(a.translate(_LATIN1))
    pb = utils.default_process(b.translate(_LATIN1))
    if not pa or not pb:
        return 0
    return int(round(fuzz.token_set_ratio(pa, pb)))


def normalize_color(value: str) -> str:
    """The first colour word of :data:`COLORS` that ``value`` contains, else ``value`` unchanged."""
    for color in COLORS:
        if color in value:
            return color
    return value


# --- nouns ----------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    """a about above after all also am an and any are as at be been being both but by can
    could did do does each either every few for from had has have he her here hers him his
    how i if in into is it its itself just me more most my no nor not of off on once only or
    other our ours out over own per same she should so some such than that the their theirs
    them then there these they this those through to too under until up upon very via vs w
    was we were what when where which while who whom why will with within without would you
    your yours""".split()
)
# Words that describe rather than name: a closed list of adjectives common in product
# titles, plus colours, units and counters. A context-free stand-in for spaCy's tagger.
_NOT_NOUNS = (
    frozenset(
        """adjustable advanced all-in-one anti assorted authentic basic best big bright
    casual cheap classic clean clear comfortable comfy compact compatible complete cool
    cozy cute daily dark decorative deep deluxe dense digital double dry durable easy
    elegant electric essential everyday extra fast fine flat fluffy fresh full funny
    genuine gentle good great handmade healthy heavy high hot instant large latest
    light lightweight little long low luxury magnetic main medium mini modern multi
    natural new nice non old organic original outdoor perfect plain plus portable premium
    professional pure quick real regular rich round safe sexy sharp short simple single
    slim small smart smooth soft solid special sturdy stylish super sweet thick thin tiny
    total true ultra unique universal upgraded vintage warm waterproof wide wireless
    womens mens ladies oz fl ml lb lbs kg mm cm ft inch inches ounce ounces pcs pc count
    ct pk qty""".split()
    )
    | _TITLE_COLOR_WORDS
)
_ADJ_SUFFIXES = ("able", "ible", "ful", "less", "ous")
_LY_NOUNS = frozenset({"assembly", "supply", "family", "jelly", "belly", "butterfly", "lily", "fly", "ally"})
_TOKEN = re.compile(r"[a-z0-9]+")


def title_nouns(text: str) -> list[str]:
    """The words of ``text`` that name things, lower-cased, in order, duplicates kept.

    A lexicon rule: every alphabetic word of two or more letters except stopwords,
    a closed list of title adjectives, colours and units, words with adjective
    suffixes (-able, -ible, -ful, -less, -ous) and -ly adverbs. spaCy tags by context
    instead; docs/webshop.md says where the two disagree.
    """
    out = []
    for tok in _TOKEN.findall(text.lower()):
        if len(tok) < 2 or not tok.isalpha() or tok in _STOPWORDS or tok in _NOT_NOUNS:
            continue
        if tok.endswith(_ADJ_SUFFIXES) and len(tok) > 5:
            continue
        if tok.endswith("ly") and len(tok) > 4 and tok not in _LY_NOUNS:
            continue
        out.append(tok)
    return out


# --- the reward -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RewardInfo:
    """One purchase's reward and its parts (the original's ``verbose`` info, always on)."""

    reward: float
    r_type: float
    query_match: bool
    category_match: bool
    title_score: float
    attr_hits: int
    n_attrs: int
    option_hits: int
    n_options: int
    price_ok: bool

    @property
    def success(self) -> bool:
        return self.reward >= 1.0 - 1e-9

    @property
    def r_att(self) -> float:
        return self.attr_hits / self.n_attrs if self.n_attrs else 0.0

    @property
    def r_option(self) -> float | None:
        return self.option_hits / self.n_options if self.n_options else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "success": self.success,
            "r_type": self.r_type,
            "query_match": self.query_match,
            "category_match": self.category_match,
            "title_score": self.title_score,
            "r_att": self.r_att,
            "attr_hits": self.attr_hits,
            "n_attrs": self.n_attrs,
            "r_option": self.r_option,
            "option_hits": self.option_hits,
            "n_options": self.n_options,
            "r_price": self.price_ok,
        }


def type_reward(product: Product, goal: Goal) -> tuple[float, bool, bool, float]:
    """``(r_type, query_match, category_match, title_score)`` of buying ``product`` for ``goal``."""
    query_match = product.query == goal.query
    bought_levels = {x.strip() for x in product.product_category.split("›")}
    goal_levels = {x.strip() for x in goal.product_category.split("›")}
    category_match = len(bought_levels & goal_levels) >= 2
    wanted = title_nouns(goal.name)
    got = set(title_nouns(product.name))
    # The original divides by the goal's noun count with repeats, so do the same.
    title_score = 0.2 if not wanted else len(got & set(wanted)) / len(wanted)
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, query_match, category_match, title_score


def attribute_hits(product: Product, goal_attrs: Iterable[str]) -> int:
    """Goal attributes that fuzzy-match a product attribute or appear in its title, bullets or description."""
    title = product.name.lower()
    bullets = " ".join(product.bullet_points).lower()
    description = product.description.lower()
    hits = 0
    for g in goal_attrs:
        if any(fuzzy_score(p, g) > FUZZ_THRESHOLD for p in product.attributes):
            hits += 1
        elif g in title or g in bullets or g in description:
            hits += 1
    return hits


def option_hits(
    chosen: Iterable[str], goal_options: Sequence[str], goal_names: Sequence[str] | None = None
) -> int:
    """Goal options that some chosen option value fuzzy-matches, after colour normalisation.

    ``goal_names`` are a synthetic goal's option names. The original hands such a goal's
    options over as ``(name, value)`` pairs, so a colour word must equal the name or the
    value to normalise the pair, and otherwise the pair is matched as its text, the name's
    words included: a chosen "x-large" misses {"size": "large"}, which the value alone hits.
    """
    picked = [normalize_color(o) for o in chosen]
    if goal_names is None:
        wanted = [normalize_color(o) for o in goal_options]
    else:
        wanted = [_pair_form(n, v) for n, v in zip(goal_names, goal_options, strict=True)]
    return sum(1 for g in wanted if any(fuzzy_score(p, g) > FUZZ_THRESHOLD for p in picked))


def _pair_form(name: str, value: str) -> str:
    for color in COLORS:
        if color in (name, value):
            return color
    return f"{name} {value}"


def get_reward(
    product: Product, goal: Goal, price: float, options: dict[str, str] | Iterable[str]
) -> RewardInfo:
    """The reward of buying ``product`` at ``price`` with the chosen ``options`` (name -> value) for ``goal``."""
    chosen = list(options.values()) if isinstance(options, dict) else list(options)
    r_type, query_match, category_match, title_score = type_reward(product, goal)
    n_attrs, n_options = len(goal.attributes), len(goal.goal_options)
    a_hits = attribute_hits(product, goal.attributes)
    o_hits = option_hits(chosen, goal.goal_options, goal.option_names)
    price_ok = price <= goal.price_upper
    reward = r_type * (a_hits + o_hits + int(price_ok)) / (n_attrs + n_options + 1)
    return RewardInfo(
        reward=reward,
        r_type=r_type,
        query_match=query_match,
        category_match=category_match,
        title_score=title_score,
        attr_hits=a_hits,
        n_attrs=n_attrs,
        option_hits=o_hits,
        n_options=n_options,
        price_ok=price_ok,
    )
