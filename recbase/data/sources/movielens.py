"""MovieLens in its two published layouts.

* GroupLens ``ml-1m``: ``movies.dat`` (``MovieID::Title::Genre|Genre``) and ``ratings.dat``
  (``UserID::MovieID::Rating::Timestamp``), ``::``-separated, latin-1.
* RecBole atomic files: ``<name>.item`` and ``<name>.inter``, tab-separated UTF-8 with a typed header
  (``item_id:token``, ``movie_title:token``, ``release_year:float``, ``genre:token`` (space-separated),
  ``user_id:token``, ``rating:float``, ``timestamp:float``).
"""
from __future__ import annotations

import re

import pandas as pd

from recbase import storage
from recbase.config import SourceConfig
from recbase.data.rejects import Rejects
from recbase.data.sources import builtin
from recbase.data.sources.base import (
    SourceFormatError,
    SourceTables,
    iter_lines,
    parse_feedback,
    reject_where,
    require,
    split_delimited,
)

YEAR_IN_TITLE = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
NO_GENRE = "(no genres listed)"


def read(cfg: SourceConfig, rejects: Rejects) -> SourceTables:
    root = builtin.resolve(cfg.path)
    layout = cfg.layout
    if layout == "auto":
        layout = "grouplens" if storage.exists(storage.join(root, "ratings.dat")) else "recbole"
    if layout == "grouplens":
        items, inter, read_counts, files = _read_grouplens(root, cfg.label, rejects)
    else:
        items, inter, read_counts, files = _read_recbole(root, cfg.label, rejects)
    genres = items.pop("_genres")
    items["category"] = genres.map(lambda g: ", ".join(g) if g else None)
    if cfg.pseudo_domain == "first_genre":
        items["domain"] = genres.map(lambda g: g[0] if g else NO_GENRE)
        notes = ["domain = the movie's first listed genre (pseudo-domains for held-out studies)"]
    else:
        items["domain"] = cfg.domain or "movielens"
        notes = []
    return SourceTables(items=items, interactions=inter, read=read_counts, files=files, notes=notes)


def _split_title(title: str) -> tuple[str, int | None]:
    m = YEAR_IN_TITLE.match(title)
    if m:
        return m.group(1), int(m.group(2))
    return title, None


def _read_grouplens(root: str, source: str, rejects: Rejects):
    movies = require(storage.join(root, "movies.dat"), "GroupLens movies.dat: MovieID::Title::Genres")
    ratings = require(storage.join(root, "ratings.dat"), "GroupLens ratings.dat: UserID::MovieID::Rating::Timestamp")
    rows, lines, raws, n_items = split_delimited(movies, "::", 3, "latin-1", source, "items", rejects)
    titles = [_split_title(r[1]) for r in rows]
    items = pd.DataFrame(
        {
            "item_id": [r[0].strip() for r in rows],
            "title": [t for t, _ in titles],
            "year": pd.array([y for _, y in titles], dtype="Int32"),
            "_genres": [[g for g in r[2].split("|") if g and g != NO_GENRE] for r in rows],
            "file": movies,
            "line": lines,
            "raw": raws,
        }
    )
    rows, lines, raws, n_inter = split_delimited(ratings, "::", 4, "latin-1", source, "interactions", rejects)
    inter = _interactions(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
        ratings, lines, raws, source, rejects,
    )
    return items, inter, {"items": n_items, "interactions": n_inter}, [movies, ratings]


def _header(path: str) -> list[str]:
    for _, text, _ in iter_lines(path, "utf-8"):
        if text is None:
            raise SourceFormatError(f"{path}: the header line is not UTF-8")
        return [h.split(":", 1)[0].strip() for h in text.split("\t")]
    raise SourceFormatError(f"{path}: empty file (expected a RecBole header line)")


def _find(root: str, suffix: str) -> str:
    fs, p = storage.filesystem(root)
    if not fs.isdir(p):
        raise SourceFormatError(f"{root}: not a directory (expected a MovieLens dataset directory)")
    found = sorted(f for f in fs.ls(p, detail=False) if f.endswith(suffix))
    if not found:
        raise SourceFormatError(
            f"{root}: no ratings.dat (GroupLens layout) and no *{suffix} file (RecBole layout)"
        )
    if len(found) > 1:
        raise SourceFormatError(f"{root}: several *{suffix} files {found}; point path at one dataset")
    return root.rstrip("/") + "/" + found[0].rsplit("/", 1)[-1]


def _columns(path: str, header: list[str], required: list[str]) -> dict[str, int]:
    missing = [c for c in required if c not in header]
    if missing:
        raise SourceFormatError(f"{path}: missing column(s) {missing}; header has {header}")
    return {c: header.index(c) for c in header}


def _read_recbole(root: str, source: str, rejects: Rejects):
    item_path, inter_path = _find(root, ".item"), _find(root, ".inter")
    header = _header(item_path)
    col = _columns(item_path, header, ["item_id"])
    rows, lines, raws, n_items = split_delimited(
        item_path, "\t", len(header), "utf-8", source, "items", rejects, skip_header=True
    )
    title_col = col.get("movie_title", col.get("title"))
    year_col = col.get("release_year", col.get("year"))
    genre_col = col.get("genre", col.get("genres"))
    items = pd.DataFrame(
        {
            "item_id": [r[col["item_id"]].strip() for r in rows],
            "title": [r[title_col] if title_col is not None else _split_title(r[col["item_id"]])[0] for r in rows],
            "year": pd.Series([r[year_col] if year_col is not None else None for r in rows], dtype=object),
            "_genres": [r[genre_col].split() if genre_col is not None else [] for r in rows],
            "file": item_path,
            "line": lines,
            "raw": raws,
        }
    )
    year = pd.to_numeric(items["year"].replace("", None), errors="coerce")
    bad_year = items["year"].notna() & (items["year"] != "") & (year.isna() | (year != year.round()))
    items = reject_where(items, bad_year, source, "items", "unparsable_year", rejects)
    items["year"] = year[items.index].astype("Int32")

    header = _header(inter_path)
    col = _columns(inter_path, header, ["user_id", "item_id", "timestamp"])
    rows, lines, raws, n_inter = split_delimited(
        inter_path, "\t", len(header), "utf-8", source, "interactions", rejects, skip_header=True
    )
    rating = [r[col["rating"]] for r in rows] if "rating" in col else [None] * len(rows)
    inter = _interactions(
        [r[col["user_id"]] for r in rows], [r[col["item_id"]] for r in rows], rating,
        [r[col["timestamp"]] for r in rows], inter_path, lines, raws, source, rejects,
    )
    return items, inter, {"items": n_items, "interactions": n_inter}, [item_path, inter_path]


def _interactions(users, item_ids, ratings, timestamps, path, lines, raws, source, rejects) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "user_id": [u.strip() for u in users],
            "item_id": [i.strip() for i in item_ids],
            "rating": pd.Series(ratings, dtype=object),
            "timestamp": pd.Series(timestamps, dtype=object),
            "file": path,
            "line": lines,
            "raw": raws,
        }
    )
    return parse_feedback(df, source, rejects)
