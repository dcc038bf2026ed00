"""The RecBase decoder: transformers' ``Qwen2ForCausalLM`` from named presets of one builder.

The paper gives hidden size, intermediate size, heads and layers of its 0.3B and 1.5B models and a
vocabulary of 20,000 concept tokens; it does not state key-value heads, tied embeddings or RoPE base.
Our presets fill those in from the public Qwen2 checkpoints of the same widths, and
``tests/test_decoder.py`` prints the resulting parameter counts beside the paper's.
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from recbase.model import items
from recbase.model.vocab import BOS, EOS, PAD

PAPER_VOCAB = 20_000


@dataclass(frozen=True)
class Preset:
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_theta: float = 1_000_000.0


def tiny() -> Preset:
    """CPU preset for tests and the default job (≈0.9M non-embedding parameters): hidden 128, 4 layers."""
    return Preset(hidden_size=128, intermediate_size=384, num_attention_heads=4, num_key_value_heads=4,
                  num_hidden_layers=4, max_position_embeddings=1024, tie_word_embeddings=True)


def base() -> Preset:
    """The paper's 0.3B: hidden 1024, intermediate 2816, 16 heads, 24 layers, 32,768 positions.

    Not stated by the paper, chosen as the reading closest to its 313M at its 20,000-token vocabulary:
    4 key-value heads (grouped-query attention, as Qwen2 uses) and untied input/output embeddings give
    311.6M (-0.5%). The alternatives, measured: full multi-head attention + tied 328.9M (+5.1%),
    full attention + untied 349.4M, 4 KV heads + tied 291.1M.
    """
    return Preset(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4,
                  num_hidden_layers=24, max_position_embeddings=32_768, tie_word_embeddings=False)


def large() -> Preset:
    """The paper's 1.5B: hidden 1536, intermediate 8960, 12 heads, 28 layers, 131,072 positions.

    Key-value heads 2 and tied embeddings, as in Qwen2-1.5B (whose shape this is): 1,341M at the paper's
    vocabulary against its 1,318M (+1.7%; untied would be 1,372M, +4.1%). The paper's figure matches our
    non-embedding count (1,310M) more closely, which suggests it may leave some embedding out.
    """
    return Preset(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                  num_hidden_layers=28, max_position_embeddings=131_072, tie_word_embeddings=True)


PRESETS = {"tiny": tiny, "base": base, "large": large}


def shaped(preset: str | Preset, width: int = 0, depth: int = 0) -> Preset:
    """``preset`` at another width (hidden size) and/or depth (layers); 0 keeps the preset's. A width keeps
    the preset's head size and its ratios of intermediate size and key-value heads to the hidden size, so
    a searched shape is still one of this builder's family."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]()
    fields = dict(preset.__dict__)
    if width:
        head = preset.hidden_size // preset.num_attention_heads
        group = preset.num_attention_heads // preset.num_key_value_heads
        if width % (head * group):
            raise ValueError(f"width {width} must be a multiple of {head * group} (head size {head} x "
                             f"{group} query heads per key-value head)")
        fields.update(hidden_size=width, num_attention_heads=width // head, num_key_value_heads=width // head // group,
                      intermediate_size=preset.intermediate_size * width // preset.hidden_size)
    if depth:
        fields["num_hidden_layers"] = depth
    return Preset(**fields)


def qwen2_config(preset: str | Preset, vocab_size: int, **overrides) -> Qwen2Config:
    """A ``Qwen2Config`` for ``preset`` over ``vocab_size`` tokens (``overrides`` replace preset fields)."""
    fields = {**shaped(preset).__dict__, **overrides}
    return Qwen2Config(vocab_size=vocab_size, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                       use_sliding_window=False, attention_dropout=0.0, **fields)


def build(preset: str | Preset, vocab_size: int, device: str | None = None, width: int = 0, depth: int = 0,
          **overrides) -> Qwen2ForCausalLM:
    """A freshly initialised decoder (``preset`` at ``width`` / ``depth``, see ``shaped``); ``device="meta"``
    builds it without allocating weights."""
    import torch

    cfg = qwen2_config(shaped(preset, width, depth), vocab_size, **overrides)
    if device == "meta":
        with torch.device("meta"):
            return Qwen2ForCausalLM(cfg)
    return Qwen2ForCausalLM(cfg)


def load(directory: str, **kwargs):
    """An exported model from a local directory (``from_pretrained`` with ``kwargs``): the token decoder
    (``Qwen2ForCausalLM``), or the item layout (``items.ItemLayoutModel``), as its config says."""
    cls = items.ItemLayoutModel if isinstance(AutoConfig.from_pretrained(directory), items.ItemLayoutConfig) else AutoModelForCausalLM
    return cls.from_pretrained(directory, **kwargs)


def count_parameters(model) -> dict[str, int]:
    """Unique parameters (tied weights once): total, embedding, and the rest."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = model.get_input_embeddings().weight.numel()
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


def train_flops_per_token(cfg: Qwen2Config, seq_len: int, head: int | None = None) -> float:
    """Forward + backward FLOPs per token: 6 x matmul parameters (LM head included, embedding lookup not)
    + 12 x layers x hidden x seq_len for attention scores (the PaLM appendix B accounting). ``head``: the
    output head's width, when it is not the vocabulary (the item layout's one logit)."""
    h, L, i = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i  # q, o, k, v, gate/up/down
    matmul = L * per_layer + h * (cfg.vocab_size if head is None else head)
    return 6.0 * matmul + 12.0 * L * h * seq_len
