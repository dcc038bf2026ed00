"""The unified item text the encoder embeds.

``formatted`` names each field in a fixed order, the paper's unified format::

    Title: Toy Story (1995). Year: 1995. Category: Animation, Children's, Comedy.

``raw`` concatenates the same values without names or order cues (the paper's "w/o format" ablation)::

    Toy Story (1995) 1995 Animation, Children's, Comedy
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from recbase.data.schema import TEXT_FIELDS

LABELS = {
    "title": "Title",
    "year": "Year",
    "category": "Category",
    "brand": "Brand",
    "description": "Description",
    "details": "Details",
}
assert tuple(LABELS) == TEXT_FIELDS


def _values(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name in TEXT_FIELDS:
        v = item.get(name)
        if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
            continue
        s = " ".join(str(v).split())  # collapse whitespace and newlines
        if s:
            out.append((name, s))
    return out


def format_item(item: Mapping[str, Any], style: str = "formatted") -> str:
    """The text of one item (a mapping with any of ``TEXT_FIELDS``)."""
    values = _values(item)
    if style == "raw":
        return " ".join(v for _, v in values)
    if style != "formatted":
        raise ValueError(f"unknown text style {style!r}; expected 'formatted' or 'raw'")
    parts = []
    for name, v in values:
        end = "" if v[-1] in ".!?" else "."
        parts.append(f"{LABELS[name]}: {v}{end}")
    return " ".join(parts)


def format_items(items: pd.DataFrame, style: str = "formatted") -> pd.Series:
    """``format_item`` over a DataFrame's rows, as a string Series aligned with it."""
    cols = [c for c in TEXT_FIELDS if c in items.columns]
    records = items[cols].astype(object).where(items[cols].notna(), None).to_dict("records")
    return pd.Series([format_item(r, style) for r in records], index=items.index, dtype=object)
