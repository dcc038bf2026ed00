"""The jobs run as users run them: ``ray job submit`` to a Ray head started with ``ray start``."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 (token auth off for the test cluster); yields the job-server address."""
    # the cluster's `python` is this environment's (as on a node where the project is installed)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    port, dash = free_port(), free_port()
    tmp = tmp_path_factory.mktemp("rayhead")
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                    f"--temp-dir={tmp}", "--disable-usage-stats"], check=True, env=env, capture_output=True)
    address = f"http://127.0.0.1:{dash}"
    yield address, env
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)


def submit(address, env, *job_args, timeout=600):
    t0 = time.time()
    res = subprocess.run(
        [RAY, "job", "submit", f"--address={address}", f"--working-dir={REPO}",
         '--runtime-env-json={"excludes": [".venv", "runs", ".git"]}', "--", "python", *job_args],
        env=env, capture_output=True, text=True, timeout=timeout)
    return res, time.time() - t0


def test_pipeline_job_submitted_to_a_local_head(ray_head, tmp_path):
    address, env = ray_head
    out = tmp_path / "run"
    res, seconds = submit(
        address, env, "jobs/pipeline.py", "--config", "jobs/configs/default.yaml",
        f"data.sources.0.path={FIXTURES / 'grouplens-ml-1m'}", f"data.output={out}/corpus",
        "data.min_history=3", "data.split.unseen_domains=[Action]",
        f"embed.output={out}/embeddings", "embed.concurrency=1",
        f"tokenizer.output={out}/tokenizer", "tokenizer.kind=rqkmeans", "tokenizer.levels=2",
        "tokenizer.codebook_size=2", "tokenizer.enforce_quality_gate=false", "tokenizer.num_cpus=1",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in res.stdout
    for stage in ("corpus", "embeddings", "tokenizer"):
        assert (out / stage / "manifest.json").exists(), stage
    assert (out / "tokenizer/concept_ids.parquet").exists()
