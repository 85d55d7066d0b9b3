"""WebShop (Yao et al., 2022) in text mode: official data format, BM25 search, the official reward.

Load a catalog (the shipped one, or the official files with ``data=DIR``), start an
environment on one of its goals, and act with ``search[...]`` / ``click[...]``::

    from agentloop.webshop import WebShopEnv, load_catalog

    catalog = load_catalog()            # or load_catalog("path/to/webshop/data")
    env = WebShopEnv(catalog)
    print(env.reset(0))                 # the search page with goal 0's instruction
    step = env.step("search[leak proof travel bottles]")

This package is the world: it knows no agent. The WebShop agent (the task, its prompt
formats, policies and verifiers) is on the suite side, in ``agentloop.suites.webshop``.
"""

from agentloop.webshop._catalog import (
    SHUFFLE_SEED,
    Catalog,
    Goal,
    Product,
    Review,
    WebShopDataError,
    build_goals,
    default_data_dir,
    load_catalog,
    parse_product,
)
from agentloop.webshop._env import (
    BACK_TO_SEARCH,
    BUY_NOW,
    DEFAULT_MAX_STEPS,
    NEXT_PAGE,
    PREV_PAGE,
    PRODUCT_WINDOW,
    SUB_PAGES,
    Page,
    Purchase,
    StepResult,
    WebShopEnv,
    parse_action,
)
from agentloop.webshop._expert import Episode, Turn, expert_search_query, run_expert
from agentloop.webshop._reward import (
    COLORS,
    FUZZ_THRESHOLD,
    RewardInfo,
    fuzzy_score,
    get_reward,
    normalize_color,
    title_nouns,
    type_reward,
)
from agentloop.webshop._search import SEARCH_RETURN_N, SearchEngine

__all__ = [
    "BACK_TO_SEARCH",
    "BUY_NOW",
    "COLORS",
    "DEFAULT_MAX_STEPS",
    "FUZZ_THRESHOLD",
    "NEXT_PAGE",
    "PREV_PAGE",
    "PRODUCT_WINDOW",
    "SEARCH_RETURN_N",
    "SHUFFLE_SEED",
    "SUB_PAGES",
    "Catalog",
    "Episode",
    "Goal",
    "Page",
    "Product",
    "Purchase",
    "Review",
    "RewardInfo",
    "SearchEngine",
    "StepResult",
    "Turn",
    "WebShopDataError",
    "WebShopEnv",
    "build_goals",
    "default_data_dir",
    "expert_search_query",
    "fuzzy_score",
    "get_reward",
    "load_catalog",
    "normalize_color",
    "parse_action",
    "parse_product",
    "run_expert",
    "title_nouns",
    "type_reward",
]
