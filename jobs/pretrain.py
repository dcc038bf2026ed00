"""Pretrain the RecBase decoder (Ray Train + DeepSpeed) on the tokenised corpus.

``ray job submit --working-dir . -- python jobs/pretrain.py --config jobs/configs/default.yaml [k=v ...]``
Rerunning with the same ``pretrain.name`` and storage resumes from the last checkpoint.
"""
import sys

from recbase.cli import pretrain_main

if __name__ == "__main__":
    sys.exit(pretrain_main())
