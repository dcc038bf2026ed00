"""Fine-tune the pretrained RecBase model on a target domain's sequences, then evaluate zero-shot and
fine-tuned side by side (Ray Train + DeepSpeed, the pretraining path).

``ray job submit --working-dir . -- python jobs/finetune.py --config jobs/configs/default.yaml \\
    finetune.dataset=unseen_domains finetune.steps=200``
"""
import sys

from recbase.cli import finetune_main

if __name__ == "__main__":
    sys.exit(finetune_main())
