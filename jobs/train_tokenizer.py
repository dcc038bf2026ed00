"""Train the concept-ID tokenizer and assign every item: ``python jobs/train_tokenizer.py --config ... [k=v ...]``."""
import sys

from recbase.cli import tokenize_main

if __name__ == "__main__":
    sys.exit(tokenize_main())
