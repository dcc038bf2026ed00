"""RecBase: generative foundation-model pretraining for zero-shot recommendation."""

__version__ = "0.1.0"
