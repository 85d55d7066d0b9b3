"""Generate the shipped WebShop catalog in the official file format, deterministically from a seed.

    python -m agentloop.webshop.generate [--seed 0] [--out agentloop/data/webshop]

writes ``items_shuffle.json`` (products), ``items_ins_v2.json`` (attributes and a
synthetic instruction per goal product) and ``items_human_ins.json`` (one instruction
per goal product). Same seed, same bytes.

Every product type below takes its attributes from the real ``items_ins_v2_1000.json``
of WebShop (Yao et al., 2022; MIT), each in the slot the real instructions use it in
("Find me <pre> <query> with <with> for <for>"); tests check the vocabulary against
that file when it is at hand. Each goal product comes with near misses: the same type
without one of the wanted attributes, the same item over the price limit, and (when
the goal names options) the same type without the wanted option values. The script
checks that each goal product scores 1.0 and each near miss less before it writes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentloop.webshop._catalog import load_catalog
from agentloop.webshop._reward import FUZZ_THRESHOLD, fuzzy_score, get_reward, normalize_color

__all__ = ["TYPES", "ProductType", "generate", "main"]

Slot = str  # "pre" | "with" | "for"


@dataclass(frozen=True, slots=True)
class ProductType:
    """A kind of product: where it sits in the store, what it is called, and what can vary."""

    category: str
    query: str
    breadcrumb: str
    titles: tuple[str, ...]  # title nouns, Title Case
    asks: tuple[tuple[str, str], ...]  # how instructions name each title: ("a pair of", "canvas loafers")
    attrs: dict[str, Slot]
    options: dict[str, tuple[tuple[str, ...], str]]  # name -> (values, phrase with {v})
    price: tuple[float, float]
    blurb: str
    extras: tuple[str, ...] = ()


def _t(
    category: str,
    query: str,
    breadcrumb: str,
    titles: str,
    asks: str,
    attrs: str,
    options: dict,
    price: tuple,
    blurb: str,
    extras: str = "",
) -> ProductType:
    """Compact table rows: ``titles`` and ``extras`` are "|"-separated, ``asks`` "article:noun|...", ``attrs`` "name=slot,..."."""
    return ProductType(
        category=category,
        query=query,
        breadcrumb=breadcrumb,
        titles=tuple(titles.split("|")),
        asks=tuple(tuple(a.split(":")) for a in asks.split("|")),  # type: ignore[misc]
        attrs=dict(a.split("=") for a in attrs.split(",")),
        options=options,
        price=price,
        blurb=blurb,
        extras=tuple(e for e in extras.split("|") if e),
    )


_COLORS_APPAREL = ("Black", "White", "Navy Blue", "Heather Grey", "Olive Green", "Burgundy", "Pink", "Khaki")
_SIZES_APPAREL = ("Small", "Medium", "Large", "X-Large", "XX-Large")
_SHOE_SIZES = ("6", "6.5", "7", "7.5", "8", "8.5", "9", "10", "11")

COLOR = "in {v} color"
SIZE = "in size {v}"

# fmt: off
TYPES: tuple[ProductType, ...] = (
    # --- beauty ---------------------------------------------------------------------------
    _t("beauty", "refillable containers", "Beauty & Personal Care › Tools & Accessories › Bags & Cases › Refillable Containers",
       "Travel Bottles Set|Refillable Spray Bottle|Silicone Squeeze Bottles", "a set of:travel bottles|a:refillable spray bottle|some:silicone squeeze bottles",
       "leak proof=pre,bpa free=pre,travel size=pre,easy carry=pre,high quality=pre,easy clean=pre",
       {"color": (("Clear", "Black", "Pink", "Blue", "Green"), COLOR), "size": (("1 oz", "2 oz", "3 oz", "100ml"), SIZE)},
       (6, 28), "Keeps shampoo, lotion and toner ready for the road", "for Toiletries|TSA Approved|4 Pack"),
    _t("beauty", "makeup palettes", "Beauty & Personal Care › Makeup › Eyes › Eyeshadow Palettes",
       "Eyeshadow Palette|Shimmer Matte Palette|Makeup Palette", "an:eyeshadow palette|a:shimmer matte palette|a:makeup palette",
       "long lasting=pre,easy apply=pre,cruelty free=pre,highly pigmented=pre,eye shadow=for,high quality=pre",
       {"color": (("Nude", "Smoky", "Rose Gold", "Warm Brown", "Plum"), "in the {v} shade")},
       (8, 45), "Blendable shades that go from a soft day look to a bold night look", "35 Colors|with Mirror|Travel Size"),
    _t("beauty", "shampoo & conditioner", "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Sets",
       "Shampoo and Conditioner Set|Volumizing Shampoo|Repair Conditioner", "a:shampoo and conditioner set|a bottle of:volumizing shampoo|a bottle of:repair conditioner",
       "sulfate free=pre,paraben free=pre,hair growth=for,damaged hair=for,coconut oil=with,natural ingredients=with",
       {"scent": (("Coconut", "Lavender", "Argan", "Unscented", "Citrus"), "with {v} scent"), "size": (("8 fl oz", "16 fl oz", "33.8 fl oz"), SIZE)},
       (9, 48), "Cleanses the scalp and leaves every strand soft", "for Men and Women|Salon Formula"),
    _t("beauty", "scrubs & body treatments", "Beauty & Personal Care › Skin Care › Body › Scrubs & Body Treatments",
       "Body Scrub|Exfoliating Salt Scrub|Sugar Body Polish", "a:body scrub|an:exfoliating salt scrub|a:sugar body polish",
       "dead skin=for,dry skin=for,anti aging=pre,tea tree=with,natural ingredients=with,cruelty free=pre,paraben free=pre",
       {"scent": (("Lavender", "Coconut", "Unscented", "Citrus", "Vanilla"), "with {v} scent"), "size": (("8 oz", "12 oz", "16 oz"), SIZE)},
       (7, 38), "Buffs away roughness and leaves skin smooth", "for Body and Face|Spa Gift"),
    _t("beauty", "toothpaste", "Beauty & Personal Care › Oral Care › Toothpaste",
       "Whitening Toothpaste|Toothpaste|Enamel Care Toothpaste", "a:whitening toothpaste|a tube of:toothpaste|an:enamel care toothpaste",
       "teeth whitening=pre,clinically proven=pre,fresh breath=for,sensitive teeth=for,bad breath=for,fragrance free=pre",
       {"flavor": (("Fresh Mint", "Cinnamon", "Spearmint", "Charcoal Mint"), "in {v} flavor"), "size": (("Pack of 1", "Pack of 2", "Pack of 3"), "in a {v}")},
       (4, 24), "A daily paste that polishes and protects enamel", "4.1 Ounce|Family Size"),
    _t("beauty", "hair cutting tools", "Beauty & Personal Care › Hair Care › Hair Cutting Tools › Shears",
       "Barber Scissors|Barber Shears Kit|Thinning Shears", "a pair of:barber scissors|a:barber shears kit|a pair of:thinning shears",
       "stainless steel=with,hair cutting=pre,beauty salon=for,non slip=pre,high quality=pre,hair styling=for",
       {"color": (("Black", "Silver", "Gold", "Rainbow"), COLOR), "size": (("5.5 inch", "6 inch", "6.5 inch"), SIZE)},
       (9, 55), "Sharp, balanced blades for clean and even cuts", "Professional Barber|with Case"),
    # --- fashion --------------------------------------------------------------------------
    _t("fashion", "men's shorts", "Clothing, Shoes & Jewelry › Men › Clothing › Shorts",
       "Athletic Shorts|Running Shorts|Gym Shorts", "a pair of:athletic shorts|a pair of:running shorts|a pair of:gym shorts",
       "elastic waistband=with,gym workout=for,moisture wicking=pre,quick drying=pre,loose fit=pre,daily wear=for,machine wash=pre",
       {"color": (_COLORS_APPAREL, COLOR), "size": (_SIZES_APPAREL, SIZE)},
       (14, 38), "Light training shorts with a comfortable waist and zip pocket", "for Men|7 Inch"),
    _t("fashion", "women's loafers & slip-ons", "Clothing, Shoes & Jewelry › Women › Shoes › Loafers & Slip-Ons",
       "Slip On Loafers|Canvas Loafers|Walking Flats", "a pair of:slip on loafers|a pair of:canvas loafers|a pair of:walking flats",
       "arch support=with,rubber sole=with,non slip=pre,teen girls=for,daily wear=for,open toe=pre",
       {"color": (("Black", "Pink", "Beige", "White", "Leopard", "Navy"), COLOR), "size": (_SHOE_SIZES, SIZE)},
       (18, 55), "Soft shoes that go on in a second and stay comfortable all day", "for Women|Office Shoes"),
    _t("fashion", "men's dress shirts", "Clothing, Shoes & Jewelry › Men › Clothing › Shirts › Dress Shirts",
       "Dress Shirt|Button Down Shirt|Oxford Shirt", "a:dress shirt|a:button down shirt|an:oxford shirt",
       "classic fit=with,slim fit=pre,long sleeve=with,short sleeve=with,button closure=with,machine wash=pre",
       {"color": (("White", "Light Blue", "Black", "Pink", "Grey", "Lavender"), COLOR), "size": (_SIZES_APPAREL, SIZE)},
       (19, 60), "A crisp shirt for the office, weddings and dinners out", "for Men|Wrinkle Resistant"),
    _t("fashion", "women's pants", "Clothing, Shoes & Jewelry › Women › Clothing › Pants › Leggings",
       "Yoga Pants|Workout Leggings|Flare Leggings", "a pair of:yoga pants|a pair of:workout leggings|a pair of:flare leggings",
       "tummy control=with,high waist=with,polyester spandex=with,moisture wicking=pre,daily wear=for,hand wash=pre",
       {"color": (_COLORS_APPAREL, COLOR), "size": (_SIZES_APPAREL, SIZE)},
       (15, 42), "Stretchy pants that move with you from the studio to the street", "for Women|with Pockets"),
    _t("fashion", "men's t-shirts & tanks", "Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
       "Graphic T-Shirt|Crew Neck Tee|Vintage Logo Tee", "a:graphic t-shirt|a:crew neck tee|a:vintage logo tee",
       "needle sleeve=with,classic fit=with,officially licensed=pre,machine wash=pre,cotton heather=with,wash cold=pre",
       {"color": (("Black", "Heather Grey", "Navy", "Royal Blue", "Red", "White"), COLOR), "fit type": (("Men", "Women", "Youth"), "with a {v} fit"), "size": (_SIZES_APPAREL, SIZE)},
       (12, 30), "A soft everyday tee with a printed design", "Short Sleeve"),
    _t("fashion", "women's slippers", "Clothing, Shoes & Jewelry › Women › Shoes › Slippers",
       "House Slippers|Fuzzy Slippers|Plush Slippers", "a pair of:house slippers|a pair of:fuzzy slippers|a pair of:plush slippers",
       "faux fur=with,rubber sole=with,non slip=pre,memory foam=with,winter warm=pre,machine washable=pre",
       {"color": (("Grey", "Pink", "Beige", "Black", "Wine Red", "Leopard"), COLOR), "size": (("5-6", "7-8", "9-10", "11-12"), SIZE)},
       (12, 36), "Cozy slippers with a cushioned footbed for lazy mornings", "for Women|Indoor Outdoor"),
    # --- garden (home and furniture) ------------------------------------------------------
    _t("garden", "sofas and couches", "Home & Kitchen › Furniture › Living Room Furniture › Sofas & Couches",
       "3-Seat Sofa Couch|Loveseat Sofa|Sleeper Sofa", "a:3-seat sofa couch|a:loveseat sofa|a:sleeper sofa",
       "living room=for,wood frame=with,mid century=pre,solid wood=with,easy assemble=pre,high density=pre",
       {"color": (("Grey", "Beige", "Navy Blue", "Green", "Brown"), COLOR)},
       (180, 760), "A deep seat and sturdy arms for movie nights and naps", "Upholstered|Linen Fabric"),
    _t("garden", "coffee tables", "Home & Kitchen › Furniture › Living Room Furniture › Tables › Coffee Tables",
       "Coffee Table|Lift Top Coffee Table|Round Coffee Table", "a:coffee table|a:lift top coffee table|a:round coffee table",
       "mid century=pre,tempered glass=with,solid wood=with,living room=for,easy assemble=pre,storage space=with",
       {"color": (("Walnut", "White", "Black", "Natural", "Grey Oak"), COLOR)},
       (60, 320), "A low table with room for books, drinks and remotes", "with Shelf|Modern"),
    _t("garden", "home office chairs", "Home & Kitchen › Furniture › Home Office Furniture › Home Office Chairs › Desk Chairs",
       "Office Chair|Ergonomic Desk Chair|Task Chair", "an:office chair|an:ergonomic desk chair|a:task chair",
       "height adjustable=pre,home office=for,easy assemble=pre,pu leather=with,heavy duty=pre,faux leather=with",
       {"color": (("Black", "White", "Grey", "Pink", "Blue"), COLOR)},
       (45, 260), "A swivel chair that supports long days at the desk", "with Wheels|Swivel"),
    _t("garden", "floor lamps", "Home & Kitchen › Lighting & Ceiling Fans › Lamps & Shades › Floor Lamps",
       "Floor Lamp|Arc Floor Lamp|Torchiere Floor Lamp", "a:floor lamp|an:arc floor lamp|a:torchiere floor lamp",
       "bronze finish=with,living room=for,glass shade=with,height adjustable=pre,dining room=for,easy assemble=pre",
       {"color": (("Bronze", "Black", "Brushed Nickel", "White", "Gold"), COLOR)},
       (35, 190), "Soft, even light for reading corners and living spaces", "Standing Lamp|with Foot Switch"),
    _t("garden", "beds", "Home & Kitchen › Furniture › Bedroom Furniture › Beds, Frames & Bases › Beds",
       "Platform Bed Frame|Metal Bed Frame|Upholstered Bed", "a:platform bed frame|a:metal bed frame|an:upholstered bed",
       "box spring=with,assembly required=pre,heavy duty=pre,metal frame=with,easy assemble=pre,storage space=with",
       {"size": (("Twin", "Full", "Queen", "King"), SIZE), "color": (("Black", "White", "Grey", "Brown"), COLOR)},
       (90, 480), "A steady, squeak-free base for your mattress", "Under Bed Storage|Noise Free"),
    _t("garden", "decorative pillows", "Home & Kitchen › Bedding › Decorative Pillows, Inserts & Covers › Throw Pillow Covers",
       "Throw Pillow Covers|Cushion Cases|Decorative Pillow Covers", "a set of:throw pillow covers|a set of:cushion cases|a set of:decorative pillow covers",
       "machine washable=pre,double sided=pre,living room=for,super soft=pre,printing technology=with,home decor=for",
       {"color": (("Beige", "Navy Blue", "Mustard", "Sage Green", "Blush Pink", "Grey"), COLOR), "size": (("16 x 16 inch", "18 x 18 inch", "20 x 20 inch"), SIZE)},
       (8, 32), "Covers that refresh a sofa or bed in a minute", "Set of 2|Farmhouse"),
    # --- grocery --------------------------------------------------------------------------
    _t("grocery", "meat snacks", "Grocery & Gourmet Food › Snacks & Sweets › Jerky & Dried Meats › Beef",
       "Beef Jerky|Beef Sticks|Turkey Jerky", "a bag of:beef jerky|some:beef sticks|a bag of:turkey jerky",
       "protein serving=pre,keto friendly=pre,gluten free=pre,natural ingredients=with,old fashioned=pre,low carb=pre",
       {"flavor": (("Original", "Teriyaki", "Peppered", "Sweet & Spicy", "Smoked"), "in {v} flavor"), "size": (("2.5 ounce", "3.25 ounce (pack of 4)", "10 ounce"), SIZE)},
       (6, 34), "Slow-smoked strips of lean meat for a savory snack", "Resealable Bag"),
    _t("grocery", "granola & nutrition bars", "Grocery & Gourmet Food › Snacks & Sweets › Snack Bars › Nutrition Bars",
       "Protein Bars|Nutrition Bars|Granola Bars", "a box of:protein bars|a box of:nutrition bars|some:granola bars",
       "low sugar=pre,gluten free=pre,dairy free=pre,plant based=pre,simple ingredients=with,chocolate covered=pre,non gmo=pre",
       {"flavor": (("Peanut Butter", "Dark Chocolate", "Almond", "Blueberry", "Coconut"), "in {v} flavor"), "size": (("Pack of 6", "Pack of 12", "Pack of 24"), "in a {v}")},
       (7, 40), "A chewy bar that keeps you going between meals", "Variety Pack"),
    _t("grocery", "breakfast foods", "Grocery & Gourmet Food › Breakfast Foods › Cereals › Granola",
       "Granola Cereal|Oat Clusters|Muesli", "a bag of:granola cereal|some:oat clusters|some:muesli",
       "plant based=pre,non gmo=pre,gluten free=pre,usda organic=pre,dietary fiber=with,high protein=pre",
       {"flavor": (("Honey Almond", "Maple Pecan", "Berry", "Cinnamon", "Chocolate"), "in {v} flavor"), "size": (("11 ounce", "Pack of 2", "Pack of 4"), SIZE)},
       (5, 30), "Crunchy clusters for a bowl of milk or a yogurt topping", "Family Size"),
    _t("grocery", "snack crackers", "Grocery & Gourmet Food › Snacks & Sweets › Crackers",
       "Crackers|Rice Crackers|Seed Crackers", "a box of:crackers|some:rice crackers|some:seed crackers",
       "gluten free=pre,0g trans=with,non gmo=pre,simple ingredients=with,low calorie=pre,kosher certified=pre",
       {"flavor": (("Sea Salt", "Cheddar", "Rosemary", "Everything", "Black Pepper"), "in {v} flavor"), "size": (("4 ounce", "Pack of 6", "Pack of 12"), SIZE)},
       (4, 28), "Thin, crisp crackers for cheese boards and lunch boxes", "Snack Pack"),
    _t("grocery", "party supplies", "Grocery & Gourmet Food › Pantry Staples › Cooking & Baking › Cake Decorating › Cake Toppers",
       "Cupcake Toppers|Cake Topper Set|Birthday Candles", "a set of:cupcake toppers|a:cake topper set|some:birthday candles",
       "baby shower=for,birthday party=for,valentine day=for,cupcake picks=with,easy use=pre,gold plated=pre",
       {"color": (("Gold", "Silver", "Rose Gold", "Blue", "Pink", "Multicolor"), COLOR), "size": (("24 count", "36 count", "48 count"), SIZE)},
       (5, 22), "Festive picks that dress up cakes and cupcakes", "Party Decorations"),
    # --- electronics ----------------------------------------------------------------------
    _t("electronics", "bluetooth speakers", "Electronics › Portable Audio & Video › Portable Speakers & Docks › Portable Bluetooth Speakers",
       "Bluetooth Speaker|Portable Speaker|Outdoor Speaker", "a:bluetooth speaker|a:portable speaker|an:outdoor speaker",
       "wireless bluetooth=for,hands free=pre,light weight=pre,easy carry=pre,stereo sound=for,water resistant=pre",
       {"color": (("Black", "Blue", "Red", "Grey", "Green", "Teal"), COLOR)},
       (16, 110), "Big, clear sound from a speaker that fits in a backpack", "20W|with Strap"),
    _t("electronics", "headphones", "Electronics › Headphones, Earbuds & Accessories › Headphones › Earbud Headphones",
       "Wireless Earbuds|Earbud Headphones|Over Ear Headphones", "a pair of:wireless earbuds|a pair of:earbud headphones|a pair of:over ear headphones",
       "noise cancelling=pre,hands free=pre,wireless bluetooth=for,stereo sound=for,fast charging=pre,long lasting=pre",
       {"color": (("Black", "White", "Red", "Blue", "Rose Gold"), COLOR)},
       (15, 140), "Comfortable buds with a charging case for all-day listening", "with Mic|Sports"),
    _t("electronics", "screen protectors", "Cell Phones & Accessories › Accessories › Screen Protectors",
       "Screen Protector|Phone Screen Protector|Privacy Screen Protector", "a:screen protector|a:phone screen protector|a:privacy screen protector",
       "tempered glass=with,glass screen=with,easy install=pre,high definition=pre,case cover=with,lens protector=with",
       {"size": (("iPhone 13", "iPhone 13 Pro Max", "iPhone 14", "Galaxy S22", "Pixel 7"), "for the {v}"), "count": (("2 Pack", "3 Pack"), "in a {v}")},
       (5, 20), "Guards the display against scratches and drops", "9H Hardness|Bubble Free"),
    _t("electronics", "hdmi cables", "Electronics › Television & Video › Accessories › Cables › HDMI Cables",
       "HDMI Cable|HDMI Cord|Braided HDMI Cable", "an:hdmi cable|an:hdmi cord|a:braided hdmi cable",
       "high speed=pre,plug play=pre,blu ray=pre,ultra hd=pre,gold plated=pre,home theater=for",
       {"size": (("3 ft", "6 ft", "10 ft", "15 ft", "25 ft"), SIZE), "count": (("1 Pack", "2 Pack"), "in a {v}")},
       (6, 30), "A cable that carries picture and sound from box to screen", "4K 60Hz|Nylon Braided"),
    _t("electronics", "video surveillance", "Electronics › Camera & Photo › Video Surveillance › Surveillance Cameras",
       "Security Camera|WiFi Camera|Outdoor Surveillance Camera", "a:security camera|a:wifi camera|an:outdoor surveillance camera",
       "motion detection=for,1080p hd=pre,high definition=pre,easy install=pre,night vision=with,water resistant=pre",
       {"style": (("1 Camera", "2 Cameras", "4 Cameras"), "in the {v} kit"), "color": (("White", "Black"), COLOR)},
       (25, 160), "Keeps an eye on the porch, the yard and the garage", "with App|2-Way Audio"),
    _t("electronics", "binoculars & scopes", "Electronics › Camera & Photo › Binoculars & Scopes › Binoculars",
       "Binoculars|Compact Binoculars|Zoom Binoculars", "a pair of:binoculars|a pair of:compact binoculars|a pair of:zoom binoculars",
       "bird watching=for,high power=pre,high definition=pre,carrying case=with,non slip=pre,light weight=pre",
       {"size": (("8x21", "10x42", "12x50", "20x50"), SIZE)},
       (22, 150), "Bright, sharp views for birding, hiking and games", "for Adults|with Strap"),
)
# fmt: on

_SYLLABLES_A = (
    "Vel",
    "Aro",
    "Kin",
    "Lum",
    "Sor",
    "Tav",
    "Bri",
    "Quo",
    "Nex",
    "Zan",
    "Mor",
    "Eld",
    "Pax",
    "Ryn",
    "Cal",
    "Dov",
)
_SYLLABLES_B = ("ora", "ix", "ento", "ly", "va", "wick", "mont", "ara", "iva", "eon", "ada", "o", "ine", "um")
_GENERIC_BULLETS = (
    "WHAT YOU GET - {noun} as shown, packed with care and ready to use out of the box.",
    "WORRY-FREE - Write to us any time and we will make it right within 30 days.",
    "THOUGHTFUL GIFT - A practical present for birthdays, holidays and housewarmings.",
    "DETAILS MATTER - Checked piece by piece before it leaves our warehouse.",
)
_SLOT_BULLETS = {
    "pre": (
        "{A} - Our {noun} is {a} by design, so it keeps up with you every day.",
        "{A} - {a} from the first use to the last.",
    ),
    "with": (
        "MADE WITH {A} - Built with {a} for a finish that lasts.",
        "{A} - Comes with {a}, a detail you notice right away.",
    ),
    "for": ("GREAT FOR {A} - A smart pick for {a}.", "{A} - Designed with {a} in mind."),
}


@dataclass(slots=True)
class _Draft:
    ptype: ProductType
    asin: str
    brand: str
    title_noun: str
    attrs: list[str]
    options: dict[str, list[str]]
    pricing: str
    role: str  # goal | attr_miss | over_price | option_miss | filler
    title: str = ""
    of: str = ""  # the goal product a near miss shadows


def generate(seed: int = 0, per_type: int = 4) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """The three files' contents (``{"items_shuffle.json": [...], ...}``) and each product's role.

    A role is ``(kind, goal_asin)``: kind is goal, attr_miss, over_price, option_miss or filler.
    """
    _check_types()
    rng = random.Random(seed)
    used_asins: set[str] = set()
    used_brands: set[str] = set()
    drafts: list[_Draft] = []
    human: dict[str, list[dict[str, Any]]] = {}
    synthetic: dict[str, tuple[str, list[str]]] = {}

    def asin() -> str:
        while True:
            a = "B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
            if a not in used_asins:
                used_asins.add(a)
                return a

    def brand() -> str:
        while True:
            b = rng.choice(_SYLLABLES_A) + rng.choice(_SYLLABLES_B)
            if b not in used_brands or len(used_brands) > 150:
                used_brands.add(b)
                return b

    for t in TYPES:
        pool = list(t.attrs)
        for _ in range(per_type):
            attrs = rng.sample(pool, rng.randint(3, 4))
            options = {
                name: sorted(rng.sample(vals, min(len(vals), rng.randint(3, 5))), key=vals.index)
                for name, (vals, _) in t.options.items()
            }
            price = _price(rng, t.price)
            which = rng.randrange(len(t.titles))
            goal = _Draft(t, asin(), brand(), t.titles[which], attrs, options, f"${price:.2f}", "goal")
            goal.title = _title(rng, goal)
            drafts.append(goal)

            # The instruction: 1-3 of the product's attributes, and some of its options.
            wanted = rng.sample(attrs, rng.randint(1, min(3, len(attrs))))
            wanted_opts = {n: rng.choice(v) for n, v in options.items() if rng.random() < 0.7}
            human[goal.asin] = [
                {
                    "instruction": _human_instruction(rng, t, t.asks[which], wanted, wanted_opts),
                    "instruction_attributes": wanted,
                    "instruction_options": [v.lower() for v in wanted_opts.values()],
                }
            ]
            synthetic[goal.asin] = (_synthetic_instruction(t, wanted), wanted)

            # Near miss 1: same type and options, one wanted attribute swapped for another.
            dropped = rng.choice(wanted)
            spare = [a for a in pool if a not in attrs and not _similar(a, dropped)]
            miss_attrs = [a for a in attrs if not _similar(a, dropped)] + rng.sample(
                spare, min(1, len(spare))
            )
            d1 = _Draft(
                t,
                asin(),
                brand(),
                rng.choice(t.titles),
                miss_attrs,
                dict(options),
                f"${_price(rng, (t.price[0], price)):.2f}",
                "attr_miss",
                of=goal.asin,
            )
            d1.title = _title(rng, d1)
            drafts.append(d1)

            # Near miss 2: the same item from another seller, over any price limit the goal can get.
            steps_top = (math.floor(price / 10) + 4) * 10  # the highest price_upper the goal can draw
            d2 = _Draft(
                t,
                asin(),
                goal.brand,
                goal.title_noun,
                list(attrs),
                dict(options),
                f"${steps_top + rng.uniform(2, 30):.2f}",
                "over_price",
                of=goal.asin,
            )
            d2.title = goal.title
            drafts.append(d2)

            # Near miss 3: same type and attributes, none of the wanted option values.
            if wanted_opts:
                other = {}
                for n, (vals, _) in t.options.items():
                    rest = [
                        v
                        for v in vals
                        if v != wanted_opts.get(n) and not _similar_option(v, wanted_opts.get(n))
                    ]
                    other[n] = sorted(rng.sample(rest, min(len(rest), 3)), key=vals.index)
                d3 = _Draft(
                    t,
                    asin(),
                    brand(),
                    rng.choice(t.titles),
                    list(attrs),
                    other,
                    f"${_price(rng, (t.price[0], price)):.2f}",
                    "option_miss",
                    of=goal.asin,
                )
                d3.title = _title(rng, d3)
                drafts.append(d3)

        # One more product of the type, priced as a range (the format allows it).
        lo = _price(rng, t.price)
        filler = _Draft(t, asin(), brand(), rng.choice(t.titles), rng.sample(pool, 3),
                        {n: sorted(rng.sample(v, min(len(v), 3)), key=v.index) for n, (v, _) in t.options.items()},
                        f"${lo:.2f} - ${lo * 1.6:.2f}", "filler")  # fmt: skip
        filler.title = _title(rng, filler)
        drafts.append(filler)

    rng.shuffle(drafts)  # items_shuffle: the official file is shuffled too
    items = [_record(rng, d) for d in drafts]
    attributes: dict[str, dict[str, Any]] = {}
    for d in drafts:
        entry: dict[str, Any] = {"attributes": d.attrs}
        if d.asin in synthetic:
            entry["instruction"], entry["instruction_attributes"] = synthetic[d.asin]
        attributes[d.asin] = entry
    human_ordered = {d.asin: human[d.asin] for d in drafts if d.asin in human}
    files = {
        "items_shuffle.json": items,
        "items_ins_v2.json": attributes,
        "items_human_ins.json": human_ordered,
    }
    return files, {d.asin: (d.role, d.of or d.asin) for d in drafts}


def _check_types() -> None:
    # Attributes may only reach a product's text through its own attribute list, or a
    # near miss would still score its missing attribute as a substring hit.
    for t in TYPES:
        if len(t.asks) != len(t.titles):
            raise ValueError(f"{t.query}: one instruction noun per title noun")
        fixed = [*t.titles, *t.extras, t.blurb, *_GENERIC_BULLETS]
        for a in t.attrs:
            for text in fixed:
                if a in text.lower():
                    raise ValueError(f"{t.query}: attribute {a!r} appears in the fixed text {text!r}")


def _price(rng: random.Random, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    whole = rng.randint(int(lo), max(int(lo), int(hi) - 1))
    return whole + rng.choice((0.99, 0.95, 0.49, 0.0, 0.89))


def _title(rng: random.Random, d: _Draft) -> str:
    shown = [a.title() for a in d.attrs if d.ptype.attrs[a] == "pre"][:2]
    extra = rng.choice(d.ptype.extras) if d.ptype.extras else ""
    parts = [d.brand, *shown, d.title_noun]
    title = " ".join(parts)
    features = [f"{d.ptype.attrs[a]} {a.title()}" for a in d.attrs if d.ptype.attrs[a] != "pre"][:1]
    tail = [x for x in (extra, *features) if x]
    return f"{title}, {', '.join(tail)}" if tail else title


def _article(article: str, nxt: str) -> str:
    if article in ("a", "an"):
        return "an" if nxt[:1] in "aeiou" else "a"
    return article


def _human_instruction(
    rng: random.Random, t: ProductType, ask: tuple[str, str], wanted: list[str], opts: dict[str, str]
) -> str:
    article, noun = ask
    pre = [a for a in wanted if t.attrs[a] == "pre"]
    with_ = [a for a in wanted if t.attrs[a] == "with"]
    for_ = [a for a in wanted if t.attrs[a] == "for"]
    tail = ""
    if with_:
        tail += " with " + " and ".join(with_)
    if for_:
        tail += " for " + " and ".join(for_)
    opt_text = ", ".join(t.options[n][1].format(v=v.lower()) for n, v in opts.items())
    form = rng.randrange(4)
    if form == 1 and pre:  # "... that is leak proof and bpa free"
        head = f"i need {_article(article, noun)} {noun} that {'are' if noun.endswith('s') and article in ('some', 'a pair of') else 'is'} {' and '.join(pre)}"
    else:
        phrase = f"{', '.join(pre)} {noun}" if pre else noun
        opener = ("i am looking for", "i need", "i want to buy", "find me")[form]
        head = f"{opener} {_article(article, phrase)} {phrase}"
    text = head + tail
    if opt_text:
        text += ("" if form % 2 else ",") + " " + opt_text
    return text


def _synthetic_instruction(t: ProductType, wanted: list[str]) -> str:
    # The real file's pattern: "Find me <pre, ...> <query> with <...> for <...>".
    pre = [a for a in wanted if t.attrs[a] == "pre"]
    text = "Find me " + (", ".join(pre) + " " if pre else "") + t.query
    with_ = [a for a in wanted if t.attrs[a] == "with"]
    for_ = [a for a in wanted if t.attrs[a] == "for"]
    if with_:
        text += " with " + ", ".join(with_)
    if for_:
        text += " for " + ", ".join(for_)
    return text


def _similar(a: str, b: str) -> bool:
    return a in b or b in a or fuzzy_score(a, b) > FUZZ_THRESHOLD


def _similar_option(value: str, wanted: str | None) -> bool:
    if wanted is None:
        return False
    return fuzzy_score(normalize_color(value.lower()), normalize_color(wanted.lower())) > FUZZ_THRESHOLD


def _record(rng: random.Random, d: _Draft) -> dict[str, Any]:
    t = d.ptype
    noun = d.title_noun.lower()
    bullets = []
    for a in d.attrs:
        template = rng.choice(_SLOT_BULLETS[t.attrs[a]])
        bullets.append(template.format(A=a.upper(), a=a, noun=noun))
    bullets.insert(rng.randrange(len(bullets) + 1), rng.choice(_GENERIC_BULLETS).format(noun=d.title_noun))
    description = f"{d.brand} {d.title_noun}. {t.blurb}. Every order is inspected before it ships."
    return {
        "asin": d.asin,
        "category": t.category,
        "query": t.query,
        "name": d.title,
        "product_category": t.breadcrumb,
        "pricing": d.pricing,
        "customization_options": {
            n: [{"value": v, "image": None} for v in vals] for n, vals in d.options.items()
        },
        "small_description": bullets,
        "full_description": description,
        "images": [None],
        "average_rating": round(rng.uniform(3.4, 4.9), 1),
    }


def check(out: Path, roles: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Load the written files and check every goal: its product scores 1.0, each of its near misses less."""
    cat = load_catalog(out)
    misses: dict[str, list[str]] = {}
    for asin, (kind, of) in roles.items():
        if kind not in ("goal", "filler"):
            misses.setdefault(of, []).append(asin)
    checked = 0
    for g in cat.goals:
        for asin in (g.asin, *misses.get(g.asin, ())):
            p = cat.products[asin]
            got = get_reward(p, g, cat.prices[asin], best_options(p, g.goal_options)).reward
            if (asin == g.asin) != (got >= 1.0):
                raise AssertionError(f"goal {g.index}: {roles[asin][0]} product {asin} scores {got:.3f}")
            checked += 1
    return {"products": len(cat.products), "goals": len(cat.goals), "checked": checked}


def best_options(product: Any, wanted: Any) -> dict[str, str]:
    """For each wanted option, the product's closest option value (what a careful shopper clicks)."""
    chosen: dict[str, str] = {}
    for w in wanted:
        scored = [
            (101 if v == w else fuzzy_score(normalize_color(v), normalize_color(w)), n, v)
            for n, vs in product.options.items()
            for v in vs
        ]
        if scored:
            _, n, v = max(scored, key=lambda x: x[0])
            chosen[n] = v
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-type", type=int, default=4, help="goal products per product type")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "webshop"
    )
    args = parser.parse_args(argv)
    files, roles = generate(args.seed, args.per_type)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.out / name).write_text(dump(content), encoding="utf-8")
    print(json.dumps(check(args.out, roles)))


def dump(content: Any) -> str:
    """The exact text written for one file."""
    return json.dumps(content, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    main()
