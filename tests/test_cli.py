import subprocess
import sys

from conftest import FIXTURES, REPO


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)


def test_prepare_job_prints_the_summary(tmp_path):
    res = run("jobs/prepare_corpus.py", "--config", "jobs/configs/default.yaml",
              f"data.sources.0.path={FIXTURES / 'grouplens-ml-1m'}", f"data.output={tmp_path / 'c'}",
              "data.min_history=3", "data.split.unseen_domains=[Action]", "data.split.validation_domains=[]")
    assert res.returncode == 0, res.stderr
    assert "interactions" in res.stdout and "Action (unseen)" in res.stdout
    assert (tmp_path / "c/manifest.json").exists()


def test_bad_override_fails_before_any_work(tmp_path):
    res = run("-m", "recbase.cli", "prepare", "--config", "jobs/configs/default.yaml",
              "data.min_histroy=3", f"data.output={tmp_path / 'c'}")
    assert res.returncode == 2
    assert "config error: unknown key(s) data.min_histroy" in res.stderr
    assert not (tmp_path / "c").exists()


def test_a_wrong_path_ends_in_one_clear_line_not_a_traceback(tmp_path):
    # overrides may stand before and after the options
    res = run("jobs/evaluate.py", "eval.llm_max_users=3", "--run", str(tmp_path / "no-such-run"), "--out",
              str(tmp_path / "eval"), "eval.recommend_users=0")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no-such-run'}: neither a Hugging Face model directory nor a pretraining output "
        "with model/ (set RECBASE_TRACEBACK=1 for the traceback)"]
