"""Prepare a corpus: sources -> one clean items/interactions pair -> histories and held-out splits.

Writes under ``data.output`` (local or s3://)::

    items.parquet           (domain, item_id) unique, with the unified text
    interactions.parquet    canonical time order
    rejects.parquet         every rejected row, its file, line, reason and raw record
    pretrain/histories.parquet
    pretrain/item_stats.parquet   per item, the pretraining users' interactions and likes (baselines)
    eval/unseen_domains.parquet, eval/unseen_users.parquet          the test pairs
    eval/validation_domains.parquet, eval/validation_users.parquet  the validation pairs
    eval/<source>.parquet (a dataset's own pairs)
    manifest.json           written last: its presence marks the corpus complete
"""
from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

import recbase
from recbase import storage
from recbase.artifacts import Corpus
from recbase.config import ConfigError, DataConfig, to_dict
from recbase.data import splits
from recbase.data.rejects import Rejects
from recbase.data.schema import INTERACTIONS, ITEM_STATS, ITEMS, SCHEMA_VERSION
from recbase.data.sources import read_source
from recbase.data.sources.base import ITEM_COLUMNS, ORIGIN, SourceTables, reject_where
from recbase.data.text import format_items



class CountMismatch(AssertionError):
    """kept + rejected != read for some table: a row went missing (a bug, never expected)."""


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype("string").str.strip() == "")


def clean_items(label: str, items: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
    """One source's items: null ids and duplicate (domain, item_id) rejected, the first kept."""
    items = reject_null_items(label, items, rejects)
    return reject_where(items, items.duplicated(["domain", "item_id"]), label, "items", "duplicate_item", rejects)


def reject_null_items(label: str, items: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
    """Items in the corpus's columns (text fields a source lacks: null), those without an id or a domain
    rejected: a check on each row alone, so any part of a source is checked as the whole source is."""
    items = items.reindex(columns=[*ITEM_COLUMNS, *ORIGIN])
    return reject_where(items, _blank(items["item_id"]) | _blank(items["domain"]), label, "items", "null_id", rejects)


# why an item row leaves the corpus after its id checks (item_fates); "" = kept
KEPT, DUPLICATE, UNUSED = "", "duplicate_item", "item_without_interactions"


def item_fates(keys: pd.DataFrame, used: set | None) -> np.ndarray:
    """For item rows (columns domain, item_id) in the sources' order, each source's rows in read order:
    ``DUPLICATE`` where an earlier row has the same (domain, item_id) — the first listed source's, and in a
    source its first row, is kept — else ``UNUSED`` where no interaction or given pair uses it (``used``:
    the (domain, item_id) that are; None keeps every item), else ``KEPT``."""
    fates = np.full(len(keys), KEPT, dtype=object)
    dup = keys.duplicated(["domain", "item_id"]).to_numpy()
    fates[dup] = DUPLICATE
    if used is not None:
        unused = np.fromiter((k not in used for k in zip(keys["domain"], keys["item_id"])), bool, len(keys))
        fates[unused & ~dup] = UNUSED
    return fates


def reject_fates(items: pd.DataFrame, fates: np.ndarray, rejects: Rejects) -> pd.DataFrame:
    """The rows ``item_fates`` keeps; the others rejected with their fate, under their own source."""
    for reason in (DUPLICATE, UNUSED):
        m = fates == reason
        for label in items.loc[m, "_source"].unique():
            rejects.add_frame(label, "items", reason, items.loc[m & (items["_source"] == label).to_numpy(), ORIGIN])
    return items.loc[fates == KEPT]


def sort_items(items: pd.DataFrame) -> pd.DataFrame:
    """The corpus's item order."""
    return items.sort_values(["domain", "item_id"], kind="mergesort").reset_index(drop=True)


def clean_interactions(label: str, inter: pd.DataFrame, item_keys: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
    """One source's interactions, in the order read, against its cleaned items' (domain, item_id): null ids,
    interactions pointing at no item, exact duplicates (the first kept). Every check looks at one user's rows
    only (or one row), so any whole-user subset of a source is cleaned exactly as the whole source is."""
    inter = reject_where(inter, _blank(inter["user_id"]) | _blank(inter["item_id"]), label, "interactions", "null_id", rejects)
    if "domain" not in inter.columns:
        # the source's items say which domain an interaction belongs to
        domain_of = item_keys.drop_duplicates("item_id").set_index("item_id")["domain"]
        inter = inter.assign(domain=inter["item_id"].map(domain_of))
        unknown = inter["domain"].isna()
    else:
        known = pd.MultiIndex.from_frame(item_keys[["domain", "item_id"]])
        unknown = ~pd.MultiIndex.from_frame(inter[["domain", "item_id"]]).isin(known)
        unknown = pd.Series(unknown, index=inter.index)
    inter = reject_where(inter, unknown, label, "interactions", "unknown_item", rejects)
    dup = inter.duplicated(["user_id", "item_id", "domain", "timestamp", "rating", "click"])
    return reject_where(inter, dup, label, "interactions", "duplicate", rejects)


def _clean_source(label: str, t: SourceTables, rejects: Rejects):
    """Checks every source shares: null ids, duplicates, interactions pointing at no item."""
    items = clean_items(label, t.items, rejects)
    inter = clean_interactions(label, t.interactions, items[["domain", "item_id"]], rejects)
    pairs = t.pairs
    if pairs is not None:
        pairs = reject_where(pairs, _blank(pairs["user_id"]) | _blank(pairs["item_id"]), label, "pairs", "null_id", rejects)
        pairs = reject_where(pairs, ~pairs["user_id"].isin(list(t.pair_histories or {})), label, "pairs", "unknown_user", rejects)
        known = set(items["item_id"])
        pairs = reject_where(pairs, ~pairs["item_id"].isin(known), label, "pairs", "unknown_item", rejects)
        # history entries naming no item were rejected above as interactions; the pairs' histories
        # are the same records, so they leave them out too
        t.pair_histories = {u: [i for i in h if i in known] for u, h in (t.pair_histories or {}).items()}
    return items, inter, pairs


def finish_items(items: pd.DataFrame, used: set, cfg: DataConfig, rejects: Rejects) -> pd.DataFrame:
    """Every source's cleaned items in one table: a (domain, item_id) two sources share kept by the first
    listed, items no interaction or given pair uses rejected (``drop_items_without_interactions``), sorted,
    with the unified text."""
    fates = item_fates(items[["domain", "item_id"]], used if cfg.drop_items_without_interactions else None)
    items = sort_items(reject_fates(items, fates, rejects))
    items["text"] = format_items(items, cfg.text_format)
    return items


def check_counts(reports: list[dict], kept: dict[str, dict[str, int]], rejects: Rejects) -> None:
    """kept + rejected = read per source and table, or we stop before writing anything; fills each
    report's ``kept`` and ``rejected``."""
    for rep in reports:
        rep["kept"] = kept.get(rep["name"], {})
        rep["rejected"] = {t: rejects.count(rep["name"], t) for t in rep["read"]}
        for t, n_read in rep["read"].items():
            n_rej = sum(rep["rejected"][t].values())
            if rep["kept"].get(t, 0) + n_rej != n_read:
                raise CountMismatch(f"{rep['name']}/{t}: kept {rep['kept'].get(t, 0)} + rejected {n_rej} != read {n_read}")


def prepare(cfg: DataConfig, log: Callable[[str], None] = print) -> dict:
    """Prepare the corpus ``cfg`` describes in this process (pandas); returns its manifest (skips if already
    complete). ``recbase.launch.corpus`` runs the same steps over Ray Data for corpora too large for one."""
    out, corpus = cfg.output, Corpus(cfg.output)
    finished = corpus.reuse(cfg.force, log, settings=cfg, redo="prepare it again")
    if finished is not None:
        return finished
    t_start = time.perf_counter()
    rejects = Rejects()
    reports, item_frames, inter_frames, given = [], [], [], []
    for src in cfg.sources:
        t0 = time.perf_counter()
        tables = read_source(src, rejects)
        items, inter, pairs = _clean_source(src.label, tables, rejects)
        items = items.assign(_source=src.label)
        inter = inter.assign(_source=src.label)
        item_frames.append(items)
        inter_frames.append(inter)
        if pairs is not None:
            given.append((src.label, items["domain"].iloc[0] if len(items) else src.label, pairs, tables.pair_histories))
        reports.append(source_report(src, tables))
        log(f"[corpus] read {src.label}: {tables.read} ({time.perf_counter() - t0:.1f} s)")

    inter = pd.concat(inter_frames, ignore_index=True)
    used = set(zip(inter["domain"], inter["item_id"]))
    for label, domain, pairs, histories in given:
        used |= {(domain, i) for i in pairs["item_id"]}
        used |= {(domain, i) for h in histories.values() for i in h}
    items = finish_items(pd.concat(item_frames, ignore_index=True), used, cfg, rejects)
    inter = splits.order(inter)

    kept: dict[str, dict[str, int]] = {}
    for rep in reports:
        kept[rep["name"]] = {"items": int((items["_source"] == rep["name"]).sum()),
                             "interactions": int((inter["_source"] == rep["name"]).sum())}
    for label, _, pairs, _ in given:
        kept[label]["pairs"] = len(pairs)
    check_counts(reports, kept, rejects)

    check_split_domains(cfg, items)
    held, val_users = held_out_users(cfg, inter["user_id"].unique())
    part = split_users(cfg, inter, items_by_domain(items), held, val_users)
    item_stats = merge_item_stats([part.item_stats])
    tables = {name: pa.concat_tables([t for _, t in per]) for name, per in part.pairs.items()}
    given_stats = {}
    for label, domain, pairs, histories in given:
        tables[label], given_stats[label] = splits.given_pairs(pairs, domain, histories, cfg.max_history)
    split_report = merge_split_report(cfg, [part.without_tables()], held, val_users, stats_totals(item_stats),
                                      given_stats)

    t_write = time.perf_counter()
    storage.write_parquet(pa.Table.from_pandas(items[ITEMS.names], schema=ITEMS, preserve_index=False), corpus.items)
    storage.write_parquet(pa.Table.from_pandas(inter[INTERACTIONS.names], schema=INTERACTIONS, preserve_index=False), corpus.interactions)
    storage.write_parquet(rejects.to_table(), corpus.rejects)
    storage.write_parquet(part.histories, corpus.histories)
    storage.write_parquet(item_stats, corpus.item_stats)
    for name, table in tables.items():
        storage.write_parquet(table, corpus.pairs(name))
    manifest = build_manifest(cfg, reports, items, domain_counts(inter), int(inter["user_id"].nunique()),
                              split_report, tables, time.perf_counter() - t_start, time.perf_counter() - t_write)
    corpus.write_manifest(manifest)  # last: the corpus is complete once this exists
    log(f"[corpus] wrote {out} ({manifest['seconds']['total']} s)")
    return manifest


def source_report(src, tables: SourceTables) -> dict:
    return {"name": src.label, "kind": src.kind, "path": src.path, "files": tables.files, "notes": tables.notes,
            "read": tables.read}


def build_manifest(cfg: DataConfig, reports: list[dict], items: pd.DataFrame, dom_counts: dict, n_users: int,
                   split_report: dict, pair_names, seconds: float, write_seconds: float, **extra) -> dict:
    """``items``: the kept items (a ``domain`` column is enough)."""
    files = dict(Corpus.FILES)
    for name in pair_names:
        files[f"{Corpus.pairs_dir}/{name}"] = Corpus.pairs_file(name)
    n_items = items.groupby("domain").size()
    return {
        "schema_version": SCHEMA_VERSION,
        "recbase_version": recbase.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "output": cfg.output,
        "config": to_dict(cfg),
        "sources": reports,
        "totals": _totals(reports),
        "domains": {d: {"items": int(n_items.get(d, 0)), **dom_counts.get(d, {"interactions": 0, "users": 0})}
                    for d in sorted(n_items.index)},
        "users": n_users,
        "text_format": cfg.text_format,
        "split": split_report,
        "files": files,
        **extra,
        "seconds": {"total": round(seconds, 2), "write": round(write_seconds, 2)},
    }


def domain_counts(inter: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per domain, its interactions and users (whole-user subsets add up: ``merge_domain_counts``)."""
    g = inter.groupby("domain")
    n_inter, n_users = g.size(), g["user_id"].nunique()
    return {d: {"interactions": int(n_inter[d]), "users": int(n_users[d])} for d in n_inter.index}


def merge_domain_counts(parts: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for p in parts:
        for d, c in p.items():
            o = out.setdefault(d, {"interactions": 0, "users": 0})
            o["interactions"] += c["interactions"]
            o["users"] += c["users"]
    return out


def check_split_domains(cfg: DataConfig, items: pd.DataFrame) -> None:
    all_domains = sorted(items["domain"].unique())
    for key in ("unseen_domains", "validation_domains"):
        missing = [d for d in getattr(cfg.split, key) if d not in all_domains]
        if missing:
            raise ConfigError(f"data.split.{key} {missing} are not domains of this corpus; domains: {all_domains}")


def held_out_users(cfg: DataConfig, users) -> tuple[np.ndarray, np.ndarray]:
    """The test users and the validation users, seeded samples of every (kept) user, disjoint."""
    sp = cfg.split
    held = splits.held_out_users(users, sp.unseen_user_fraction, sp.seed)
    return held, splits.held_out_users(users, sp.validation_user_fraction, sp.seed + 1000, exclude=held)


def items_by_domain(items: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each domain's item ids: the pool implicit data's negatives are sampled from."""
    return {d: g["item_id"].to_numpy() for d, g in items.groupby("domain")}


@dataclass
class SplitPart:
    """What ``split_users`` makes of some whole users: their pretraining histories, their item counts, their
    evaluation pairs per dataset (one table per held-out domain, in the config's order; one for a user
    dataset) and the counts the split report adds up."""

    histories: pa.Table | None
    hist_stats: dict[str, int]
    item_stats: pa.Table | None  # None where the counts went elsewhere (the Ray path writes them per shard)
    pairs: dict[str, list[tuple[str, pa.Table | None]]]
    pair_stats: dict[str, list[tuple[str, dict]]]
    excluded: dict[str, int]

    def without_tables(self) -> "SplitPart":
        return SplitPart(None, self.hist_stats, self.item_stats, {}, self.pair_stats, self.excluded)


def split_users(cfg: DataConfig, inter: pd.DataFrame, pools: dict[str, np.ndarray], held, val_users) -> SplitPart:
    """The held-out protocols applied to ``inter``: ordered interactions of whole users (all of a user's rows
    or none; any such subset gives these users' rows of the whole corpus's result). ``held``/``val_users``
    are the whole corpus's test and validation users, ``pools`` every domain's items."""
    sp = cfg.split
    unseen_dom, val_dom = list(sp.unseen_domains), list(sp.validation_domains)
    in_held, in_val = inter["user_id"].isin(held), inter["user_id"].isin(val_users)
    in_unseen_dom, in_val_dom = inter["domain"].isin(unseen_dom), inter["domain"].isin(val_dom)
    out_dom = in_unseen_dom | in_val_dom
    liked = splits.liked(inter, sp.click_min_rating)
    # pretraining: seen users, seen domains, the interactions data.history_feedback keeps
    scope = ~in_held & ~in_val & ~out_dom
    kept = splits.in_history(liked, cfg.history_feedback)
    pre = inter.loc[scope & kept].assign(liked=liked[(scope & kept).to_numpy()])
    hist_table, hist_stats = splits.pretrain_histories(pre, cfg.min_history, cfg.max_history)
    # what the pretraining users did in the pretraining domains, every interaction: the baselines' counts
    counted = (scope & inter["user_id"].isin(hist_table.column("user_id").to_pylist())).to_numpy()
    stats_table = splits.item_stats(inter.loc[counted], liked[counted])

    touched: dict[str, set] = defaultdict(set)
    if (inter["rating"].isna() & inter["click"].isna()).any():  # implicit rows: negatives avoid what a user touched
        for u, d, i in zip(inter["user_id"], inter["domain"], inter["item_id"]):
            touched[u].add((d, i))

    def pairs(scope: pd.DataFrame, name: str):
        protocol = sp.for_validation() if name.startswith("validation_") else sp
        return splits.eval_pairs(scope, protocol, cfg.history_feedback, cfg.max_history, pools, touched, sp.seed + 1)

    tables: dict[str, list] = {}
    stats: dict[str, list] = {}
    for name, domains in (("unseen_domains", unseen_dom), ("validation_domains", val_dom)):
        # each held-out domain is its own zero-shot dataset: history and candidates from that domain
        per_domain = [(d, pairs(inter.loc[inter["domain"] == d], name)) for d in domains]
        if per_domain:
            tables[name] = [(d, t) for d, (t, _) in per_domain]
            stats[name] = [(d, s) for d, (_, s) in per_domain]
    for name, users, chosen in (("unseen_users", in_held, held), ("validation_users", in_val, val_users)):
        if len(chosen):  # held-out users over the pretraining domains
            t, s = pairs(inter.loc[users & ~out_dom], name)
            tables[name], stats[name] = [("", t)], [("", s)]
    excluded = {
        "unseen_users": int(in_held.sum()),
        "validation_users": int(in_val.sum()),
        "held_out_domains_of_other_users": int((~in_held & ~in_val & out_dom).sum()),
        "not_liked": int((scope & ~kept).sum()),  # history_feedback=positive leaves them out
    }
    return SplitPart(hist_table, hist_stats, stats_table, tables, stats, excluded)


def merge_item_stats(parts: list[pa.Table]) -> pa.Table:
    """Per-item counts of several whole-user parts, summed (``ITEM_STATS``, sorted by item)."""
    df = pa.concat_tables(parts).to_pandas()
    df = df.groupby(["domain", "item_id"], sort=True)[["interactions", "liked"]].sum().reset_index()
    return pa.Table.from_pandas(df[ITEM_STATS.names], schema=ITEM_STATS, preserve_index=False)


def _add_counts(total: dict, more: dict) -> dict:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def stats_totals(item_stats: pa.Table) -> dict[str, int]:
    """What the manifest says of the item stats: how many items, interactions and liked ones they count."""
    return {"items": item_stats.num_rows,
            "interactions": int(pc.sum(item_stats["interactions"]).as_py() or 0),
            "liked": int(pc.sum(item_stats["liked"]).as_py() or 0)}


def merge_split_report(cfg: DataConfig, parts: list[SplitPart], held, val_users, item_totals: dict[str, int],
                       given_stats: dict) -> dict:
    """The manifest's split report from every part's counts (a single part in one process); ``item_totals``:
    ``stats_totals`` of the merged item stats."""
    sp = cfg.split
    hist: dict = {}
    excluded: dict = {}
    protocols: dict[str, dict] = {}
    for part in parts:
        hist = _add_counts(hist, part.hist_stats)
        excluded = _add_counts(excluded, part.excluded)
    for name in parts[0].pair_stats if parts else ():
        per: dict[str, dict] = {}
        for part in parts:
            for d, s in part.pair_stats[name]:
                per[d] = _add_counts(per.get(d, {}), s)
        if name.endswith("_domains"):
            total: dict = {}
            for s in per.values():
                total = _add_counts(total, s)
            protocols[name] = {**total, "per_domain": per}
        else:
            protocols[name] = per[""]
    protocols.update(given_stats)
    hist = {k: hist[k] for k in ("users", "interactions", "users_below_min_history",
                                 "interactions_of_users_below_min_history", "interactions_truncated")}
    return {
        "seed": sp.seed,
        "order": "per user by (timestamp, domain, item_id, rating, click)",
        "unseen_domains": list(sp.unseen_domains),
        "unseen_users": {"fraction": sp.unseen_user_fraction, "count": int(len(held))},
        "validation_domains": list(sp.validation_domains),
        "validation_users": {"fraction": sp.validation_user_fraction, "count": int(len(val_users))},
        "history_feedback": cfg.history_feedback,
        "pretrain": {
            "min_history": cfg.min_history,
            "max_history": cfg.max_history,
            **hist,
            "excluded_interactions": {k: excluded.get(k, 0) for k in
                                      ("unseen_users", "validation_users", "held_out_domains_of_other_users", "not_liked")},
            "item_stats": {k: item_totals[k] for k in ("items", "interactions", "liked")},
        },
        "eval": {
            "protocol": sp.protocol,
            "recbench_positives": sp.recbench_positives,
            "recbench_negatives": sp.recbench_negatives,
            "history_feedback": cfg.history_feedback,
            "candidates_per_user": sp.candidates_per_user,
            "validation_candidates_per_user": sp.for_validation().candidates_per_user,
            "min_eval_history": sp.min_eval_history,
            "click_min_rating": sp.click_min_rating,
            "nonclick_max_rating": sp.nonclick_max_rating,
            "negatives_per_positive": sp.negatives_per_positive,
            **protocols,
        },
    }


def _totals(reports: list[dict]) -> dict:
    out: dict[str, dict[str, int]] = {}
    for rep in reports:
        for t, n in rep["read"].items():
            tot = out.setdefault(t, {"read": 0, "kept": 0, "rejected": 0})
            tot["read"] += n
            tot["kept"] += rep["kept"].get(t, 0)
            tot["rejected"] += sum(rep["rejected"][t].values())
    return out


def summary(m: dict) -> str:
    """A human-readable summary of a corpus manifest."""
    lines = [f"corpus {m['output']}  (schema v{m['schema_version']}, text: {m['text_format']})"]
    lines.append(f"{'table':<14}{'read':>12}{'kept':>12}{'rejected':>10}")
    for t, c in m["totals"].items():
        lines.append(f"{t:<14}{c['read']:>12,}{c['kept']:>12,}{c['rejected']:>10,}")
    lines.append(f"users: {m['users']:,}")
    for rep in m["sources"]:
        for t, reasons in rep["rejected"].items():
            if reasons:
                lines.append(f"  rejected {rep['name']}/{t}: " + ", ".join(f"{r}={n:,}" for r, n in reasons.items()))
    lines.append(f"{'domain':<22}{'items':>8}{'interactions':>14}{'users':>8}")
    for d, c in m["domains"].items():
        mark = (" (unseen)" if d in m["split"]["unseen_domains"]
                else " (validation)" if d in m["split"].get("validation_domains", ()) else "")
        lines.append(f"{d + mark:<22}{c['items']:>8,}{c['interactions']:>14,}{c['users']:>8,}")
    p = m["split"]["pretrain"]
    lines.append(
        f"pretraining histories ({m['split'].get('history_feedback', 'positive')} feedback): {p['users']:,} users, "
        f"{p['interactions']:,} interactions ({p['users_below_min_history']:,} users under {p['min_history']} dropped, "
        f"{p['interactions_truncated']:,} interactions truncated beyond {p['max_history']})"
    )
    for name, s in m["split"]["eval"].items():
        if isinstance(s, dict):
            lines.append(f"eval {name}: {s['pairs']:,} pairs ({s['clicks']:,} clicks / {s['non_clicks']:,} non-clicks) from {s['users']:,} users")
    lines.append(f"prepared in {m['seconds']['total']} s")
    return "\n".join(lines)
