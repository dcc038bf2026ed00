"""MIND (Microsoft News): ``news.tsv`` + ``behaviors.tsv``, tab-separated, no header.

news.tsv: ``NewsID, Category, SubCategory, Title, Abstract, URL, TitleEntities, AbstractEntities``.
behaviors.tsv: ``ImpressionID, UserID, Time (M/D/YYYY h:mm:ss AM), History (space-separated NewsIDs),
Impressions (NewsID-1 clicked / NewsID-0 shown, not clicked)``.

Impressions become interactions at the impression time with ``click`` 1 or 0. The click history has
no times: each user's history is read once (MIND repeats it on every impression row of that user) and
placed one second apart, in its order, just before that user's first impression.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from recbase import storage
from recbase.config import SourceConfig
from recbase.data.rejects import Rejects
from recbase.data.sources.base import SourceFormatError, SourceTables, require, split_delimited

TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


def _time(s: str) -> int | None:
    try:
        return int(datetime.strptime(s.strip(), TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return None


def read(cfg: SourceConfig, rejects: Rejects) -> SourceTables:
    src, domain = cfg.label, cfg.domain or "news"
    news = require(storage.join(cfg.path, "news.tsv"), "MIND news.tsv")
    behaviors = require(storage.join(cfg.path, "behaviors.tsv"), "MIND behaviors.tsv")

    rows, lines, raws, n_items = split_delimited(news, "\t", 8, "utf-8", src, "items", rejects)
    items = pd.DataFrame(
        {
            "item_id": [r[0].strip() for r in rows],
            "domain": domain,
            "title": [r[3] for r in rows],
            "year": pd.array([None] * len(rows), dtype="Int32"),
            "category": [", ".join(x for x in (r[1], r[2]) if x) or None for r in rows],
            "brand": None,
            "description": [r[4] or None for r in rows],
            "details": None,
            "file": news,
            "line": lines,
            "raw": raws,
        }
    )

    rows, lines, raws, n_rows = split_delimited(behaviors, "\t", 5, "utf-8", src, "interactions", rejects)
    if rows and not rows[0][0].strip().isdigit() and rows[0][1] == "UserID":
        raise SourceFormatError(f"{behaviors}: has a header line; published MIND files have none")
    out = {k: [] for k in ("user_id", "item_id", "timestamp", "click", "line", "raw")}
    seen_history: set[tuple[str, str]] = set()
    first_time: dict[str, int] = {}
    parsed = []
    for fields, lineno, raw in zip(rows, lines, raws):
        t = _time(fields[2])
        if t is None:
            rejects.add(src, "interactions", behaviors, lineno, "unparsable_timestamp", raw)
            continue
        imps = fields[4].split()
        if any(len(x.rsplit("-", 1)) != 2 or x.rsplit("-", 1)[1] not in ("0", "1") for x in imps):
            rejects.add(src, "interactions", behaviors, lineno, "malformed_impression", raw)
            continue
        user = fields[1].strip()
        first_time[user] = min(first_time.get(user, t), t)
        parsed.append((user, t, fields[3].split(), imps, lineno, raw))
    n_repeated = 0
    for user, t, history, imps, lineno, raw in parsed:
        t0 = first_time[user]
        for pos, news_id in enumerate(history):
            if (user, news_id) in seen_history:
                n_repeated += 1
                continue
            seen_history.add((user, news_id))
            _append(out, user, news_id, t0 - len(history) + pos, 1, lineno, raw)
        for x in imps:
            news_id, label = x.rsplit("-", 1)
            _append(out, user, news_id, t, int(label), lineno, raw)
    inter = pd.DataFrame(
        {
            "user_id": out["user_id"],
            "item_id": out["item_id"],
            "timestamp": pd.array(out["timestamp"], dtype="Int64"),
            "rating": pd.array([None] * len(out["user_id"]), dtype="Float32"),
            "click": pd.array(out["click"], dtype="Int8"),
            "file": behaviors,
            "line": out["line"],
            "raw": out["raw"],
        }
    )
    return SourceTables(
        items=items,
        interactions=inter,
        # MIND's interactions are expanded from impression rows: what was read is counted in
        # interaction records (history entries + impressions) of the rows that parsed, plus bad rows
        read={"items": n_items, "interactions": len(inter) + n_rows - len(parsed)},
        files=[news, behaviors],
        notes=[
            f"{n_rows} impression rows expanded to {len(inter)} interaction records",
            f"{n_repeated} history entries repeated on later impression rows were read once per user",
            "history clicks have no time in MIND: placed 1 s apart before the user's first impression",
        ],
    )


def _append(out, user, item, ts, click, lineno, raw) -> None:
    out["user_id"].append(user)
    out["item_id"].append(item)
    out["timestamp"].append(ts)
    out["click"].append(click)
    out["line"].append(lineno)
    out["raw"].append(raw)
