"""The text-mode WebShop: pages, ``search[...]`` / ``click[...]`` actions, a step limit, and the reward.

Pages follow the original site: the search page, results (10 of the top 50 per page),
an item page with its options, its Description / Features / Reviews / Attributes
sub-pages, and the page after Buy Now. Clickables are shown in square brackets and
matched case-insensitively. An action that cannot be taken is answered with an
observation that says why, followed by the unchanged page; it costs a step but
never ends the episode.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentloop.webshop._catalog import Catalog, Goal, Product
from agentloop.webshop._reward import RewardInfo, get_reward
from agentloop.webshop._search import SEARCH_RETURN_N

__all__ = [
    "BACK_TO_SEARCH",
    "BUY_NOW",
    "DEFAULT_MAX_STEPS",
    "NEXT_PAGE",
    "PREV_PAGE",
    "PRODUCT_WINDOW",
    "SUB_PAGES",
    "Page",
    "Purchase",
    "StepResult",
    "WebShopEnv",
    "parse_action",
]

PRODUCT_WINDOW = 10
DEFAULT_MAX_STEPS = 15
BUY_NOW = "Buy Now"
NEXT_PAGE = "Next >"
PREV_PAGE = "< Prev"
BACK_TO_SEARCH = "Back to Search"
SUB_PAGES = ("Description", "Features", "Reviews", "Attributes")

Page = Literal["search", "results", "item", "description", "features", "reviews", "attributes", "done"]
_ACTION = re.compile(r"^\s*([A-Za-z_]+)\s*\[(.*)\]\s*$", re.DOTALL)


def parse_action(action: str) -> tuple[str, str | None]:
    """``"click[Buy Now]"`` -> ``("click", "Buy Now")``; text without brackets -> ``(text, None)``."""
    m = _ACTION.match(action)
    if m is None:
        return action.strip(), None
    return m.group(1).lower(), m.group(2).strip()


@dataclass(frozen=True, slots=True)
class Purchase:
    """What was bought, as the shopper saw it: the item page, the chosen options and the listed price.

    ``price`` is the price the reward uses (drawn once from a price range); goal-free
    verifiers should read ``price_tag``, which is what the page showed.
    """

    asin: str
    name: str
    price_tag: str
    price: float
    options: Mapping[str, str]
    available_options: Mapping[str, tuple[str, ...]]
    bullet_points: tuple[str, ...]
    description: str
    attributes: tuple[str, ...] | None  # only when the Attributes page was available

    def to_dict(self) -> dict[str, Any]:
        return {
            "asin": self.asin,
            "name": self.name,
            "price_tag": self.price_tag,
            "price": self.price,
            "options": dict(self.options),
            "available_options": {k: list(v) for k, v in self.available_options.items()},
            "bullet_points": list(self.bullet_points),
            "description": self.description,
            "attributes": list(self.attributes) if self.attributes is not None else None,
        }


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: the next observation, the reward (non-zero only at Buy Now), and whether the episode ended."""

    observation: str
    reward: float = 0.0
    done: bool = False
    valid: bool = True
    message: str = ""  # why an action was invalid, or why the episode ended
    purchase: Purchase | None = None
    reward_info: RewardInfo | None = None


@dataclass(slots=True)
class _State:
    page: Page = "search"
    keywords: str = ""
    results: list[str] = field(default_factory=list)
    result_page: int = 1
    asin: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    done: bool = False


class WebShopEnv:
    """One shopper's session over a :class:`Catalog`. Call :meth:`reset` with a goal, then :meth:`step`.

    ``max_steps`` counts every action, invalid ones included; reaching it ends the
    episode with reward 0. ``show_attrs`` adds the Attributes button to item pages
    (the original hides it by default). ``show_reward`` prints the score on the page
    after Buy Now, as the original site does; it is off so that an agent's trajectory
    never carries the hidden goal's score.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_steps: int = DEFAULT_MAX_STEPS,
        show_attrs: bool = False,
        show_reward: bool = False,
    ):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.catalog = catalog
        self.max_steps = max_steps
        self.show_attrs = show_attrs
        self.show_reward = show_reward
        self.goal: Goal | None = None
        self._s = _State()

    # --- public ---------------------------------------------------------------------------

    def reset(self, goal: Goal | int) -> str:
        """Start a session for ``goal`` (a :class:`Goal` or an index into ``catalog.goals``); returns the search page."""
        self.goal = self.catalog.goals[goal] if isinstance(goal, int) else goal
        self._s = _State()
        return self.observation

    @property
    def instruction(self) -> str:
        return self._goal().instruction_text

    @property
    def page(self) -> Page:
        return self._s.page

    @property
    def steps(self) -> int:
        return self._s.steps

    @property
    def done(self) -> bool:
        return self._s.done

    @property
    def product(self) -> Product | None:
        """The product whose pages are open, if any."""
        return self.catalog.products[self._s.asin] if self._s.asin is not None else None

    @property
    def selected_options(self) -> dict[str, str]:
        """Options chosen on the open product so far (name -> value)."""
        return dict(self._s.options)

    @property
    def has_search_bar(self) -> bool:
        return self._s.page == "search" and not self._s.done

    @property
    def observation(self) -> str:
        return self._render()

    def clickables(self) -> list[str]:
        """The clickables of the current page, as displayed (match them case-insensitively)."""
        s = self._s
        if s.done:
            return []
        if s.page == "search":
            return []
        if s.page == "results":
            out = [BACK_TO_SEARCH]
            if s.result_page > 1:
                out.append(PREV_PAGE)
            if s.result_page * PRODUCT_WINDOW < len(s.results):
                out.append(NEXT_PAGE)
            return out + self._visible_asins()
        if s.page == "item":
            product = self._product()
            values = [v for vs in product.options.values() for v in vs]
            subs = [p for p in SUB_PAGES if p != "Attributes" or self.show_attrs]
            return [BACK_TO_SEARCH, PREV_PAGE, *values, *subs, BUY_NOW]
        return [BACK_TO_SEARCH, PREV_PAGE]  # a sub-page

    def available_actions(self) -> dict[str, Any]:
        """``{"has_search_bar": bool, "clickables": [...]}``, as the original text environment reports."""
        return {"has_search_bar": self.has_search_bar, "clickables": self.clickables()}

    def step(self, action: str) -> StepResult:
        """Take one action. Never raises for a bad action: the observation says what was wrong."""
        s = self._s
        if s.done:
            return StepResult(self._render(), done=True, valid=False, message="the episode is over")
        s.steps += 1
        result = self._act(action)
        if not result.done and s.steps >= self.max_steps:
            s.done = True
            note = f"Step limit of {self.max_steps} reached: the episode ends without a purchase."
            return StepResult(
                f"{result.observation}\n\n{note}",
                0.0,
                True,
                result.valid,
                note if result.valid else result.message,
            )
        return result

    # --- actions --------------------------------------------------------------------------

    def _act(self, action: str) -> StepResult:
        name, arg = parse_action(action)
        if arg is None:
            return self._invalid(
                f"'{_clip(action)}' is not an action. Use search[keywords] or click[a bracketed item]."
            )
        if name == "search":
            if not self.has_search_bar:
                return self._invalid(
                    "search is only possible on the search page; click[Back to Search] first."
                )
            if not arg:
                return self._invalid("search[] needs keywords.")
            return self._search(arg)
        if name == "click":
            return self._click(arg)
        if name == "think":
            return StepResult("OK.\n\n" + self._render())
        return self._invalid(f"unknown action '{name}'. Use search[keywords] or click[a bracketed item].")

    def _search(self, keywords: str) -> StepResult:
        s = self._s
        s.keywords = keywords
        s.results = self.catalog.search_engine.search(keywords, SEARCH_RETURN_N)
        s.result_page = 1
        s.asin = None
        s.options = {}
        s.page = "results"
        return StepResult(self._render())

    def _click(self, arg: str) -> StepResult:
        s = self._s
        key = arg.lower()
        if s.page == "search":
            if key == "search":
                return self._invalid("type your keywords with search[keywords].")
            return self._invalid("nothing to click on the search page; use search[keywords].")
        lookup = {c.lower(): c for c in self.clickables()}
        target = lookup.get(key)
        if target is None:
            shown = ", ".join(f"[{c}]" for c in self.clickables())
            return self._invalid(f"'{_clip(arg)}' is not a clickable on this page. Clickables: {shown}.")
        if target == BACK_TO_SEARCH:
            self._s = _State(steps=s.steps)
            return StepResult(self._render())
        if s.page == "results":
            if target == NEXT_PAGE:
                s.result_page += 1
            elif target == PREV_PAGE:
                s.result_page -= 1
            else:  # a product
                s.asin = target
                s.options = {}
                s.page = "item"
            return StepResult(self._render())
        if s.page == "item":
            if target == PREV_PAGE:
                s.page = "results"
            elif target == BUY_NOW:
                return self._buy()
            elif target in SUB_PAGES:
                s.page = target.lower()  # type: ignore[assignment]
            else:  # an option value
                name = self._product().option_of(target)
                if name is not None:
                    s.options[name] = target
            return StepResult(self._render())
        # a sub-page: < Prev goes back to the item
        s.page = "item"
        return StepResult(self._render())

    def _buy(self) -> StepResult:
        s = self._s
        product = self._product()
        price = self.catalog.prices[product.asin]
        info = get_reward(product, self._goal(), price, s.options)
        purchase = Purchase(
            asin=product.asin,
            name=product.name,
            price_tag=product.price_tag,
            price=price,
            options=dict(s.options),
            available_options=dict(product.options),
            bullet_points=product.bullet_points,
            description=product.description,
            attributes=product.attributes if self.show_attrs else None,
        )
        s.page = "done"
        s.done = True
        return StepResult(self._render(info), info.reward, True, purchase=purchase, reward_info=info)

    def _invalid(self, why: str) -> StepResult:
        return StepResult(f"Invalid action: {why}\n\n{self._render()}", valid=False, message=why)

    # --- rendering ------------------------------------------------------------------------

    def _render(self, info: RewardInfo | None = None) -> str:
        s = self._s
        if s.page == "search":
            return f"WebShop\nInstruction:\n{self._goal().instruction_text}\n[Search]"
        if s.page == "results":
            lines = [f"[{BACK_TO_SEARCH}]", f"Page {s.result_page} (Total results: {len(s.results)})"]
            if s.result_page > 1:
                lines.append(f"[{PREV_PAGE}]")
            if s.result_page * PRODUCT_WINDOW < len(s.results):
                lines.append(f"[{NEXT_PAGE}]")
            if not s.results:
                lines.append(f"No products match '{s.keywords}'.")
            for asin in self._visible_asins():
                p = self.catalog.products[asin]
                lines += [f"[{asin}]", p.name, p.price_tag]
            return "\n".join(lines)
        product = self._product()
        if s.page == "item":
            lines = [f"[{BACK_TO_SEARCH}]", f"[{PREV_PAGE}]"]
            for name, values in product.options.items():
                lines.append(f"{name}: " + " ".join(f"[{v}]" for v in values))
            if s.options:
                lines.append("Selected: " + ", ".join(f"{k}: {v}" for k, v in s.options.items()))
            lines += [product.name, f"Price: {product.price_tag}", f"Rating: {product.rating}"]
            lines += [f"[{p}]" for p in SUB_PAGES if p != "Attributes" or self.show_attrs]
            lines.append(f"[{BUY_NOW}]")
            return "\n".join(lines)
        head = [f"[{BACK_TO_SEARCH}]", f"[{PREV_PAGE}]"]
        if s.page == "description":
            return "\n".join([*head, product.description or "(no description)"])
        if s.page == "features":
            return "\n".join([*head, *(product.bullet_points or ("(no features listed)",))])
        if s.page == "reviews":
            body = [f"{r.title} ({r.score}/5): {r.body}" for r in product.reviews] or ["(no reviews yet)"]
            return "\n".join([*head, f"Rating: {product.rating}", *body])
        if s.page == "attributes":
            return "\n".join([*head, *product.attributes])
        # done
        chosen = ", ".join(f"{k}: {v}" for k, v in s.options.items()) or "none"
        lines = [
            "Thank you for shopping with us!",
            f"Purchased: {product.asin} {product.name}",
            f"Options: {chosen}",
        ]
        lines.append(f"Price: {product.price_tag}")
        if self.show_reward and info is not None:
            lines.append(f"Your score (min 0.0, max 1.0): {info.reward:.4f}")
        return "\n".join(lines)

    def _visible_asins(self) -> list[str]:
        s = self._s
        start = (s.result_page - 1) * PRODUCT_WINDOW
        return s.results[start : start + PRODUCT_WINDOW]

    def _product(self) -> Product:
        assert self._s.asin is not None
        return self.catalog.products[self._s.asin]

    def _goal(self) -> Goal:
        if self.goal is None:
            raise RuntimeError("call reset(goal) before using the environment")
        return self.goal


def _clip(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."
