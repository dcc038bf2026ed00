"""Run a sweep (Ray Tune): ``python tune/sweep.py tune/codebook.yaml [--smoke] [key=value ...]``.

``ray job submit --working-dir . -- python tune/sweep.py tune/ablation.yaml storage_path=s3://bucket/sweeps``
Rerunning an interrupted sweep (same name and storage) resumes it; a complete one is skipped unless force=true.
"""
import argparse
import sys

from recbase.config import ConfigError
from recbase.launch import sweep
from recbase.sweep import spec

if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Ray Tune sweep: codebook shape or ablations.")
    p.add_argument("file", help="a sweep definition, e.g. tune/codebook.yaml")
    p.add_argument("--smoke", action="store_true", help="the file's smoke: size (a handful of tiny trials)")
    p.add_argument("overrides", nargs="*", help="top-level sweep keys, e.g. output=/tmp/sweep cpus_per_trial=0.5")
    args = p.parse_args()
    try:
        cfg = spec.load(args.file, args.smoke, args.overrides)
    except ConfigError as e:
        p.exit(2, f"sweep config error: {e}\n")
    sweep.run(cfg)
    sys.exit(0)
