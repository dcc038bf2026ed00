"""The main job: corpus -> embed -> tokenise -> pretrain -> evaluate, each stage skipped when its output is complete.

``python jobs/pipeline.py --config jobs/configs/default.yaml [k=v ...]``
"""
import sys

from recbase.cli import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main())
