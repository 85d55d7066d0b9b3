"""WebShop (Yao et al., 2022) in text mode: official data format, BM25 search, the official reward.

Load a catalog (the shipped one, or the official files with ``data=DIR``), start an
environment on one of its goals, and act with ``search[...]`` / ``click[...]``::

    from agentloop.webshop import WebShopEnv, load_catalog

    catalog = load_catalog()            # or load_catalog("path/to/webshop/data")
    env = WebShopEnv(catalog)
    print(env.reset(0))                 # the search page with goal 0's instruction
    step = env.step("search[leak proof travel bottles]")
"""

from agentloop.webshop._agent import (
    VERIFIERS,
    Outcome,
    VerifierName,
    WebShopTask,
    judge_purchase,
    load_webshop_tasks,
    oracle_verdict,
    parse_react,
    task_outcome,
    webshop_metrics,
)
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
from agentloop.webshop._policies import POLICIES, QUERY_PATTERN, PolicyName, resolve_policy
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
    "POLICIES",
    "PRODUCT_WINDOW",
    "SEARCH_RETURN_N",
    "SHUFFLE_SEED",
    "SUB_PAGES",
    "VERIFIERS",
    "Catalog",
    "Episode",
    "Goal",
    "Outcome",
    "Page",
    "PolicyName",
    "Product",
    "Purchase",
    "QUERY_PATTERN",
    "Review",
    "RewardInfo",
    "SearchEngine",
    "StepResult",
    "Turn",
    "VerifierName",
    "WebShopDataError",
    "WebShopEnv",
    "WebShopTask",
    "build_goals",
    "default_data_dir",
    "expert_search_query",
    "fuzzy_score",
    "get_reward",
    "judge_purchase",
    "load_catalog",
    "load_webshop_tasks",
    "normalize_color",
    "oracle_verdict",
    "parse_action",
    "parse_product",
    "parse_react",
    "resolve_policy",
    "run_expert",
    "task_outcome",
    "title_nouns",
    "type_reward",
    "webshop_metrics",
]
