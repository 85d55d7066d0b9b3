"""The WebShop reward on hand-built cases: every branch of type, attributes, options and price."""

from __future__ import annotations

import pytest

from agentloop.webshop import (
    Goal,
    Product,
    fuzzy_score,
    get_reward,
    normalize_color,
    title_nouns,
    type_reward,
)


def product(**kw) -> Product:
    base = dict(
        asin="B000000001",
        name="Velora Leak Proof Travel Bottles Set, for Toiletries",
        category="beauty",
        query="refillable containers",
        product_category="Beauty & Personal Care › Tools & Accessories › Bags & Cases › Refillable Containers",
        pricing=(12.99,),
        price_tag="$12.99",
        options={"color": ("clear", "pink", "navy blue"), "size": ("1 oz", "3 oz")},
        bullet_points=("LEAK PROOF - never spills.", "Great for long trips."),
        description="Velora travel bottles. Keeps lotion ready for the road.",
        attributes=("leak proof", "bpa free", "machine washable"),
    )
    base.update(kw)
    return Product(**base)


def goal(**kw) -> Goal:
    base = dict(
        asin="B000000001",
        category="beauty",
        query="refillable containers",
        name="Velora Leak Proof Travel Bottles Set, for Toiletries",
        product_category="Beauty & Personal Care › Tools & Accessories › Bags & Cases › Refillable Containers",
        instruction_text="i need leak proof travel bottles in pink color, and price lower than 20.00 dollars",
        attributes=("leak proof", "bpa free"),
        price_upper=20.0,
        goal_options=("pink", "3 oz"),
    )
    base.update(kw)
    return Goal(**base)


# Products of another type: no shared query, no two shared category levels.
OTHER_CATEGORY = "Electronics › Audio › Speakers"


def test_exact_buy_scores_one():
    info = get_reward(product(), goal(), 12.99, {"color": "pink", "size": "3 oz"})
    assert info.reward == 1.0 and info.success
    assert (info.r_type, info.attr_hits, info.option_hits, info.price_ok) == (1.0, 2, 2, True)
    assert info.to_dict()["r_option"] == 1.0


def test_options_may_come_as_a_list_of_values():
    assert get_reward(product(), goal(), 12.99, ["pink", "3 oz"]).reward == 1.0


def test_wrong_option_loses_its_share():
    info = get_reward(product(), goal(), 12.99, {"color": "clear", "size": "3 oz"})
    assert info.option_hits == 1
    assert info.reward == pytest.approx((2 + 1 + 1) / (2 + 2 + 1))
    assert not info.success


def test_unchosen_options_count_as_misses():
    info = get_reward(product(), goal(), 12.99, {})
    assert info.option_hits == 0
    assert info.reward == pytest.approx(3 / 5)


def test_colour_normalisation_follows_the_originals_set_and_order():
    # The first word of the original's colour set a value contains is its normal form.
    assert normalize_color("dark grey") == "dark"  # "dark" comes before "grey"
    assert normalize_color("light grey") == "grey"  # "grey" comes before "light"
    assert normalize_color("heather grey") == normalize_color("grey heather") == "grey"
    assert normalize_color("navy blue") == "blue"
    assert normalize_color("no colour here") == "no colour here"
    # So "dark grey" misses "light grey", although both are greys ...
    g = goal(goal_options=("dark grey",))
    p = product(options={"color": ("light grey", "heather grey")})
    assert get_reward(p, g, 12.99, {"color": "light grey"}).option_hits == 0
    # ... and a wanted "grey heather" is met by "heather grey" and by plain "grey".
    g = goal(goal_options=("grey heather",))
    assert get_reward(p, g, 12.99, {"color": "heather grey"}).option_hits == 1
    assert get_reward(p, g, 12.99, ["grey"]).option_hits == 1


def test_over_price_loses_the_price_share():
    info = get_reward(product(), goal(), 20.01, {"color": "pink", "size": "3 oz"})
    assert not info.price_ok
    assert info.reward == pytest.approx(4 / 5)
    assert get_reward(product(), goal(), 20.0, ["pink", "3 oz"]).price_ok  # at the limit is fine


def test_partial_attributes():
    g = goal(attributes=("leak proof", "gluten free"), goal_options=())
    info = get_reward(product(), g, 12.99, {})
    assert (info.attr_hits, info.n_attrs) == (1, 2)
    assert info.r_att == 0.5
    assert info.reward == pytest.approx((1 + 0 + 1) / (2 + 0 + 1))


def test_attribute_fuzzy_match_is_strictly_above_85():
    assert fuzzy_score("machine washable", "machine wash") == 86
    g = goal(attributes=("machine wash",), goal_options=())
    assert get_reward(product(), g, 1.0, {}).attr_hits == 1
    # No attribute, title, bullet or description holds it: a miss.
    g = goal(attributes=("hand wash",), goal_options=())
    assert get_reward(product(), g, 1.0, {}).attr_hits == 0


@pytest.mark.parametrize(
    "where",
    [
        {"name": "Velora Cruelty Free Travel Bottles Set, for Toiletries"},
        {"bullet_points": ("CRUELTY FREE - never tested on animals.",)},
        {"description": "Bottles that are cruelty free."},
    ],
)
def test_attribute_found_in_title_bullets_or_description(where):
    p = product(attributes=("DUMMY_ATTR",), **where)
    g = goal(attributes=("cruelty free",), goal_options=(), name=p.name)
    assert get_reward(p, g, 1.0, {}).attr_hits == 1


def test_no_options_and_no_attributes_hit_leaves_only_price():
    g = goal(attributes=("gluten free",), goal_options=())
    assert get_reward(product(), g, 1.0, {}).reward == pytest.approx(1 / 2)


# --- type factor ------------------------------------------------------------------------------


def test_wrong_type_scores_zero():
    p = product(
        query="bluetooth speakers",
        product_category=OTHER_CATEGORY,
        name="Kinora Bluetooth Speaker, 20W",
    )
    info = get_reward(p, goal(), 12.99, {"color": "pink", "size": "3 oz"})
    assert (info.r_type, info.title_score, info.query_match, info.category_match) == (0.0, 0.0, False, False)
    assert info.reward == 0.0


def _titles(goal_nouns: int, shared: int) -> tuple[str, str]:
    wanted = [f"thing{chr(97 + i)}" for i in range(goal_nouns)]
    got = wanted[:shared] + ["speaker"]
    return " ".join(wanted), " ".join(got)


@pytest.mark.parametrize(
    ("goal_nouns", "shared", "same_query", "same_category", "r_type"),
    [
        (4, 1, False, False, 1.0),  # title overlap 0.25 > 0.2: a match on its own
        (5, 1, False, False, 0.5),  # 0.2 is not > 0.2, no query, no category: half
        (6, 1, False, False, 0.5),  # 0.17
        (6, 1, True, False, 1.0),  # the same query rescues it
        (6, 1, False, True, 1.0),  # two shared category levels rescue it
        (11, 1, False, False, 0.1),  # under 0.1 overlap
        (11, 1, True, True, 0.1),  # ... whatever else matches
        (4, 0, True, True, 0.0),  # no overlap at all
    ],
)
def test_type_factor_branches(goal_nouns, shared, same_query, same_category, r_type):
    wanted, got = _titles(goal_nouns, shared)
    g = goal(name=wanted)
    p = product(
        name=got,
        query=g.query if same_query else "bluetooth speakers",
        product_category=g.product_category if same_category else OTHER_CATEGORY,
    )
    r, query_match, category_match, title_score = type_reward(p, g)
    assert (query_match, category_match) == (same_query, same_category)
    assert title_score == pytest.approx(shared / goal_nouns)
    assert r == r_type
    assert get_reward(p, g, 12.99, ["pink", "3 oz"]).reward == pytest.approx(r_type)


def test_category_match_needs_two_shared_levels():
    g = goal()
    one = product(product_category="Beauty & Personal Care › Makeup › Lips")
    two = product(product_category="Beauty & Personal Care › Tools & Accessories › Brushes")
    assert type_reward(one, g)[2] is False
    assert type_reward(two, g)[2] is True


def test_goal_title_without_nouns_counts_as_0_2():
    g = goal(name="New, Soft and Portable")
    p = product(query="other", product_category=OTHER_CATEGORY)
    r, _, _, title_score = type_reward(p, g)
    assert title_score == 0.2 and r == 0.5
    assert type_reward(product(), g)[0] == 1.0  # the same query makes it a match


def test_title_score_divides_by_the_goal_nouns_with_repeats():
    g = goal(name="bottle bottle case")
    p = product(name="bottle", query="x", product_category=OTHER_CATEGORY)
    assert type_reward(p, g)[3] == pytest.approx(1 / 3)  # one shared noun of three listed


# --- helpers ----------------------------------------------------------------------------------


def test_title_nouns():
    assert title_nouns("Velora Leak Proof Travel Bottles Set, 3 oz, Pink, for Toiletries") == [
        "velora",
        "leak",
        "proof",
        "travel",
        "bottles",
        "set",
        "toiletries",
    ]
    assert title_nouns("Portable Reusable Wireless Slowly") == []
    assert title_nouns("Assembly Required Bed Frame") == ["assembly", "required", "bed", "frame"]


def test_fuzzy_score_preprocesses_like_thefuzz():
    assert fuzzy_score("Rose-Gold!", "rose gold") == 100
    assert fuzzy_score("café", "caf") == 100  # code points 128-255 are dropped ...
    assert fuzzy_score("men’s", "men s") == 100  # ... the rest become spaces, like punctuation
    assert fuzzy_score("", "x") == 0
    assert fuzzy_score("!!!", "x") == 0
