"""Embed the corpus items with Ray Data: ``python jobs/embed.py --config jobs/configs/default.yaml [k=v ...]``."""
import sys

from recbase.cli import embed_main

if __name__ == "__main__":
    sys.exit(embed_main())
