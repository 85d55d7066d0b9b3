"""Load WebShop's official data files (or the shipped catalog in the same format) and build goals.

A data directory holds::

    items_shuffle_1000.json | items_shuffle.json | items_shuffle*.json   products
    items_ins_v2_1000.json  | items_ins_v2.json  | items_ins_v2*.json    attributes (+ synthetic instructions)
    items_human_ins.json                                                 human instructions (human goals)
    reviews.json                                                         optional

Goals are built the way the original environment builds them: human goals from
``items_human_ins.json`` (or synthetic ones from the attribute file), each with a
``price_upper`` drawn from the next four $10 steps above the product's price and the
", and price lower than X.XX dollars" suffix, then shuffled with seed 233.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from agentloop.errors import AgentloopError

__all__ = [
    "SHUFFLE_SEED",
    "Catalog",
    "Goal",
    "Product",
    "Review",
    "WebShopDataError",
    "build_goals",
    "default_data_dir",
    "load_catalog",
    "parse_product",
]

SHUFFLE_SEED = 233  # the original environment's random.seed(233) before shuffling goals
PRICE_STEPS = tuple(10.0 * i for i in range(1, 100))
NO_PRICE_LIMIT = 1_000_000.0  # the original's price_upper when no two $10 steps are left
DUMMY_ATTR = "DUMMY_ATTR"  # what the original gives a product missing from the attribute file


class WebShopDataError(AgentloopError, ValueError):
    """A WebShop data file is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class Review:
    title: str
    score: str
    body: str


@dataclass(frozen=True, slots=True)
class Product:
    """One product as the environment shows it. ``name`` is the title; ``options`` maps option names to values."""

    asin: str
    name: str
    category: str
    query: str
    product_category: str
    pricing: tuple[float, ...]  # one price, or the low and high ends of a range
    price_tag: str  # as the pages show it: "$12.99" or "$10.0 to $20.0"
    options: Mapping[str, tuple[str, ...]]
    bullet_points: tuple[str, ...]
    description: str
    attributes: tuple[str, ...]
    rating: str = "N.A."
    reviews: tuple[Review, ...] = ()
    # From items_human_ins.json: (instruction, attributes, options) per recorded instruction.
    human_instructions: tuple[Mapping[str, Any], ...] = ()
    # From the attribute file: the synthetic instruction and its attributes, if any.
    synthetic_instruction: str | None = None
    synthetic_attributes: tuple[str, ...] = ()

    def option_of(self, value: str) -> str | None:
        """The option name that offers ``value`` (lower-case), if any."""
        for name, values in self.options.items():
            if value in values:
                return name
        return None

    def search_text(self) -> str:
        """What the search index holds for this product: title, description, first bullet, options."""
        option_text = ", and ".join(f"{k}: {', '.join(v)}" for k, v in self.options.items())
        first_bullet = self.bullet_points[0] if self.bullet_points else ""
        return " ".join([self.name, self.description, first_bullet, option_text]).lower()


@dataclass(frozen=True, slots=True)
class Goal:
    """A shopping goal in the original's shape. ``index`` is its position after the seed-233 shuffle."""

    asin: str
    category: str
    query: str
    name: str
    product_category: str
    instruction_text: str
    attributes: tuple[str, ...]
    price_upper: float
    goal_options: tuple[str, ...]
    weight: float = 1.0
    index: int = -1
    # Synthetic goals name their options ({"color": "black"}); human goals give values only.
    option_names: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The original goal dict (``goal_options`` is a list for human goals, a dict for synthetic ones)."""
        options: Any = list(self.goal_options)
        if self.option_names is not None:
            options = dict(zip(self.option_names, self.goal_options, strict=True))
        return {
            "asin": self.asin,
            "category": self.category,
            "query": self.query,
            "name": self.name,
            "product_category": self.product_category,
            "instruction_text": self.instruction_text,
            "attributes": list(self.attributes),
            "price_upper": self.price_upper,
            "goal_options": options,
            "weight": self.weight,
        }


@dataclass(slots=True)
class Catalog:
    """Products (in file order), their prices, and the shuffled goals."""

    products: dict[str, Product]
    prices: dict[str, float]
    goals: list[Goal]
    source: str
    human_goals: bool = True
    _engine: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.products)

    @property
    def search_engine(self) -> Any:
        """The BM25 index over the products, built on first use and shared by every environment."""
        if self._engine is None:
            from agentloop.webshop._search import SearchEngine

            self._engine = SearchEngine(self.products.values())
        return self._engine


def default_data_dir() -> Path:
    """The generated catalog shipped in the package (official format, see its README)."""
    root = resources.files("agentloop") / "data" / "webshop"
    if not isinstance(root, Path):
        raise WebShopDataError("the packaged WebShop data is not on the file system; pass --data DIR")
    return root


# --- loading --------------------------------------------------------------------------------


def load_catalog(
    data: str | Path | None = None,
    *,
    human_goals: bool = True,
    num_products: int | None = None,
    seed: int = SHUFFLE_SEED,
) -> Catalog:
    """Load products and build goals from a data directory (default: the shipped catalog).

    ``data`` may also be a products file; the other files are looked up beside it.
    ``num_products`` keeps the first N products, as the original's ``num_products`` does.
    ``seed`` drives the price draws (ranges, ``price_upper``); goals are always shuffled
    with 233, as in the original, whose price draws are not seeded at all.
    """
    root = Path(data) if data is not None else default_data_dir()
    products_file, root = _products_file(root)
    suffix = products_file.stem[len("items_shuffle") :]
    attrs_file = _pick(
        root,
        [f"items_ins_v2{suffix}.json", "items_ins_v2.json", "items_ins_v2_1000.json"],
        "items_ins_v2*.json",
    )
    human_file = root / "items_human_ins.json"
    if human_goals and not human_file.is_file():
        raise WebShopDataError(
            f"no items_human_ins.json in {root}: human goals need it (see docs/webshop.md for how to get "
            "the official files), or load synthetic goals with human_goals=False"
        )
    raw_products = _read_json(products_file)
    if not isinstance(raw_products, list):
        raise WebShopDataError(f"{products_file} must hold a JSON list of product records")
    attributes = _read_json(attrs_file) if attrs_file is not None else {}
    human = _read_json(human_file) if human_goals else {}
    reviews_file = root / "reviews.json"
    reviews = _load_reviews(reviews_file) if reviews_file.is_file() else {}

    if num_products is not None:
        raw_products = raw_products[:num_products]
    products: dict[str, Product] = {}
    for raw in raw_products:
        asin = str(raw.get("asin", ""))
        if asin == "nan" or not asin or len(asin) > 10 or asin in products:
            continue  # the original skips these too
        try:
            products[asin] = parse_product(raw, attributes.get(asin), human.get(asin), reviews.get(asin))
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise WebShopDataError(f"{products_file}: product {asin} is malformed: {exc!r}") from exc
    if not products:
        raise WebShopDataError(f"{products_file} holds no products")

    rng = random.Random(seed)
    prices = {asin: _draw_price(p.pricing, rng) for asin, p in products.items()}
    goals = build_goals(products.values(), prices, human_goals=human_goals, rng=rng)
    return Catalog(
        products=products, prices=prices, goals=goals, source=str(products_file), human_goals=human_goals
    )


def parse_product(
    raw: Mapping[str, Any],
    attributes: Mapping[str, Any] | None = None,
    human: Sequence[Mapping[str, Any]] | None = None,
    reviews: tuple[tuple[Review, ...], str] | None = None,
) -> Product:
    """One ``items_shuffle*.json`` record, with its attribute-file entry and human instructions."""
    pricing, price_tag = _parse_pricing(raw.get("pricing"))
    options: dict[str, tuple[str, ...]] = {}
    for name, contents in (raw.get("customization_options") or {}).items():
        if contents is None:
            continue
        options[name.lower()] = tuple(c["value"].strip().replace("/", " | ").lower() for c in contents)
    bullets = raw.get("small_description") or []
    bullet_points = tuple(bullets) if isinstance(bullets, list) else (str(bullets),)
    attrs = (attributes or {}).get("attributes")
    product_reviews, rating = reviews if reviews is not None else ((), raw.get("average_rating") or "N.A.")
    return Product(
        asin=str(raw["asin"]),
        name=str(raw["name"]),
        category=str(raw.get("category", "")),
        query=str(raw.get("query", "")).lower().strip(),
        product_category=str(raw.get("product_category", "")),
        pricing=pricing,
        price_tag=price_tag,
        options=options,
        bullet_points=bullet_points,
        description=str(raw.get("full_description") or ""),
        attributes=tuple(attrs) if attrs else (DUMMY_ATTR,),
        rating=str(rating),
        reviews=product_reviews,
        human_instructions=tuple(human or ()),
        synthetic_instruction=(attributes or {}).get("instruction"),
        synthetic_attributes=tuple((attributes or {}).get("instruction_attributes") or ()),
    )


def build_goals(
    products: Sequence[Product] | Any,
    prices: Mapping[str, float],
    *,
    human_goals: bool = True,
    rng: random.Random | None = None,
) -> list[Goal]:
    """Goals in the original's order, then shuffled with seed 233; ``index`` is the shuffled position."""
    rng = rng or random.Random(SHUFFLE_SEED)
    goals: list[Goal] = []
    for p in products:
        if human_goals:
            for ins in p.human_instructions:
                attrs = tuple(ins.get("instruction_attributes") or ())
                if not attrs:
                    continue  # the original skips instructions without attributes
                upper, suffix = _price_upper(prices[p.asin], rng)
                goals.append(
                    _goal(
                        p,
                        str(ins["instruction"]).strip(".") + suffix,
                        attrs,
                        upper,
                        tuple(ins.get("instruction_options") or ()),
                    )
                )
        elif p.synthetic_instruction:
            upper, suffix = _price_upper(prices[p.asin], rng)
            names = sorted(p.options)
            for combo in itertools.product(*(p.options[n] for n in names)):
                option_text = ", and ".join(f"{k}: {v}" for k, v in zip(names, combo, strict=True))
                option_text = f" with {option_text}" if option_text else ""
                text = f"{p.synthetic_instruction}{option_text}{suffix}"
                goals.append(_goal(p, text, p.synthetic_attributes, upper, tuple(combo), tuple(names)))
    if not human_goals:
        # The original weighs synthetic goals by how rare their attributes are.
        counts: dict[str, int] = {}
        for g in goals:
            for a in g.attributes:
                counts[a] = counts.get(a, 0) + 1
        goals = [
            _replace(g, weight=sum(1.0 / counts[a] for a in g.attributes) / len(g.attributes)) for g in goals
        ]
    random.Random(SHUFFLE_SEED).shuffle(goals)
    return [_replace(g, index=i) for i, g in enumerate(goals)]


# --- internals ------------------------------------------------------------------------------


def _goal(
    p: Product,
    text: str,
    attrs: tuple[str, ...],
    upper: float,
    options: tuple[str, ...],
    names: tuple[str, ...] | None = None,
) -> Goal:
    return Goal(
        asin=p.asin,
        category=p.category,
        query=p.query,
        name=p.name,
        product_category=p.product_category,
        instruction_text=text,
        attributes=attrs,
        price_upper=upper,
        goal_options=options,
        option_names=names,
    )


def _replace(g: Goal, **changes: Any) -> Goal:
    d = {f: getattr(g, f) for f in Goal.__dataclass_fields__}
    d.update(changes)
    return Goal(**d)


def _price_upper(price: float, rng: random.Random) -> tuple[float, str]:
    steps = [s for s in PRICE_STEPS if s > price][:4]
    if len(steps) < 2:
        return NO_PRICE_LIMIT, ""
    _, upper = sorted(rng.sample(steps, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def _draw_price(pricing: tuple[float, ...], rng: random.Random) -> float:
    # A range's price is drawn once per load, as the original does.
    return pricing[0] if len(pricing) == 1 else rng.uniform(pricing[0], pricing[1])


def _parse_pricing(pricing: Any) -> tuple[tuple[float, ...], str]:
    if not pricing:
        return (100.0,), "$100.0"
    if isinstance(pricing, list | tuple):  # already parsed (a cached product file)
        values = tuple(float(x) for x in pricing)
    else:
        values = tuple(float(Decimal(re.sub(r"[^\d.]", "", part))) for part in str(pricing).split("$")[1:])
    if not values:
        return (100.0,), "$100.0"
    if len(values) == 1:
        return values, f"${values[0]}"
    return values[:2], f"${values[0]} to ${values[1]}"


def _products_file(root: Path) -> tuple[Path, Path]:
    if root.is_file():
        return root, root.parent
    if not root.is_dir():
        raise WebShopDataError(f"WebShop data not found: {root} is neither a directory nor a products file")
    found = _pick(root, ["items_shuffle_1000.json", "items_shuffle.json"], "items_shuffle*.json")
    if found is None:
        raise WebShopDataError(
            f"no items_shuffle*.json in {root}; see docs/webshop.md for how to get the official WebShop files"
        )
    return found, root


def _pick(root: Path, preferred: list[str], pattern: str) -> Path | None:
    for name in preferred:
        if (root / name).is_file():
            return root / name
    matches = sorted(root.glob(pattern))
    if len(matches) > 1:
        raise WebShopDataError(
            f"{root} holds several {pattern} files ({', '.join(m.name for m in matches)}); pass the products file itself"
        )
    return matches[0] if matches else None


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise WebShopDataError(f"{path} is not valid JSON: {exc}") from exc


def _load_reviews(path: Path) -> dict[str, tuple[tuple[Review, ...], str]]:
    out: dict[str, tuple[tuple[Review, ...], str]] = {}
    for entry in _read_json(path):
        items = tuple(
            Review(
                title=str(r.get("title", "")),
                score=str(r.get("score", r.get("stars", ""))),
                body=str(r.get("body", r.get("review", ""))),
            )
            for r in entry.get("reviews") or ()
        )
        out[str(entry["asin"])] = (items, str(entry.get("average_rating", "N.A.")))
    return out
