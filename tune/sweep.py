"""Run a sweep or search (Ray Tune): ``python tune/sweep.py tune/pretrain.yaml [--smoke] [key=value ...]``.

``ray job submit --working-dir . -- python tune/sweep.py tune/pretrain.yaml num_samples=32 storage_path=s3://bucket/sweeps``
The keys after the file are the sweep file's top-level keys (``num_samples=8``, ``search=optuna``,
``scheduler=median``, ``'param_space={pretrain.lr: {loguniform: [1.0e-4, 1.0e-2]}}'``); the keys inside
``param_space`` and ``base`` are the run config's, as ``jobs/*.py`` take them. Rerunning an interrupted
sweep (same name and storage) resumes it; a complete one is skipped unless force=true.
"""
import argparse
import sys

from recbase.config import ConfigError
from recbase.launch import sweep
from recbase.sweep import spec

if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Ray Tune sweep: codebook shape, ablations, or a pretraining search.")
    p.add_argument("file", help="a sweep definition, e.g. tune/codebook.yaml")
    p.add_argument("--smoke", action="store_true", help="the file's smoke: size (a handful of tiny trials)")
    p.add_argument("overrides", nargs="*", help="top-level sweep keys, e.g. output=/tmp/sweep cpus_per_trial=0.5")
    args = p.parse_intermixed_args()  # the overrides may come before or after --smoke
    try:
        cfg = spec.load(args.file, args.smoke, args.overrides)
    except ConfigError as e:
        p.exit(2, f"sweep config error: {e}\n")
    sweep.run(cfg)
    sys.exit(0)
