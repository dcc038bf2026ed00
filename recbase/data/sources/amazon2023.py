"""Amazon Reviews 2023 (McAuley Lab): ``<Category>.jsonl`` reviews + ``meta_<Category>.jsonl`` items.

Reviews: ``rating, title, text, images, asin, parent_asin, user_id, timestamp (ms),
helpful_vote, verified_purchase``. Metadata: ``main_category, title, average_rating, rating_number,
features[], description[], price, images, videos, store, categories[], details{}, parent_asin,
bought_together``. Items are keyed by ``parent_asin`` (reviews refer to it). Files may be gzipped.
The domain is the category in the file name unless the source config names one.
"""
from __future__ import annotations

import json

import pandas as pd

from recbase import storage
from recbase.config import SourceConfig
from recbase.data.rejects import Rejects
from recbase.data.sources.base import SourceFormatError, SourceTables, Span, iter_lines, parse_feedback, spans


def _pairs(root: str) -> list[tuple[str, str, str]]:
    fs, p = storage.filesystem(root)
    if not fs.isdir(p):
        raise SourceFormatError(f"{root}: not a directory (expected <Category>.jsonl + meta_<Category>.jsonl)")
    names = sorted(f.rsplit("/", 1)[-1] for f in fs.ls(p, detail=False))
    out = []
    for name in names:
        if name.startswith("meta_") or not (name.endswith(".jsonl") or name.endswith(".jsonl.gz")):
            continue
        category = name.split(".jsonl")[0]
        meta = next((m for m in names if m.startswith(f"meta_{category}.jsonl")), None)
        if meta is None:
            raise SourceFormatError(f"{storage.join(root, name)}: no matching meta_{category}.jsonl item file")
        out.append((category, storage.join(root, name), storage.join(root, meta)))
    if not out:
        raise SourceFormatError(f"{root}: no <Category>.jsonl review files")
    return out


def _jsonl(path: str, source: str, table: str, rejects: Rejects,
           span: Span | None = None) -> tuple[list[dict], list[int], list[str], int]:
    recs, lines, raws, n, bad = [], [], [], 0, []
    for lineno, text, raw in iter_lines(path, "utf-8", span):
        if text is not None and not text.strip():
            continue
        n += 1
        if text is None:
            rejects.add(source, table, path, lineno, "undecodable_text", raw.decode("utf-8", "backslashreplace"))
            continue
        try:
            rec = json.loads(text)
            if not isinstance(rec, dict):
                raise ValueError
        except ValueError:
            bad.append((lineno, text))
            continue
        recs.append(rec)
        lines.append(lineno)
        raws.append(text)
    if bad:
        rejects.add_frame(
            source, table, "malformed_json",
            pd.DataFrame({"file": path, "line": [b[0] for b in bad], "raw": [b[1] for b in bad]}),
        )
    return recs, lines, raws, n


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, list):
        v = " ".join(str(x) for x in v if x)
    s = str(v).strip()
    return s or None


def _details(rec: dict) -> str | None:
    parts = [str(f) for f in rec.get("features") or [] if f]
    details = rec.get("details") or {}
    if isinstance(details, dict):
        parts += [f"{k}: {v}" for k, v in details.items() if v not in (None, "")]
    if rec.get("price") not in (None, "", "None"):
        parts.append(f"Price: {rec['price']}")
    return "; ".join(parts) or None


def parts(cfg: SourceConfig, part_bytes: int) -> list[tuple[str, Span]]:
    """Parts each readable on its own (``read(cfg, rejects, part=...)``): per category, its reviews file cut
    at line starts into spans of about ``part_bytes``; the first span's part also reads the category's items."""
    return [(category, span) for category, review_path, _ in _pairs(cfg.path) for span in spans(review_path, part_bytes)]


def read(cfg: SourceConfig, rejects: Rejects, part: tuple[str, Span] | None = None) -> SourceTables:
    """Every category of the directory, or only ``part``: the parts' tables, concatenated in their order, are
    the whole read."""
    src = cfg.label
    item_frames, inter_frames, files = [], [], []
    n_items = n_inter = 0
    for category, review_path, meta_path in _pairs(cfg.path):
        if part is not None and category != part[0]:
            continue
        span = None if part is None else part[1]
        domain = cfg.domain or category
        if span is None or span.start == 0:  # a category's items come with its first part
            recs, lines, raws, n = _jsonl(meta_path, src, "items", rejects)
            n_items += n
            item_frames.append(_items_frame(recs, domain, meta_path, lines, raws))
            files.append(meta_path)
        recs, lines, raws, n = _jsonl(review_path, src, "interactions", rejects, span)
        n_inter += n
        df = pd.DataFrame(
            {
                "user_id": [_text(r.get("user_id")) for r in recs],
                "item_id": [_text(r.get("parent_asin")) for r in recs],
                "domain": domain,
                "timestamp": pd.Series([r.get("timestamp") for r in recs], dtype=object),
                "rating": pd.Series([r.get("rating") for r in recs], dtype=object),
                "file": review_path,
                "line": lines,
                "raw": raws,
            }
        )
        inter_frames.append(parse_feedback(df, src, rejects, unit="ms"))
        files.append(review_path)
    items = pd.concat(item_frames, ignore_index=True) if item_frames else _items_frame([], "", "", [], [])
    inter = pd.concat(inter_frames, ignore_index=True)
    return SourceTables(
        items=items,
        interactions=inter,
        read={"items": n_items, "interactions": n_inter},
        files=files,
        notes=["timestamps converted from milliseconds to seconds"],
    )


def _items_frame(recs: list[dict], domain: str, meta_path: str, lines: list[int], raws: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [_text(r.get("parent_asin")) for r in recs],
            "domain": domain,
            "title": [_text(r.get("title")) for r in recs],
            "year": pd.array([None] * len(recs), dtype="Int32"),
            "category": [", ".join(r.get("categories") or []) or _text(r.get("main_category")) for r in recs],
            "brand": [_text(r.get("store")) for r in recs],
            "description": [_text(r.get("description")) for r in recs],
            "details": [_details(r) for r in recs],
            "file": meta_path,
            "line": lines,
            "raw": raws,
        }
    )
