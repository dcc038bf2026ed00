"""Column names and Arrow types of every table the corpus stage writes: the one source of truth.

An item is identified by ``(domain, item_id)``; ``item_id`` is unique within its domain only.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 2  # 2: histories and evaluation histories carry each item's feedback (liked or not)

# an item's key in one string, "<domain>\x1f<item_id>" (unit separator): lookups by (domain, item_id)
ITEM_KEY_SEP = "\x1f"


def item_keys(domains, item_ids) -> list[str]:
    """Each (domain, item_id) as its one-string key."""
    return [f"{d}{ITEM_KEY_SEP}{i}" for d, i in zip(domains, item_ids)]


def arrow_item_keys(table: pa.Table) -> pa.Array:
    """``item_keys`` of a table's domain and item_id columns, computed by Arrow."""
    return pc.binary_join_element_wise(pc.cast(table.column("domain"), pa.string()),
                                       pc.cast(table.column("item_id"), pa.string()), ITEM_KEY_SEP)


# the named text attributes an item may carry, in the order the formatted text lists them
TEXT_FIELDS: tuple[str, ...] = ("title", "year", "category", "brand", "description", "details")

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("year", pa.int32()),
        pa.field("category", pa.string()),  # categories / genres, ", "-joined, most general first
        pa.field("brand", pa.string()),  # brand, store, publisher
        pa.field("description", pa.string()),
        pa.field("details", pa.string()),  # further "key: value" pairs, "; "-joined
        pa.field("text", pa.string(), nullable=False),  # the unified text the encoder embeds
    ]
)

INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),  # seconds since the epoch
        pa.field("rating", pa.float32()),  # explicit feedback, when the source has it
        pa.field("click", pa.int8()),  # 1 click, 0 shown-not-clicked (impressions), null unknown
    ]
)

REJECTS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("table", pa.string(), nullable=False),  # items | interactions | pairs
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64()),  # 1-based line (or row) in that file, when known
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),  # the rejected record as read
    ]
)

# an interaction's feedback, as histories carry it: 1 liked (a click, a rating >= click_min_rating,
# or implicit feedback), 0 not liked (a lower rating, an impression shown and not clicked)
LIKED, NOT_LIKED = 1, 0

# one row per pretraining user: the time-ordered history (pretraining domains only)
HISTORIES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("domains", pa.list_(pa.string()), nullable=False),
        pa.field("item_ids", pa.list_(pa.string()), nullable=False),
        pa.field("timestamps", pa.list_(pa.int64()), nullable=False),
        pa.field("feedback", pa.list_(pa.int8()), nullable=False),  # LIKED / NOT_LIKED per item
    ]
)

# per item, the feedback of the pretraining users in the pretraining domains (every interaction,
# whichever feedback the histories keep): what popularity and like-rate baselines may count zero-shot
ITEM_STATS = pa.schema(
    [
        pa.field("domain", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("interactions", pa.int64(), nullable=False),
        pa.field("liked", pa.int64(), nullable=False),
    ]
)

# one row per (user, candidate) evaluation pair; the history is what precedes the candidates
EVAL_PAIRS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("history_domains", pa.list_(pa.string()), nullable=False),
        pa.field("history_item_ids", pa.list_(pa.string()), nullable=False),
        pa.field("history_feedback", pa.list_(pa.int8()), nullable=False),  # LIKED / NOT_LIKED per item
        pa.field("domain", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64()),  # null for sampled negatives
        pa.field("click", pa.int8(), nullable=False),
        pa.field("label_source", pa.string(), nullable=False),  # rating | click | sampled_negative
    ]
)

# reasons a row can be rejected; the manifest counts each
REJECT_REASONS: tuple[str, ...] = (
    "wrong_field_count",
    "undecodable_text",
    "malformed_json",
    "malformed_impression",
    "bad_label",
    "unknown_user",
    "null_id",
    "unparsable_timestamp",
    "unparsable_rating",
    "unparsable_year",
    "unknown_item",
    "duplicate_item",
    "duplicate",
    "item_without_interactions",
    "unsupported_value",
)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
