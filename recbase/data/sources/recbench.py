"""A RecBench-style evaluation directory.

``items.parquet`` (``item_id`` + text attributes), ``users.parquet`` (``user_id``, ``history``: a list
of item ids, oldest first), ``test.parquet`` (``user_id, item_id, click``). Histories have no times:
their order is kept with timestamps 0, 1, 2, ... The test pairs are the dataset's own evaluation
pairs and are written as such, never as interactions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from recbase import storage
from recbase.config import SourceConfig
from recbase.data.rejects import Rejects, raw_json
from recbase.data.sources.base import SourceFormatError, SourceTables, reject_where, require

# the published layout's three tables (input names, not a stage's output)
ITEMS, USERS, TEST = "items.parquet", "users.parquet", "test.parquet"

# attribute names seen in RecBench-style item tables -> our named text fields
ALIASES = {
    "title": "title", "name": "title",
    "category": "category", "categories": "category", "genre": "category", "genres": "category",
    "subcategory": "category",
    "description": "description", "abstract": "description", "desc": "description", "summary": "description",
    "brand": "brand", "store": "brand", "author": "brand", "publisher": "brand",
    "year": "year",
}


def _load(path: str, required: list[str]) -> pd.DataFrame:
    df = storage.read_parquet(require(path, f"RecBench table with columns {required}")).to_pandas()
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SourceFormatError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    df["file"] = path
    df["line"] = range(1, len(df) + 1)
    return df


class UnsupportedValue(TypeError):
    """An attribute value that is no text, number or list of them (a mapping, bytes, ...)."""


def _text(v) -> str | None:
    """One attribute value as text: a scalar as itself, a list (Parquet ``list<...>``) joined by ", ";
    None for a missing value. Anything else raises ``UnsupportedValue``."""
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, (str, int, float, np.integer, np.floating, np.bool_)):
        s = " ".join(str(v).split())
        return s or None
    if isinstance(v, (list, tuple, np.ndarray)):
        return _join(v)
    raise UnsupportedValue(f"{type(v).__name__} value")


def _join(values) -> str | None:
    parts = [t for t in map(_text, values) if t is not None]
    return ", ".join(parts) or None


def _texts(frame: pd.DataFrame, cols: list[str], join) -> tuple[list, np.ndarray]:
    """``join`` of each row's ``cols`` values, and a mask of the rows holding an unsupported value."""
    out, bad = [], np.zeros(len(frame), dtype=bool)
    for i, r in enumerate(frame[cols].itertuples(index=False)):
        try:
            out.append(join(r))
        except UnsupportedValue:
            out.append(None)
            bad[i] = True
    return out, bad


def read(cfg: SourceConfig, rejects: Rejects) -> SourceTables:
    src = cfg.label
    domain = cfg.domain or cfg.path.rstrip("/").rsplit("/", 1)[-1]
    raw_items = _load(storage.join(cfg.path, ITEMS), ["item_id"])
    attr_cols = [c for c in raw_items.columns if c not in ("item_id", "file", "line")]
    raw_items["raw"] = raw_json(raw_items, ["item_id", *attr_cols])
    items = pd.DataFrame({"item_id": raw_items["item_id"].astype("string").str.strip(), "domain": domain})
    by_field: dict[str, list[str]] = {}
    extra = []
    for c in attr_cols:
        f = ALIASES.get(c.lower())
        if f:
            by_field.setdefault(f, []).append(c)
        elif pd.api.types.is_string_dtype(raw_items[c]) or pd.api.types.is_object_dtype(raw_items[c]):
            extra.append(c)  # text columns and list columns (e.g. tags) go to the details
    unsupported = np.zeros(len(items), dtype=bool)
    for f in ("title", "category", "brand", "description"):
        cols = by_field.get(f, [])
        if cols:
            items[f], bad = _texts(raw_items, cols, _join)
            unsupported |= bad
        else:
            items[f] = None
    year = pd.to_numeric(raw_items[by_field["year"][0]], errors="coerce") if "year" in by_field else None
    items["year"] = year.astype("Int32") if year is not None else pd.array([None] * len(items), dtype="Int32")
    if extra:
        def details(r) -> str | None:
            pairs = [(c, _text(v)) for c, v in zip(extra, r)]
            return "; ".join(f"{c}: {t}" for c, t in pairs if t is not None) or None

        items["details"], bad = _texts(raw_items, extra, details)
        unsupported |= bad
    else:
        items["details"] = None
    for c in ("file", "line", "raw"):
        items[c] = raw_items[c]
    # a value of a type no text can be made of: the item is a counted reject, its row written out
    items = reject_where(items, pd.Series(unsupported, index=items.index), src, "items", "unsupported_value", rejects)

    users = _load(storage.join(cfg.path, USERS), ["user_id", "history"])
    users["raw"] = raw_json(users, ["user_id", "history"])
    users = reject_where(users, users["user_id"].isna(), src, "interactions", "null_id", rejects)
    histories: dict[str, list[str]] = {}
    recs = {k: [] for k in ("user_id", "item_id", "timestamp", "line", "raw")}
    for u, h, line, raw in zip(users["user_id"], users["history"], users["line"], users["raw"]):
        h = [] if h is None else [str(x) if x is not None else None for x in h]
        histories[str(u)] = [x for x in h if x is not None]
        for pos, item in enumerate(h):
            recs["user_id"].append(str(u))
            recs["item_id"].append(item)
            recs["timestamp"].append(pos)
            recs["line"].append(line)
            recs["raw"].append(raw)
    n_hist = len(recs["user_id"])
    inter = pd.DataFrame(recs)
    inter["timestamp"] = inter["timestamp"].astype("Int64")
    inter["rating"] = pd.array([None] * n_hist, dtype="Float32")
    inter["click"] = pd.array([1] * n_hist, dtype="Int8")
    inter["file"] = storage.join(cfg.path, USERS)

    pairs = _load(storage.join(cfg.path, TEST), ["user_id", "item_id", "click"])
    pairs["raw"] = raw_json(pairs, ["user_id", "item_id", "click"])
    n_pairs = len(pairs)
    click = pd.to_numeric(pairs["click"], errors="coerce")
    pairs = reject_where(pairs, ~click.isin([0, 1]), src, "pairs", "bad_label", rejects)
    pairs["click"] = click[pairs.index].astype("int8")
    pairs["user_id"] = pairs["user_id"].astype(str)
    pairs["item_id"] = pairs["item_id"].astype(str)
    return SourceTables(
        items=items,
        interactions=inter,
        read={
            "items": len(raw_items),
            # a user row with a null id is one record; the others count their history entries
            "interactions": n_hist + int(rejects.count(src, "interactions").get("null_id", 0)),
            "pairs": n_pairs,
        },
        files=[storage.join(cfg.path, n) for n in (ITEMS, USERS, TEST)],
        notes=["histories carry no times: timestamps are their positions 0, 1, 2, ..."],
        pairs=pairs,
        pair_histories=histories,
    )


def is_directory(path: str) -> bool:
    """Whether ``path`` holds a RecBench-style directory (its test pairs)."""
    return storage.exists(storage.join(path, TEST))
