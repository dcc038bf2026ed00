"""The jobs run as users run them: ``ray job submit`` to a Ray head started with ``ray start``."""
import os
import re
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
def ray_head(tmp_path_factory, s3_server):
    """`ray start --head` on 127.0.0.1 (token auth off for the test cluster); yields the job-server address.
    The cluster's processes see the test S3 server through the standard AWS variables (as nodes see S3)."""
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


def test_pipeline_then_pretrain_jobs_submitted_to_a_local_head_all_on_s3(ray_head, tmp_path):
    """The main job (corpus -> embed -> tokenise -> pretrain, ZeRO-3 -> evaluate) with every input and
    output on s3:// (the local S3 server), then `jobs/pretrain.py` with more steps, which continues the
    finished run from its last checkpoint in the bucket; the export in the bucket loads and generates."""
    from recbase import storage

    address, env = ray_head
    fs, _ = storage.filesystem("s3://recbase")
    fs.put(str(FIXTURES / "grouplens-ml-1m"), "recbase/job-in/grouplens", recursive=True)
    out = "s3://recbase/job-run"
    common = [
        "--config", "jobs/configs/default.yaml",
        "data.sources.0.path=s3://recbase/job-in/grouplens", f"data.output={out}/corpus",
        "data.min_history=3", "data.split.unseen_domains=[Action]", "data.split.validation_domains=[]",
        f"embed.output={out}/embeddings", "embed.actors.concurrency=1",
        f"tokenizer.output={out}/tokenizer", "tokenizer.kind=rqkmeans", "tokenizer.levels=2",
        "tokenizer.codebook_size=2", "tokenizer.enforce_quality_gate=false", "tokenizer.num_cpus=1",
        "tokenizer.collaborative_weight=0",  # a fixture of a few users has no rank-32 factors
        f"pretrain.output={out}/pretrain", "pretrain.zero_stage=3", "pretrain.block_len=32",
        "pretrain.micro_batch_size=2", "pretrain.val_fraction=0.3", "pretrain.warmup_steps=2",
        "pretrain.log_every=3", "pretrain.eval_every=3", "pretrain.checkpoint_every=3",
        f"eval.output={out}/eval", "eval.actors.concurrency=1", "eval.baselines=[popularity, text_similarity]",
        "finetune.steps=0",  # the LLM baseline and fine-tuning have their own tests (test_eval_e2e)
    ]
    res, seconds = submit(address, env, "jobs/pipeline.py", *common, "pretrain.max_steps=6")
    print(f"pipeline job: {seconds:.0f} s")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in res.stdout
    # what the user reads: each worker line once, Ray's own records in its log files only
    assert res.stdout.count("[pretrain] step 6/6") == 1, res.stdout[-3000:]
    for ray_record in ("Reporting training result", "Execution plan of Dataset", "Checkpoint successfully created"):
        assert ray_record not in res.stdout, ray_record
    for stage in ("corpus", "embeddings", "tokenizer", "pretrain", "eval"):
        assert storage.exists(f"{out}/{stage}/manifest.json"), stage  # every artefact landed in the bucket
    for f in ("corpus/items.parquet", "tokenizer/concept_ids.parquet", "pretrain/model/model.safetensors",
              "pretrain/loss.png", "eval/auc.png"):
        assert storage.exists(f"{out}/{f}"), f
    assert storage.list_files(f"{out}/pretrain/ray/pretrain"), "no Ray Train checkpoint in the bucket"
    assert "RecBase (zero-shot)" in storage.open_binary(f"{out}/eval/results.md").read().decode()
    first = storage.read_json(f"{out}/pretrain/manifest.json")
    assert first["steps"] == 6 and first["config"]["zero_stage"] == 3

    res, seconds = submit(address, env, "jobs/pretrain.py", *common, "pretrain.max_steps=9")
    print(f"pretrain job (resumed): {seconds:.0f} s")
    (tmp_path / "pretrain-job.log").write_text(res.stdout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resumed from step 6" in res.stdout
    history = storage.read_json(f"{out}/pretrain/history.json")
    assert [h["step"] for h in history] == [3, 6, 9] and [h["attempt"] for h in history] == [0, 0, 1]
    assert storage.read_json(f"{out}/pretrain/manifest.json")["steps"] == 9

    # the whole main job again on its completed outputs: every stage is skipped, nothing is redone
    res, seconds = submit(address, env, "jobs/pipeline.py", *common, "pretrain.max_steps=9")
    print(f"pipeline job on completed outputs: {seconds:.0f} s")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for stage in ("data", "embed", "tokenizer", "pretrain", "eval"):
        assert re.search(rf"\[{stage}\] \S+ is complete", res.stdout), stage
    assert storage.read_json(f"{out}/pretrain/history.json") == history  # not retrained

    import torch

    from recbase.model import decoder, items
    from recbase.model.vocab import BOS, ItemIndex

    # the default's layout, trained under ZeRO-3 and exported from S3: it scores candidates after a history
    with storage.local_dir(f"{out}/pretrain/model") as d:
        model = decoder.load(d)
    assert isinstance(model, items.ItemLayoutModel)
    index = ItemIndex.load(f"{out}/pretrain/model")
    prompt = torch.tensor([[BOS, *index.tokens[0].tolist(), model.config.liked_id]])  # [1, 1 + t + 1]: one liked item
    logits = model.candidate_logits(prompt, torch.as_tensor(index.tokens[1:4]).long())  # [3]
    assert logits.shape == (3,) and torch.isfinite(logits).all()
