"""Peak memory of the embedding pipeline at two corpus sizes: it streams, so the peak should not grow.

    python benchmarks/embed_streaming_memory.py --items 100000
    python benchmarks/embed_streaming_memory.py --items 1000000

Generated short item texts; a small randomly initialised sentence-transformers model (1 layer, 32-d,
MiniLM's real tokenizer) so that a million texts pass in minutes on 2 cores — the pipeline (read ->
actor pool -> write) is what is measured, not the encoder. Memory: the summed RSS of the driver and
every process it started (GCS, raylet, workers), sampled every 0.5 s; shared object-store pages are
counted in each process that maps them, so the figure is an upper bound.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from recbase.artifacts import Corpus

WORDS = "red blue quiet fast old new deep bright small grand wild calm iron silver paper glass".split()


def tiny_model(path: str) -> str:
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from recbase.embed.encoder import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("builtin:all-MiniLM-L6-v2"))
    bert_dir = os.path.join(path, "bert")
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(bert_dir)
    tok.save_pretrained(bert_dir)
    st = SentenceTransformer(modules=[models.Transformer(bert_dir, max_seq_length=32), models.Pooling(32)])
    out = os.path.join(path, "st")
    st.save(out)
    return out


def write_items(path: str, n: int, chunk: int = 100_000) -> None:
    schema = pa.schema([("domain", pa.string()), ("item_id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        for s in range(0, n, chunk):
            ids = range(s, min(n, s + chunk))
            w.write_table(pa.table({
                "domain": ["generated"] * len(ids), "item_id": [str(i) for i in ids],
                "text": [f"Title: The {WORDS[i % 16]} {WORDS[(i // 16) % 16]} {i}. Category: {WORDS[(i // 256) % 16]}." for i in ids],
            }, schema=schema), row_group_size=chunk)


def tree_processes(root: psutil.Process) -> list[tuple[int, int, int, str]]:
    """(pid, RSS, private bytes, title) of ``root`` and every process under it (Ray's GCS, raylet, workers;
    a Ray worker's title names its task or actor, e.g. ``ray::_fit_task``, and is ``ray::IDLE`` between
    tasks). Private is RSS less its shared pages: the object store's pages that a worker maps are in its
    RSS and in every other mapper's, not in its private bytes."""
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    out = []
    for p in tree:
        try:
            m = p.memory_info()
            out.append((p.pid, m.rss, m.rss - m.shared, " ".join(p.cmdline())[:80].strip()))
        except psutil.Error:
            continue
    return out


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(summed RSS, largest single RSS) of ``root`` and every process under it."""
    sizes = [rss for _, rss, _, _ in tree_processes(root)]
    return sum(sizes), max(sizes, default=0)


class PeakRSS(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0  # summed RSS of all processes
        self.driver = 0  # this process alone
        self.process = 0  # the largest single process
        self.stop = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            total, largest = tree_rss(me)
            self.process = max(self.process, largest)
            self.driver = max(self.driver, me.memory_info().rss)
            self.peak = max(self.peak, total)
            time.sleep(0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=1024)
    args = p.parse_args()
    import ray

    from recbase import config
    from recbase.launch import embed

    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(tmp)
        corpus = os.path.join(tmp, "corpus")
        os.makedirs(corpus)
        write_items(Corpus(corpus).items, args.items)
        open(Corpus(corpus).manifest_path, "w").write('{"text_format": "generated"}')  # what embed records
        cfg = config.load(None, [f"data.output={corpus}", f"embed.output={tmp}/emb", f"embed.model={model}",
                                 f"embed.batch_size={args.batch_size}", "embed.rows_per_file=200000"])
        ray.init(include_dashboard=False, log_to_driver=False)
        mon = PeakRSS()
        mon.start()
        m = embed.run(cfg.embed, Corpus(corpus), log=lambda s: None).manifest()
        mon.stop.set()
        mon.join()
        ray.shutdown()
    print(f"{m['items']:,} items embedded in {m['seconds']:.0f} s ({m['items_per_s']:,.0f} items/s); "
          f"peak summed RSS of driver + Ray processes: {mon.peak / 2**30:.2f} GiB; driver alone "
          f"{mon.driver / 2**30:.2f} GiB; largest single process {mon.process / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
