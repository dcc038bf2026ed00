"""Every stage's wall time and peak memory at a corpus size, on the synthetic Amazon-layout corpus.

    python benchmarks/scale.py --items 100000 --interactions 800000 --work /tmp/scale
    python benchmarks/scale.py --items 1000000 --interactions 8000000 --work /tmp/scale
    python benchmarks/scale.py --items 4500000 --interactions 35000000 --work /tmp/scale --corpus-engine ray
    python benchmarks/scale.py --plot --work /tmp/scale        # table + log-log plot of what ran
    python benchmarks/scale.py --items 4500000 --interactions 35000000 --work /tmp/scale --corpus-engine ray \
        --stages corpus --set data.part_bytes=67108864   # a config override for every stage, kept in the row

Each size gets its own folder under ``--work`` (the generated corpus, the run config, every stage's
output). Each stage runs as the user runs it (``python jobs/<stage>.py --config <run.yaml>``, its own
``ray.init``), and a sampler reads the RSS of that process and of every process under it (GCS, raylet,
Ray workers) every 0.5 s: the largest single process and the summed peak (shared object-store pages are
counted in each process that maps them, so the sum is an upper bound). Rows go to
``<work>/scale.jsonl`` as each stage ends, a failed or timed-out stage included (with its exit status).

What is cut down so that a size finishes on 2 cores, and is the same at every size: the encoder is the
small random sentence-transformers model of ``embed_streaming_memory.py`` (the pipeline is measured,
not MiniLM); the CL-VAE trains ``--tokenizer-epochs`` epochs per level; pretraining runs ``--steps``
steps; evaluation scores every pair of the unseen-domain and unseen-user datasets with the model, the
counting baselines and the two content baselines (their pool: ``eval.content_pool_items``; no LLM, no
beam search). Corpus preparation and embedding run in full.

    python benchmarks/scale.py --vectors --items 4500000 --work /tmp/scale   # the tokenizer stage alone

``--vectors`` measures the tokenizer stage on seeded synthetic embeddings written in the embed stage's
layout (unit vectors around 4,096 centres, 32-d as the small encoder gives, 15 domains), for sizes whose
corpus could not be prepared and embedded here in a session.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from embed_streaming_memory import tiny_model, tree_processes
from recbase.artifacts import Embeddings
from recbase.embed.encoder import to_arrow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# stage -> (job, its overrides); corpus_ray prepares the same corpus over Ray Data (data.engine=ray) beside
# it, into its own folder (the later stages read the one-process corpus), or with --corpus-engine ray in
# the corpus's place, for the later stages to read
STAGES = {"corpus": ("prepare_corpus", []),
          "corpus_ray": ("prepare_corpus", ["data.engine=ray", "data.output={corpus_ray}"]),
          "embed": ("embed", []), "tokenize": ("train_tokenizer", []), "pretrain": ("pretrain", []),
          "evaluate": ("evaluate", [])}


def run_config(work: str, synthetic: str, model: str, args) -> dict:
    return {
        "data": {
            "sources": [{"kind": "amazon2023", "path": synthetic}],
            "output": f"{work}/corpus",
            "history_feedback": "all",
            "min_history": 5,
            "split": {"unseen_domains": ["Books", "Toys_and_Games"], "unseen_user_fraction": 0.1,
                      "validation_domains": ["Automotive", "Movies_and_TV"], "validation_user_fraction": 0.05,
                      "candidates_per_user": 5, "min_eval_history": 5},
        },
        "embed": {"model": model, "output": f"{work}/embeddings", "batch_size": 1024, "rows_per_file": 200_000},
        "tokenizer": {"output": f"{work}/tokenizer", "levels": 3, "codebook_size": 256,
                      "epochs_per_level": args.tokenizer_epochs, "reinit_settle_epochs": 0,
                      "train_items": args.tokenizer_items,
                      "enforce_quality_gate": False},
        "pretrain": {"objective": "feedback", "max_steps": args.steps, "warmup_steps": 1,
                     "eval_every": args.steps, "checkpoint_every": args.steps, "output": f"{work}/pretraining"},
        "eval": {"datasets": ["unseen_domains", "unseen_users"],
                 "baselines": ["popularity", "popularity_pretrain", "like_rate", "like_share", "knn_like_rate",
                               "content_like_rate"],
                 "recommend_users": 0, "output": f"{work}/eval"},
    }


def write_vectors(out: str, items: int, dim: int = 32, chunk: int = 200_000, seed: int = 0) -> None:
    """Embeddings in the embed stage's layout (shards, then the manifest) without a corpus or an encoder,
    one chunk at a time."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, dim)).astype(np.float32)  # [C, E]
    emb = Embeddings(out)
    os.makedirs(emb.shards, exist_ok=True)
    for part, start in enumerate(range(0, items, chunk)):
        n = min(chunk, items - start)
        x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)  # [n, E]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = np.arange(start, start + n)
        pq.write_table(pa.table({"domain": [f"domain_{i % 15:02d}" for i in ids], "item_id": [f"v{i:09d}" for i in ids],
                                 "embedding": to_arrow(x)}), os.path.join(emb.shards, f"part-{part:05d}.parquet"))
    emb.write_manifest({"model": "synthetic vectors (benchmarks/scale.py --vectors)", "prefix": "", "normalize": True,
                        "dim": dim, "items": items, "corpus": "", "text_format": "", "seed": seed,
                        "files": {"shards": Embeddings.shards}})


def shm_used() -> int:
    """Bytes in use on /dev/shm, where Ray's object store keeps its objects (0 where there is none)."""
    try:
        return psutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


def measure(cmd: list[str], log_path: str, timeout: float, cap_gib: float = 0, cap_on: str = "rss") -> dict:
    """Run ``cmd``; its wall time, exit status and peak memory: RSS (largest process, summed over its tree),
    private bytes, and the footprint (summed private bytes + the object store's /dev/shm, each page once).
    It is killed past ``timeout`` seconds or when its tree's summed RSS (``cap_on`` rss) or footprint
    (``cap_on`` footprint) passes ``cap_gib`` (before the OOM killer picks a process of its own), and the
    row says which."""
    t0, stopped = time.perf_counter(), ""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        root, summed, summed_private, footprint, rc, peaks = psutil.Process(proc.pid), 0, 0, 0, None, {}
        while rc is None:
            procs = tree_processes(root)
            total = sum(rss for _, rss, _, _ in procs)
            private = sum(p for _, _, p, _ in procs)
            summed = max(summed, total)
            summed_private = max(summed_private, private)
            now = private + shm_used()
            footprint = max(footprint, now)
            for pid, rss, private, title in procs:  # each process's peaks, and every title it had (a Ray worker's tasks)
                peak = peaks.setdefault(pid, [0, [], 0])
                peak[0], peak[2] = max(peak[0], rss), max(peak[2], private)
                if title not in peak[1]:
                    peak[1].append(title)
            if not stopped and time.perf_counter() - t0 > timeout:
                stopped = f"killed at the {timeout:.0f} s timeout"
            if not stopped and cap_gib and (now if cap_on == "footprint" else total) > cap_gib * 2**30:
                stopped = f"killed at the {cap_gib:g} GiB memory cap ({cap_on})"
            if stopped:
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    tree = []
                for p in tree[::-1]:
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
            try:
                rc = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    top = sorted(peaks.values(), key=lambda p: -p[0])[:4]
    gib = lambda b: round(b / 2**30, 3)
    driver = peaks.get(proc.pid, [0, [], 0])  # the job's own process (the Ray driver)
    return {"seconds": round(time.perf_counter() - t0, 1), "rc": rc, "stopped": stopped,
            "driver_gib": gib(driver[0]), "driver_private_gib": gib(driver[2]),
            "largest_gib": gib(top[0][0]) if top else 0.0, "summed_gib": gib(summed),
            "largest_private_gib": gib(max((p[2] for p in peaks.values()), default=0)),
            "summed_private_gib": gib(summed_private), "footprint_gib": gib(footprint),
            "largest_processes": [{"gib": gib(rss), "private_gib": gib(private), "titles": titles[:6]}
                                  for rss, titles, private in top]}


def table(rows: list[dict]) -> str:
    lines = ["| stage | items | interactions | wall s | largest process GiB | summed GiB | exit |",
             "|---|---|---|---|---|---|---|"]  # a stopped stage's figures are where it was stopped
    for r in sorted(rows, key=lambda r: (list(STAGES).index(r["stage"]), "input" in r, r["items"])):
        lines.append(f"| {label(r)} | {r['items']:,} | {r['interactions']:,} | {r['seconds']:,.1f} | "
                     f"{r['largest_gib']:.2f} | {r['summed_gib']:.2f} | {r['rc']}{' (' + r['stopped'] + ')' if r.get('stopped') else ''} |")
    return "\n".join(lines)


def label(row: dict) -> str:
    """The stage, its input where it is not the synthetic corpus, and the overrides it ran with."""
    return row["stage"] + (f" ({row['input']})" if "input" in row else "") + "".join(f" [{o}]" for o in row.get("overrides", []))


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5))
    for name in sorted({label(r) for r in rows}, key=lambda n: list(STAGES).index(n.split(" ")[0])):
        rs = sorted((r for r in rows if label(r) == name and r["rc"] == 0), key=lambda r: r["items"])
        if rs:
            x = [r["items"] for r in rs]
            a.plot(x, [r["seconds"] for r in rs], "o-", label=name)
            b.plot(x, [r["largest_gib"] for r in rs], "o-", label=name)
    for ax, title in ((a, "wall time (s)"), (b, "peak RSS, largest process (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        per_item = sorted({round(r["interactions"] / r["items"]) for r in rows if r["interactions"]})
        ax.set_xlabel(f"items (interactions = {' / '.join(map(str, per_item))} x items)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    handles, names = a.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)  # below both: never on a line
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--items", type=int)
    p.add_argument("--interactions", type=int)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--corpus-engine", choices=["pandas", "ray"], default="pandas",
                   help="what prepares the corpus the later stages read: ray = the corpus_ray stage in the corpus "
                        "stage's place (for sizes one process cannot hold)")
    p.add_argument("--tokenizer-epochs", type=int, default=2)
    p.add_argument("--tokenizer-items", type=int, default=100_000, help="tokenizer.train_items")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per stage before it is killed")
    p.add_argument("--memory-cap", type=float, default=20.0,
                   help="GiB of summed RSS at which a stage is killed (0: none; this machine has 24)")
    p.add_argument("--cap-on", choices=["rss", "footprint"], default="rss",
                   help="what --memory-cap limits: the summed RSS (counts the object store's pages once per process "
                        "that maps them) or the footprint (summed private bytes + /dev/shm in use)")
    p.add_argument("--vectors", action="store_true",
                   help="the tokenizer stage alone, on synthetic embeddings of --items items (no corpus, no encoder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="a config override for every stage (e.g. data.part_bytes=67108864), recorded in its row")
    p.add_argument("--plot", action="store_true", help="only print the table and draw the plot of what ran")
    args = p.parse_args()
    results = os.path.join(args.work, "scale.jsonl")
    if args.plot:
        rows = [json.loads(line) for line in open(results)]
        print(table(rows))
        plot(rows, os.path.join(args.work, "scale.png"))
        print(f"plot: {os.path.join(args.work, 'scale.png')}")
        return
    if args.vectors:
        if not args.items:
            p.error("--vectors needs --items")
        return vectors_only(args, results)
    if not args.items or not args.interactions:
        p.error("--items and --interactions are needed (or --plot, or --vectors)")
    work = os.path.abspath(os.path.join(args.work, f"{args.items}"))
    synthetic = os.path.join(work, "synthetic")
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(os.path.join(synthetic, "synthetic.json")):
        gen = measure([sys.executable, "benchmarks/make_synthetic.py", "--items", str(args.items),
                       "--interactions", str(args.interactions), "--out", synthetic],
                      os.path.join(work, "generate.log"), args.timeout)
        print(f"generated in {gen['seconds']:.0f} s (peak {gen['largest_gib']:.2f} GiB)", flush=True)
        if gen["rc"] != 0:
            sys.exit(f"generation failed: see {work}/generate.log")
    model = os.path.join(work, "encoder")
    if not os.path.exists(model):
        os.makedirs(model)
        model = tiny_model(model)
    else:
        model = os.path.join(model, "st")
    cfg_path = os.path.join(work, "run.yaml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(run_config(work, synthetic, model, args), f, sort_keys=False)
    stages = args.stages
    if args.corpus_engine == "ray":
        stages = [s for s in stages if s != "corpus_ray"]
        stages = ["corpus_ray" if s == "corpus" else s for s in stages]
    for stage in stages:
        if run_stage(stage, work, cfg_path, args, results)["rc"] != 0:
            print(f"  {stage} failed: the later stages need its output; see {work}/{stage}.log")
            break


def run_stage(stage: str, work: str, cfg_path: str, args, results: str, **tags) -> dict:
    """One stage as a user runs it, measured; its row appended to ``results``."""
    job, overrides = STAGES[stage]
    corpus_ray = f"{work}/corpus" if args.corpus_engine == "ray" else f"{work}/corpus_ray"
    cmd = [sys.executable, f"jobs/{job}.py", "--config", cfg_path,
           *(o.format(work=work, corpus_ray=corpus_ray) for o in overrides), *args.overrides]
    r = measure(cmd, os.path.join(work, f"{stage}.log"), args.timeout, args.memory_cap, args.cap_on)
    row = {"stage": stage, "items": args.items, "interactions": args.interactions or 0, **tags, **r}
    if args.overrides:
        row["overrides"] = list(args.overrides)
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{stage:9s} {r['seconds']:8.1f} s  largest {r['largest_gib']:.2f} GiB  summed {r['summed_gib']:.2f} GiB "
          f"(private: {r['largest_private_gib']:.2f} / {r['summed_private_gib']:.2f}; footprint {r['footprint_gib']:.2f})  "
          f"driver {r['driver_gib']:.2f} GiB  "
          f"exit {r['rc']} {r['stopped']}", flush=True)
    for p in r["largest_processes"]:
        print(f"    {p['gib']:.2f} GiB ({p['private_gib']:.2f} private)  {' | '.join(p['titles'])}", flush=True)
    return row


def vectors_only(args, results: str) -> None:
    """The tokenizer stage on synthetic embeddings (``write_vectors``) of ``args.items`` items."""
    work = os.path.abspath(os.path.join(args.work, f"{args.items}-vectors"))
    os.makedirs(work, exist_ok=True)
    cfg = run_config(work, os.path.join(work, "no-corpus"), "", args)  # only the tokenizer section is read
    if not Embeddings(cfg["embed"]["output"]).complete():
        t0 = time.perf_counter()
        write_vectors(cfg["embed"]["output"], args.items)
        print(f"wrote {args.items:,} synthetic embeddings in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg_path = os.path.join(work, "run.yaml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    run_stage("tokenize", work, cfg_path, args, results, input="synthetic vectors")


if __name__ == "__main__":
    main()
