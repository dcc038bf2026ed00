"""Zero-shot evaluation of a pretrained RecBase model beside baselines (AUC, GAUC): JSON + Markdown + PNG.

``python jobs/evaluate.py --run runs/default/pretrain --dataset unseen_domains --dataset unseen_users \\
    --out runs/default/eval [--config jobs/configs/default.yaml] [k=v ...]``
"""
import sys

from recbase.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
