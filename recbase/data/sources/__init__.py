"""One reader per published dataset format; each returns ``SourceTables``."""
from __future__ import annotations

from recbase.config import SourceConfig
from recbase.data.rejects import Rejects
from recbase.data.sources import amazon2023, mind, movielens, recbench
from recbase.data.sources.base import SourceFormatError, SourceTables

READERS = {
    "movielens": movielens.read,
    "amazon2023": amazon2023.read,
    "mind": mind.read,
    "recbench": recbench.read,
}


def read_source(cfg: SourceConfig, rejects: Rejects) -> SourceTables:
    return READERS[cfg.kind](cfg, rejects)


__all__ = ["READERS", "SourceFormatError", "SourceTables", "read_source"]
