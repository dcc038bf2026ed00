"""Collects rejected rows with their reason; they are written out and counted, never dropped silently."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pandas as pd
import pyarrow as pa

from recbase.data.schema import REJECT_REASONS, REJECTS


class Rejects:
    def __init__(self) -> None:
        self._frames: list[pd.DataFrame] = []
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (source, table, reason) -> n

    def add(self, source: str, table: str, file: str, line: int | None, reason: str, raw: str) -> None:
        self.add_frame(
            source, table, reason, pd.DataFrame({"file": [file], "line": [line], "raw": [raw]})
        )

    def add_frame(self, source: str, table: str, reason: str, rows: pd.DataFrame) -> None:
        """Reject every row of ``rows`` (columns ``file``, ``line``, ``raw``) for ``reason``."""
        if reason not in REJECT_REASONS:  # the manifest's reasons come from one list in schema.py
            raise ValueError(f"unknown reject reason {reason!r}; add it to schema.REJECT_REASONS")
        if rows.empty:
            return
        frame = pd.DataFrame(
            {
                "source": source,
                "table": table,
                "file": rows["file"].astype(str).to_numpy(),
                "line": pd.array(rows["line"], dtype="Int64"),
                "reason": reason,
                "raw": rows["raw"].astype(str).to_numpy(),
            }
        )
        self._frames.append(frame)
        self.counts[(source, table, reason)] += len(frame)

    def extend(self, other: "Rejects") -> None:
        """Take every reject ``other`` holds (another process's, e.g.)."""
        self._frames += other._frames
        self.counts.update(other.counts)

    def count(self, source: str, table: str) -> dict[str, int]:
        return {r: n for (s, t, r), n in sorted(self.counts.items()) if s == source and t == table}

    def total(self) -> int:
        return sum(self.counts.values())

    def to_table(self) -> pa.Table:
        if not self._frames:
            return REJECTS.empty_table()
        df = pd.concat(self._frames, ignore_index=True)
        return pa.Table.from_pandas(df, schema=REJECTS, preserve_index=False)


def raw_json(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A JSON rendering of each row's ``columns``, for rows that had no raw line of their own."""
    records = df[columns].astype(object).where(df[columns].notna(), None).to_dict("records")
    return pd.Series([json.dumps(r, default=_plain, ensure_ascii=False) for r in records], index=df.index)


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)
