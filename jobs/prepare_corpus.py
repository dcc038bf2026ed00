"""Prepare the unified corpus: ``python jobs/prepare_corpus.py --config jobs/configs/default.yaml [k=v ...]``."""
import sys

from recbase.cli import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main())
