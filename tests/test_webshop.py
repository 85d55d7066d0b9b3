"""WebShop environment: data loading, goals, search, pages and actions, the step limit, the expert."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from agentloop.webshop import (
    BUY_NOW,
    NEXT_PAGE,
    PREV_PAGE,
    WebShopDataError,
    WebShopEnv,
    build_goals,
    default_data_dir,
    get_reward,
    load_catalog,
    parse_action,
    parse_product,
    run_expert,
)
from agentloop.webshop import generate as gen

REFERENCE = Path(
    os.environ.get("AGENTLOOP_WEBSHOP_REFERENCE", Path(__file__).resolve().parents[2] / "shared/data/webshop")
)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture
def env(catalog):
    e = WebShopEnv(catalog)
    e.reset(0)
    return e


def _record(asin: str, **kw) -> dict:
    rec = {
        "asin": asin,
        "name": f"Product {asin}",
        "category": "beauty",
        "query": "Refillable Containers ",
        "product_category": "Beauty › Bags › Containers",
        "pricing": "$12.99",
        "customization_options": {"Color": [{"value": "Light/Pink", "image": None}]},
        "small_description": ["bullet one"],
        "full_description": "desc",
        "images": [None],
    }
    rec.update(kw)
    return rec


def _write(tmp: Path, products, attrs, human=None, prefix="_1000") -> Path:
    (tmp / f"items_shuffle{prefix}.json").write_text(json.dumps(products))
    (tmp / f"items_ins_v2{prefix}.json").write_text(json.dumps(attrs))
    if human is not None:
        (tmp / "items_human_ins.json").write_text(json.dumps(human))
    return tmp


# --- data -------------------------------------------------------------------------------------


def test_shipped_catalog_size_and_shape(catalog):
    assert 300 <= len(catalog) <= 600
    assert len(catalog.goals) >= 100
    assert {p.category for p in catalog.products.values()} == {
        "beauty",
        "fashion",
        "garden",
        "grocery",
        "electronics",
    }
    assert sum(f.stat().st_size for f in default_data_dir().glob("*.json")) < 2_000_000
    for g in catalog.goals:
        assert g.instruction_text.endswith(f", and price lower than {g.price_upper:.2f} dollars")
        assert g.attributes and g.asin in catalog.products
        price = catalog.prices[g.asin]
        assert g.price_upper in [s for s in (10.0 * i for i in range(1, 100)) if s > price][1:4]
    assert [g.index for g in catalog.goals] == list(range(len(catalog.goals)))
    assert set(catalog.goals[0].to_dict()) == {
        "asin", "category", "query", "name", "product_category", "instruction_text",
        "attributes", "price_upper", "goal_options", "weight",
    }  # fmt: skip


def test_goal_shape_matches_the_recorded_human_goals(catalog):
    examples = REFERENCE / "human_goal_examples.json"
    if not examples.is_file():
        pytest.skip("the reference WebShop files are not at hand")
    for ex in json.loads(examples.read_text()):
        assert set(ex) == set(catalog.goals[0].to_dict())


def test_goals_are_shuffled_with_seed_233(catalog):
    # One goal per product here, so product order is the order before the shuffle.
    order = {asin: i for i, asin in enumerate(catalog.products)}
    original = sorted(catalog.goals, key=lambda g: order[g.asin])
    expected = list(original)
    random.Random(233).shuffle(expected)
    assert [g.asin for g in expected] == [g.asin for g in catalog.goals]


def test_generator_is_deterministic_and_matches_the_committed_files():
    files, roles = gen.generate(0)
    for name, content in files.items():
        assert gen.dump(content) == (default_data_dir() / name).read_text(encoding="utf-8"), name
    again, _ = gen.generate(0)
    assert again == files
    other, _ = gen.generate(1)
    assert other["items_shuffle.json"] != files["items_shuffle.json"]
    kinds = {k for k, _ in roles.values()}
    assert kinds == {"goal", "attr_miss", "over_price", "option_miss", "filler"}


def test_generator_check_passes_on_the_committed_files():
    _, roles = gen.generate(0)
    report = gen.check(default_data_dir(), roles)
    assert report["goals"] == 116 and report["checked"] > 300


def test_generated_attributes_come_from_the_real_attribute_file(catalog):
    real = REFERENCE / "items_ins_v2_1000.json"
    if not real.is_file():
        pytest.skip("the reference WebShop files are not at hand")
    vocab = {a for entry in json.loads(real.read_text()).values() for a in entry["attributes"]}
    used = {a for p in catalog.products.values() for a in p.attributes}
    assert used <= vocab, used - vocab


def test_parse_official_record_fields():
    p = parse_product(
        _record("B1", pricing="$10.00 - $20.00", small_description="one string"),
        {"attributes": ["bpa free"]},
    )
    assert p.pricing == (10.0, 20.0) and p.price_tag == "$10.0 to $20.0"
    assert p.options == {"color": ("light | pink",)}
    assert p.bullet_points == ("one string",) and p.query == "refillable containers"
    assert p.attributes == ("bpa free",)
    bare = parse_product(_record("B2", pricing=None, customization_options=None))
    assert bare.pricing == (100.0,) and bare.price_tag == "$100.0"
    assert bare.attributes == ("DUMMY_ATTR",) and bare.options == {}


def test_load_official_layout_with_human_goals(tmp_path):
    products = [_record("B1"), _record("B1"), _record("nan"), _record("B2", pricing="$995.00"), _record("B3")]
    human = {
        "B1": [
            {
                "instruction": "i need pink bottles.",
                "instruction_attributes": ["bpa free"],
                "instruction_options": ["pink"],
            }
        ],
        "B2": [
            {"instruction": "i need a pricey one", "instruction_attributes": ["x"], "instruction_options": []}
        ],
        "B3": [{"instruction": "no attributes", "instruction_attributes": [], "instruction_options": []}],
    }
    cat = load_catalog(_write(tmp_path, products, {"B1": {"attributes": ["bpa free"]}}, human))
    assert list(cat.products) == ["B1", "B2", "B3"]  # duplicates and 'nan' dropped
    by_asin = {g.asin: g for g in cat.goals}
    assert set(by_asin) == {"B1", "B2"}  # an instruction without attributes is skipped
    assert by_asin["B1"].instruction_text.startswith("i need pink bottles, and price lower than ")
    assert by_asin["B2"].price_upper == 1_000_000 and by_asin["B2"].instruction_text == "i need a pricey one"
    assert cat.source.endswith("items_shuffle_1000.json")
    assert load_catalog(tmp_path / "items_shuffle_1000.json", num_products=1).products.keys() == {"B1"}


def test_load_synthetic_goals(tmp_path):
    products = [
        _record(
            "B1",
            customization_options={"size": [{"value": "S"}, {"value": "M"}], "color": [{"value": "Red"}]},
        )
    ]
    attrs = {
        "B1": {
            "attributes": ["bpa free"],
            "instruction": "Find me bpa free bottles",
            "instruction_attributes": ["bpa free"],
        }
    }
    cat = load_catalog(_write(tmp_path, products, attrs), human_goals=False)
    texts = sorted(g.instruction_text for g in cat.goals)
    assert texts[0].startswith("Find me bpa free bottles with color: red, and size: m, and price lower than")
    assert len(texts) == 2
    assert cat.goals[0].to_dict()["goal_options"].keys() == {"color", "size"}


def test_missing_files_are_explained(tmp_path):
    with pytest.raises(WebShopDataError, match="items_shuffle"):
        load_catalog(tmp_path)
    _write(tmp_path, [_record("B1")], {})
    with pytest.raises(WebShopDataError, match="items_human_ins.json"):
        load_catalog(tmp_path)
    with pytest.raises(WebShopDataError, match="neither"):
        load_catalog(tmp_path / "nope")


def test_build_goals_is_deterministic(catalog):
    a = build_goals(catalog.products.values(), catalog.prices, rng=random.Random(5))
    b = build_goals(catalog.products.values(), catalog.prices, rng=random.Random(5))
    assert a == b


# --- search -----------------------------------------------------------------------------------


def test_search_ranks_the_exact_title_first_and_caps_at_50(catalog):
    engine = catalog.search_engine
    target = next(iter(catalog.products.values()))
    assert engine.search(target.name)[0] in {a for a, p in catalog.products.items() if p.name == target.name}
    assert len(engine.search("the and for with black size pack")) == 50
    assert engine.search("") == [] and engine.search("!!!") == []
    assert engine.search('"OR" AND (NEAR* ^x') is not None  # FTS5 syntax is treated as words
    assert engine.search("zzzzqqq") == []


# --- pages and actions ------------------------------------------------------------------------


def test_search_page(env):
    obs = env.observation
    assert obs.startswith("WebShop\nInstruction:\n") and env.instruction in obs and "[Search]" in obs
    assert env.available_actions() == {"has_search_bar": True, "clickables": []}


def test_paging_through_results(env):
    r = env.step("search[black size pack color]")
    assert r.valid and "Page 1 (Total results: 50)" in r.observation
    assert f"[{NEXT_PAGE}]" in r.observation and f"[{PREV_PAGE}]" not in r.observation
    first_page = env.clickables()[-10:]
    assert len(first_page) == 10
    for page in range(2, 6):
        r = env.step("click[Next >]")
        assert f"Page {page} (Total results: 50)" in r.observation
    assert NEXT_PAGE not in env.clickables()
    bad = env.step("click[Next >]")
    assert not bad.valid and bad.observation.startswith("Invalid action:") and "Page 5" in bad.observation
    for _ in range(4):
        r = env.step("click[< Prev]")
    assert "Page 1 " in r.observation and env.clickables()[-10:] == first_page
    assert not env.step("click[< Prev]").valid


def test_item_page_options_and_sub_pages(env, catalog):
    env.step("search[travel bottles]")
    asin = env.clickables()[-1]
    product = catalog.products[asin]
    r = env.step(f"click[{asin.lower()}]")  # clicks are case-insensitive
    assert (
        env.page == "item"
        and product.name in r.observation
        and f"Price: {product.price_tag}" in r.observation
    )
    assert "[Description]" in r.observation and "[Attributes]" not in r.observation
    name, values = next(iter(product.options.items()))
    r = env.step(f"click[{values[-1].upper()}]")
    assert f"Selected: {name}: {values[-1]}" in r.observation
    for page, text in (
        ("Description", product.description),
        ("Features", product.bullet_points[0]),
        ("Reviews", "Rating:"),
    ):
        r = env.step(f"click[{page}]")
        assert env.page == page.lower() and text in r.observation
        assert not env.step("click[Buy Now]").valid  # not on a sub-page
        r = env.step("click[< Prev]")
        assert env.page == "item" and f"Selected: {name}: {values[-1]}" in r.observation
    assert not env.step("click[Attributes]").valid
    env.step("click[< Prev]")
    assert env.page == "results" and asin in env.clickables()
    r = env.step("click[Back to Search]")
    assert env.page == "search" and env.has_search_bar


def test_attributes_page_when_enabled(catalog):
    env = WebShopEnv(catalog, show_attrs=True, max_steps=50)
    env.reset(0)
    env.step("search[travel bottles]")
    asin = env.clickables()[-1]
    env.step(f"click[{asin}]")
    r = env.step("click[Attributes]")
    assert all(a in r.observation for a in catalog.products[asin].attributes)


@pytest.mark.parametrize(
    ("action", "why"),
    [
        ("buy it now", "is not an action"),
        ("click[Search]", "search[keywords]"),
        ("click[B000000000]", "nothing to click"),
        ("search[]", "needs keywords"),
        ("jump[high]", "unknown action"),
    ],
)
def test_invalid_actions_on_the_search_page(env, action, why):
    r = env.step(action)
    assert not r.valid and not r.done and r.reward == 0
    assert r.observation.startswith("Invalid action:") and why in r.observation
    assert env.page == "search" and env.steps == 1


def test_invalid_actions_elsewhere_say_what_is_clickable(env):
    env.step("search[travel bottles]")
    r = env.step("search[again]")
    assert not r.valid and "Back to Search" in r.message
    r = env.step("click[not here]")
    assert not r.valid and "Clickables: [Back to Search]" in r.observation
    assert env.step("think[I should open the first one]").observation.startswith("OK.")


def test_buy_now_scores_the_purchase_without_showing_the_score(catalog):
    env = WebShopEnv(catalog)
    g = catalog.goals[3]
    env.reset(g)
    env.step(f"search[{g.name}]")
    env.step(f"click[{g.asin}]")
    for v in g.goal_options:
        env.step(f"click[{v}]")
    r = env.step(f"click[{BUY_NOW}]")
    assert r.done and r.reward == 1.0 and r.reward_info is not None and r.reward_info.success
    assert (
        r.purchase is not None
        and r.purchase.asin == g.asin
        and set(r.purchase.options.values()) == set(g.goal_options)
    )
    assert r.purchase.attributes is None  # the Attributes page was not available
    assert "Thank you for shopping" in r.observation and "score" not in r.observation.lower()
    after = env.step("click[Back to Search]")
    assert after.done and not after.valid and after.message == "the episode is over"
    assert env.steps == 3 + len(g.goal_options)  # actions after the end are not counted


def test_show_reward_prints_the_score(catalog):
    env = WebShopEnv(catalog, show_reward=True)
    g = catalog.goals[0]
    env.reset(g)
    env.step(f"search[{g.name}]")
    env.step(f"click[{g.asin}]")
    r = env.step("click[Buy Now]")
    expected = get_reward(catalog.products[g.asin], g, catalog.prices[g.asin], {}).reward
    assert (
        r.reward == pytest.approx(expected)
        and f"Your score (min 0.0, max 1.0): {expected:.4f}" in r.observation
    )


def test_step_limit_ends_the_episode(catalog):
    env = WebShopEnv(catalog, max_steps=3)
    env.reset(0)
    assert not env.step("nonsense").done
    assert not env.step("search[bottles]").done
    r = env.step("click[Back to Search]")
    assert r.done and r.reward == 0 and "Step limit of 3 reached" in r.observation
    assert env.step("search[bottles]").done


def test_a_purchase_on_the_last_step_still_counts(catalog):
    g = catalog.goals[1]
    env = WebShopEnv(catalog, max_steps=3)
    env.reset(g)
    env.step(f"search[{g.name}]")
    env.step(f"click[{g.asin}]")
    r = env.step("click[Buy Now]")
    assert r.done and r.purchase is not None and "Step limit" not in r.observation


def test_reset_starts_over(env):
    env.step("search[bottles]")
    env.reset(1)
    assert env.page == "search" and env.steps == 0 and not env.done


def test_parse_action():
    assert parse_action("click[Buy Now]") == ("click", "Buy Now")
    assert parse_action(" Search[ red shoes ] ") == ("search", "red shoes")
    assert parse_action("click") == ("click", None)


def test_max_steps_must_be_positive(catalog):
    with pytest.raises(ValueError):
        WebShopEnv(catalog, max_steps=0)


# --- the expert -------------------------------------------------------------------------------


def test_expert_reaches_reward_one_on_every_shipped_goal(catalog):
    env = WebShopEnv(catalog)
    by_search = 0
    for g in catalog.goals:
        ep = run_expert(env, g)
        assert ep.done and ep.reward == 1.0, (g.index, ep.to_dict())
        assert all(t.valid for t in ep.turns)
        by_search += not any(t.action == "click[Back to Search]" for t in ep.turns)
    # Nearly every goal is found by searching the instruction's own words.
    assert by_search >= 0.95 * len(catalog.goals)
