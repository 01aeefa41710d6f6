"""The demo's dimension tables: one row per advertiser and per publisher of the catalogue the
events draw their ids from (demo.generate), so every id in the events has a row.

Names, verticals and categories are drawn from ``SeedSequence([seed, 0, 1])``, a stream of
its own: the same seed gives the same rows, and the events' streams are untouched.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pyarrow as pa

from tierflight.demo.generate import catalogue_ids

VERTICALS: Final = (
    "Retail", "Travel", "Finance", "Automotive", "Gaming", "Health", "Telecom", "Food & Drink",
    "Entertainment", "Education", "Fashion", "Home",
)  # fmt: skip
CATEGORIES: Final = (
    "News", "Sports", "Entertainment", "Technology", "Lifestyle", "Games", "Finance", "Travel",
    "Food", "Music", "Science", "Weather",
)  # fmt: skip
_WORDS: Final = (
    "Acme", "Blue", "Bright", "Cedar", "Copper", "Crimson", "Delta", "Eagle", "Echo", "Ember",
    "Falcon", "Fern", "Globe", "Granite", "Harbor", "Horizon", "Iris", "Jade", "Juniper", "Kite",
    "Lark", "Lumen", "Maple", "Meadow", "Nimbus", "North", "Oak", "Onyx", "Orbit", "Pine",
    "Pioneer", "Quartz", "Raven", "Ridge", "River", "Sage", "Silver", "Solar", "Spruce", "Summit",
    "Tide", "True", "Union", "Vale", "Vertex", "Willow", "Wren", "Zenith", "Zephyr", "Aurora",
)  # fmt: skip
_COMPANY: Final = (
    "Labs", "Goods", "Motors", "Foods", "Travel", "Bank", "Games", "Health", "Mobile", "Studios",
    "Outfitters", "Supply", "Brands", "Works", "Group", "Systems", "Market", "Co", "Partners", "Media",
    "Apparel", "Homes", "Energy", "Pharma", "Airlines", "Hotels", "Insurance", "Electronics", "Toys", "Sports",
    "Beverages", "Cosmetics", "Furniture", "Logistics", "Finance", "Learning", "Pets", "Garden", "Tools", "Audio",
)  # fmt: skip
_OUTLET: Final = (
    "Daily", "Times", "Post", "Gazette", "Network", "Hub", "Review", "Journal", "Wire", "Report",
    "Digest", "Insider", "Tribune", "Herald", "Chronicle", "Observer", "Weekly", "Today", "Online", "Radio",
    "TV", "Magazine", "Blog", "Forum", "Guide", "Club", "Channel", "Stream", "Podcast", "News",
    "Times Online", "Sports", "Games", "Kitchen", "Travels", "Tech", "Money", "Style", "Science", "Weather",
)  # fmt: skip

ADVERTISERS_SCHEMA: Final = pa.schema(
    [pa.field("advertiser_id", pa.int32(), nullable=False), pa.field("name", pa.string()), pa.field("vertical", pa.string())]
)
PUBLISHERS_SCHEMA: Final = pa.schema(
    [pa.field("publisher_id", pa.int32(), nullable=False), pa.field("name", pa.string()), pa.field("category", pa.string())]
)


def _names(rng: np.random.Generator, n: int, second: tuple[str, ...]) -> list[str]:
    # Distinct pairs of words (50 x 40 = 2000 combinations, more than either catalogue holds).
    picks = rng.choice(len(_WORDS) * len(second), n, replace=False)
    return [f"{_WORDS[i // len(second)]} {second[i % len(second)]}" for i in picks.tolist()]


def demo_dimensions(seed: int) -> dict[str, pa.Table]:
    """The dimension rows for ``seed``, by the events' column holding their key:
    ``advertiser_id`` → (advertiser_id, name, vertical), ``publisher_id`` → (publisher_id, name, category)."""
    adv_ids, pub_ids = catalogue_ids(seed)
    rng = np.random.default_rng([seed, 0, 1])
    advertisers = pa.table(
        {
            "advertiser_id": pa.array(adv_ids, pa.int32()),
            "name": _names(rng, len(adv_ids), _COMPANY),
            "vertical": [VERTICALS[i] for i in rng.integers(0, len(VERTICALS), len(adv_ids)).tolist()],
        },
        schema=ADVERTISERS_SCHEMA,
    )
    publishers = pa.table(
        {
            "publisher_id": pa.array(pub_ids, pa.int32()),
            "name": _names(rng, len(pub_ids), _OUTLET),
            "category": [CATEGORIES[i] for i in rng.integers(0, len(CATEGORIES), len(pub_ids)).tolist()],
        },
        schema=PUBLISHERS_SCHEMA,
    )
    return {"advertiser_id": advertisers.sort_by("advertiser_id"), "publisher_id": publishers.sort_by("publisher_id")}
