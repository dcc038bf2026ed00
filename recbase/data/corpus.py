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
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

import recbase
from recbase import storage
from recbase.artifacts import Corpus
from recbase.config import ConfigError, DataConfig, to_dict
from recbase.data import splits
from recbase.data.rejects import Rejects
from recbase.data.schema import INTERACTIONS, ITEMS, SCHEMA_VERSION
from recbase.data.sources import read_source
from recbase.data.sources.base import ITEM_COLUMNS, ORIGIN, SourceTables, reject_where
from recbase.data.text import format_items



class CountMismatch(AssertionError):
    """kept + rejected != read for some table: a row went missing (a bug, never expected)."""


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype("string").str.strip() == "")


def _clean_source(label: str, t: SourceTables, rejects: Rejects):
    """Checks every source shares: null ids, duplicates, interactions pointing at no item."""
    items = t.items.reindex(columns=[*ITEM_COLUMNS, *ORIGIN])  # text fields a source lacks: null
    items = reject_where(items, _blank(items["item_id"]) | _blank(items["domain"]), label, "items", "null_id", rejects)
    items = reject_where(items, items.duplicated(["domain", "item_id"]), label, "items", "duplicate_item", rejects)

    inter = t.interactions
    inter = reject_where(inter, _blank(inter["user_id"]) | _blank(inter["item_id"]), label, "interactions", "null_id", rejects)
    if "domain" not in inter.columns:
        # the source's items say which domain an interaction belongs to
        domain_of = items.drop_duplicates("item_id").set_index("item_id")["domain"]
        inter = inter.assign(domain=inter["item_id"].map(domain_of))
        unknown = inter["domain"].isna()
    else:
        known = pd.MultiIndex.from_frame(items[["domain", "item_id"]])
        unknown = ~pd.MultiIndex.from_frame(inter[["domain", "item_id"]]).isin(known)
        unknown = pd.Series(unknown, index=inter.index)
    inter = reject_where(inter, unknown, label, "interactions", "unknown_item", rejects)
    dup = inter.duplicated(["user_id", "item_id", "domain", "timestamp", "rating", "click"])
    inter = reject_where(inter, dup, label, "interactions", "duplicate", rejects)

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


def _check_same_settings(manifest: dict, cfg: DataConfig) -> None:
    """A complete corpus is reused only for the settings it was prepared with: another ``history_feedback``,
    split or source would silently feed every later stage the old corpus."""
    had, asked = manifest.get("config", {}), to_dict(cfg)
    differ = [k for k in asked if k not in ("output", "force") and k in had and not _same(had[k], asked[k])]
    if differ:
        raise ConfigError(f"{cfg.output} was prepared with other data settings ({', '.join(f'data.{k}' for k in differ)}: "
                          f"{', '.join(repr(had.get(k)) for k in differ)}); set data.force=true to prepare it again "
                          "(and rerun the stages after it), or choose another data.output")


def _same(had, asked) -> bool:
    """Settings equal, a key the recorded one lacks aside (added to the config after it was written)."""
    if isinstance(had, dict) and isinstance(asked, dict):
        return all(k in asked and _same(v, asked[k]) for k, v in had.items())
    return had == asked


def prepare(cfg: DataConfig, log: Callable[[str], None] = print) -> dict:
    """Prepare the corpus ``cfg`` describes; returns its manifest (skips if already complete)."""
    out, corpus = cfg.output, Corpus(cfg.output)
    finished = corpus.reuse(cfg.force, log)
    if finished is not None:
        _check_same_settings(finished, cfg)
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
        reports.append({"name": src.label, "kind": src.kind, "path": src.path, "files": tables.files,
                        "notes": tables.notes, "read": tables.read})
        log(f"[corpus] read {src.label}: {tables.read} ({time.perf_counter() - t0:.1f} s)")

    items = pd.concat(item_frames, ignore_index=True)
    inter = pd.concat(inter_frames, ignore_index=True)
    # the same (domain, item_id) from two sources: the first source listed keeps it
    dup = items.duplicated(["domain", "item_id"])
    for label in items.loc[dup, "_source"].unique():
        m = dup & (items["_source"] == label)
        rejects.add_frame(label, "items", "duplicate_item", items.loc[m, ORIGIN])
    items = items.loc[~dup]

    used = set(zip(inter["domain"], inter["item_id"]))
    for label, domain, pairs, histories in given:
        used |= {(domain, i) for i in pairs["item_id"]}
        used |= {(domain, i) for h in histories.values() for i in h}
    if cfg.drop_items_without_interactions:
        unused = pd.Series([k not in used for k in zip(items["domain"], items["item_id"])], index=items.index)
        for label in items.loc[unused, "_source"].unique():
            m = unused & (items["_source"] == label)
            rejects.add_frame(label, "items", "item_without_interactions", items.loc[m, ORIGIN])
        items = items.loc[~unused]

    items = items.sort_values(["domain", "item_id"], kind="mergesort").reset_index(drop=True)
    items["text"] = format_items(items, cfg.text_format)
    inter = splits.order(inter)

    # counts add up, per source and table, or we stop before writing anything
    for rep in reports:
        kept = {
            "items": int((items["_source"] == rep["name"]).sum()),
            "interactions": int((inter["_source"] == rep["name"]).sum()),
        }
        for label, _, pairs, _ in given:
            if label == rep["name"]:
                kept["pairs"] = len(pairs)
        rep["kept"] = kept
        rep["rejected"] = {t: rejects.count(rep["name"], t) for t in rep["read"]}
        for t, n_read in rep["read"].items():
            n_rej = sum(rep["rejected"][t].values())
            if kept.get(t, 0) + n_rej != n_read:
                raise CountMismatch(f"{rep['name']}/{t}: kept {kept.get(t, 0)} + rejected {n_rej} != read {n_read}")

    split_report, pretraining, tables = _split(cfg, items, inter, given)
    files = dict(Corpus.FILES)
    for name in tables:
        files[f"{Corpus.pairs_dir}/{name}"] = Corpus.pairs_file(name)

    t_write = time.perf_counter()
    storage.write_parquet(pa.Table.from_pandas(items[ITEMS.names], schema=ITEMS, preserve_index=False), corpus.items)
    storage.write_parquet(pa.Table.from_pandas(inter[INTERACTIONS.names], schema=INTERACTIONS, preserve_index=False), corpus.interactions)
    storage.write_parquet(rejects.to_table(), corpus.rejects)
    for name, table in pretraining.items():
        storage.write_parquet(table, corpus.path(Corpus.FILES[name]))
    for name, table in tables.items():
        storage.write_parquet(table, corpus.pairs(name))

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "recbase_version": recbase.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "output": out,
        "config": to_dict(cfg),
        "sources": reports,
        "totals": _totals(reports),
        "domains": _domains(items, inter),
        "users": int(inter["user_id"].nunique()),
        "text_format": cfg.text_format,
        "split": split_report,
        "files": files,
        "seconds": {"total": round(time.perf_counter() - t_start, 2), "write": round(time.perf_counter() - t_write, 2)},
    }
    corpus.write_manifest(manifest)  # last: the corpus is complete once this exists
    log(f"[corpus] wrote {out} ({manifest['seconds']['total']} s)")
    return manifest


def _split(cfg: DataConfig, items: pd.DataFrame, inter: pd.DataFrame, given) -> tuple[dict, dict[str, pa.Table], dict[str, pa.Table]]:
    """The split report, the pretraining tables (histories, item stats), and the evaluation pair tables by name."""
    sp = cfg.split
    all_domains = sorted(items["domain"].unique())
    for key in ("unseen_domains", "validation_domains"):
        missing = [d for d in getattr(sp, key) if d not in all_domains]
        if missing:
            raise ConfigError(f"data.split.{key} {missing} are not domains of this corpus; domains: {all_domains}")
    unseen_dom, val_dom = list(sp.unseen_domains), list(sp.validation_domains)
    held = splits.held_out_users(inter["user_id"].unique(), sp.unseen_user_fraction, sp.seed)
    val_users = splits.held_out_users(inter["user_id"].unique(), sp.validation_user_fraction, sp.seed + 1000, exclude=held)
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

    rng = np.random.default_rng(sp.seed + 1)
    items_by_domain = {d: g["item_id"].to_numpy() for d, g in items.groupby("domain")}
    implicit = (inter["rating"].isna() & inter["click"].isna()).any()
    touched: dict[str, set] = defaultdict(set)
    if implicit:
        for u, d, i in zip(inter["user_id"], inter["domain"], inter["item_id"]):
            touched[u].add((d, i))

    tables: dict[str, pa.Table] = {}
    protocols: dict[str, dict] = {}
    def pairs(scope: pd.DataFrame):
        return splits.eval_pairs(scope, sp, cfg.history_feedback, cfg.max_history, items_by_domain, touched, rng)

    for name, domains in (("unseen_domains", unseen_dom), ("validation_domains", val_dom)):
        if not domains:
            continue
        # each held-out domain is its own zero-shot dataset: history and candidates from that domain
        per_domain = {d: pairs(inter.loc[inter["domain"] == d]) for d in domains}
        tables[name] = pa.concat_tables([t for t, _ in per_domain.values()])
        total: dict = {}
        for _, s in per_domain.values():
            for k, v in s.items():
                total[k] = total.get(k, 0) + v
        total["per_domain"] = {d: s for d, (_, s) in per_domain.items()}
        protocols[name] = total
    for name, users in (("unseen_users", in_held), ("validation_users", in_val)):
        if users.any():  # held-out users over the pretraining domains
            tables[name], protocols[name] = pairs(inter.loc[users & ~out_dom])
    for label, domain, pairs, histories in given:
        t, s = splits.given_pairs(pairs, domain, histories, cfg.max_history)
        tables[label], protocols[label] = t, s
    report = {
        "seed": sp.seed,
        "order": "per user by (timestamp, domain, item_id, rating, click)",
        "unseen_domains": unseen_dom,
        "unseen_users": {"fraction": sp.unseen_user_fraction, "count": int(len(held))},
        "validation_domains": val_dom,
        "validation_users": {"fraction": sp.validation_user_fraction, "count": int(len(val_users))},
        "history_feedback": cfg.history_feedback,
        "pretrain": {
            "min_history": cfg.min_history,
            "max_history": cfg.max_history,
            **hist_stats,
            "excluded_interactions": {
                "unseen_users": int(in_held.sum()),
                "validation_users": int(in_val.sum()),
                "held_out_domains_of_other_users": int((~in_held & ~in_val & out_dom).sum()),
                "not_liked": int((scope & ~kept).sum()),  # history_feedback=positive leaves them out
            },
            "item_stats": {"items": stats_table.num_rows, "interactions": int(counted.sum()),
                           "liked": int(liked[counted].sum())},
        },
        "eval": {
            "protocol": sp.protocol,
            "recbench_positives": sp.recbench_positives,
            "recbench_negatives": sp.recbench_negatives,
            "history_feedback": cfg.history_feedback,
            "candidates_per_user": sp.candidates_per_user,
            "min_eval_history": sp.min_eval_history,
            "click_min_rating": sp.click_min_rating,
            "nonclick_max_rating": sp.nonclick_max_rating,
            "negatives_per_positive": sp.negatives_per_positive,
            **protocols,
        },
    }
    return report, {"histories": hist_table, "item_stats": stats_table}, tables


def _totals(reports: list[dict]) -> dict:
    out: dict[str, dict[str, int]] = {}
    for rep in reports:
        for t, n in rep["read"].items():
            tot = out.setdefault(t, {"read": 0, "kept": 0, "rejected": 0})
            tot["read"] += n
            tot["kept"] += rep["kept"].get(t, 0)
            tot["rejected"] += sum(rep["rejected"][t].values())
    return out


def _domains(items: pd.DataFrame, inter: pd.DataFrame) -> dict:
    n_items = items.groupby("domain").size()
    g = inter.groupby("domain")
    n_inter, n_users = g.size(), g["user_id"].nunique()
    return {
        d: {"items": int(n_items.get(d, 0)), "interactions": int(n_inter.get(d, 0)), "users": int(n_users.get(d, 0))}
        for d in sorted(n_items.index)
    }


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
