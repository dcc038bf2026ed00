"""What every source reader returns, and the line-level parsing they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd

from recbase import storage
from recbase.data.rejects import Rejects

# columns a reader fills; missing text fields are allowed, the ids are not
ITEM_COLUMNS = ["item_id", "domain", "title", "year", "category", "brand", "description", "details"]
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "rating", "click"]
PAIR_COLUMNS = ["user_id", "item_id", "click"]
# bookkeeping columns carried with every parsed row, for the rejects file
ORIGIN = ["file", "line", "raw"]


class SourceFormatError(ValueError):
    """An input file is missing or does not have the published columns."""


@dataclass
class SourceTables:
    """One source, parsed. Rows already rejected at parse time are in ``rejects``, not here."""

    items: pd.DataFrame  # ITEM_COLUMNS + ORIGIN
    interactions: pd.DataFrame  # INTERACTION_COLUMNS + ORIGIN; item_id refers to this source's items
    read: dict[str, int]  # rows read per table, rejects included
    files: list[str]
    notes: list[str] = field(default_factory=list)
    # evaluation pairs the dataset itself defines (RecBench test.parquet) and the histories they use
    pairs: pd.DataFrame | None = None  # PAIR_COLUMNS + ORIGIN
    pair_histories: dict[str, list[str]] | None = None


def require(path: str, what: str) -> str:
    if not storage.exists(path):
        raise SourceFormatError(f"{path}: missing ({what})")
    return path


@dataclass(frozen=True)
class Span:
    """The lines of a plain-text file that start in bytes [start, end), ``first_line`` the file's number of
    the first of them: a part of a file that one task reads on its own (``spans``)."""

    start: int
    end: int
    first_line: int


def _lines_in(raw: bytes) -> list[bytes]:
    """The lines ``bytes.splitlines`` makes of what one ``readline`` returned (a bare CR also ends a line)."""
    return raw.splitlines() if b"\r" in raw else [raw.rstrip(b"\n")]


def spans(path: str, part_bytes: int) -> list[Span]:
    """``path`` cut at line starts into spans of about ``part_bytes`` bytes, their lines numbered as
    ``iter_lines`` numbers the whole file (one pass that holds one line); a gzipped file is one span."""
    fs, p = storage.filesystem(path)
    size = fs.size(p)
    if path.endswith(".gz") or size <= part_bytes:
        return [Span(0, size, 1)]
    out, start, first, line, pos = [], 0, 1, 1, 0
    with storage.open_binary(path) as f:
        for raw in iter(f.readline, b""):
            pos += len(raw)
            line += len(_lines_in(raw))
            if pos - start >= part_bytes:
                out.append(Span(start, pos, first))
                start, first = pos, line
    if pos > start or not out:
        out.append(Span(start, pos, first))
    return out


def iter_lines(path: str, encoding: str, span: Span | None = None) -> Iterator[tuple[int, str | None, bytes]]:
    """(1-based line number, decoded text or None when undecodable, raw bytes), line endings removed;
    with ``span`` only its lines, read from its first byte (the file's own numbers)."""
    if span is None:
        with storage.open_binary(path) as f:
            data = f.read()
        if path.endswith(".gz"):
            import gzip

            data = gzip.decompress(data)
        lines: Iterator[bytes] = iter(data.splitlines())
    else:
        lines = _span_lines(path, span)
    for i, raw in enumerate(lines, start=1 if span is None else span.first_line):
        try:
            yield i, raw.decode(encoding), raw
        except UnicodeDecodeError:
            yield i, None, raw


def _span_lines(path: str, span: Span) -> Iterator[bytes]:
    with storage.open_binary(path) as f:
        f.seek(span.start)
        pos = span.start
        while pos < span.end:
            raw = f.readline()
            if not raw:
                return
            pos += len(raw)
            yield from _lines_in(raw)


def split_delimited(
    path: str,
    sep: str,
    n_fields: int,
    encoding: str,
    source: str,
    table: str,
    rejects: Rejects,
    skip_header: bool = False,
) -> tuple[list[list[str]], list[int], list[str], int]:
    """Split a delimited text file; undecodable and wrong-width lines go to ``rejects``.

    Returns (rows of fields, their line numbers, their raw text, number of data lines read).
    """
    rows, lines, raws, n_read = [], [], [], 0
    bad_width, undecodable = [], []
    for lineno, text, raw in iter_lines(path, encoding):
        if skip_header and lineno == 1:
            continue
        if text is not None and not text.strip():
            continue  # blank lines (e.g. a trailing newline) carry no record
        n_read += 1
        if text is None:
            undecodable.append((lineno, raw.decode(encoding, errors="backslashreplace")))
            continue
        fields = text.split(sep)
        if len(fields) != n_fields:
            bad_width.append((lineno, text))
            continue
        rows.append(fields)
        lines.append(lineno)
        raws.append(text)
    for reason, bad in (("undecodable_text", undecodable), ("wrong_field_count", bad_width)):
        if bad:
            rejects.add_frame(
                source, table, reason,
                pd.DataFrame({"file": path, "line": [b[0] for b in bad], "raw": [b[1] for b in bad]}),
            )
    return rows, lines, raws, n_read


def reject_where(
    df: pd.DataFrame, mask: pd.Series, source: str, table: str, reason: str, rejects: Rejects
) -> pd.DataFrame:
    """Move the rows where ``mask`` holds into ``rejects``; return the others."""
    mask = mask.fillna(True).astype(bool)
    if mask.any():
        rejects.add_frame(source, table, reason, df.loc[mask, ORIGIN])
    return df.loc[~mask]


def to_seconds(values: pd.Series, unit: str = "s") -> pd.Series:
    """Parse timestamps to int64 seconds; unparsable values become <NA> (the caller rejects them)."""
    num = pd.to_numeric(values, errors="coerce")
    ok = num.notna() & (num == num.round())
    if unit == "ms":
        num = num // 1000
    return num.where(ok).astype("Int64")


def parse_feedback(df: pd.DataFrame, source: str, rejects: Rejects, unit: str = "s") -> pd.DataFrame:
    """Raw ``timestamp`` and ``rating`` columns -> int64 seconds and float32; unparsable rows rejected.

    Adds a null ``click`` column: rated and implicit feedback carry no impression labels.
    """
    df = df.assign(timestamp=to_seconds(df["timestamp"].astype(object), unit=unit))
    df = reject_where(df, df["timestamp"].isna(), source, "interactions", "unparsable_timestamp", rejects)
    rating = pd.to_numeric(df["rating"], errors="coerce")
    df = reject_where(df, df["rating"].notna() & rating.isna(), source, "interactions", "unparsable_rating", rejects)
    df["rating"] = rating[df.index].astype("Float32")
    df["click"] = pd.array([pd.NA] * len(df), dtype="Int8")
    return df
