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


# readers that can read a source in independent parts (corpus preparation on Ray reads them in parallel)
PARTS = {"amazon2023": amazon2023.parts}


def source_parts(cfg: SourceConfig, part_bytes: int) -> list:
    """The parts ``read_source(cfg, rejects, part)`` reads, each about ``part_bytes`` of input or less where
    the format can cut its files; [None] (the whole source) where a format has no parts."""
    return PARTS[cfg.kind](cfg, part_bytes) if cfg.kind in PARTS else [None]


def read_source(cfg: SourceConfig, rejects: Rejects, part=None) -> SourceTables:
    if part is None:
        return READERS[cfg.kind](cfg, rejects)
    return READERS[cfg.kind](cfg, rejects, part=part)


__all__ = ["PARTS", "READERS", "SourceFormatError", "SourceTables", "read_source", "source_parts"]
