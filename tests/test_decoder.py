"""Decoder presets: the real Qwen2 model from one builder; the paper's sizes on the meta device."""
import pytest
import torch

from recbase.model import decoder

PAPER = {"base": 313e6, "large": 1318e6}


@pytest.mark.parametrize("preset", ["base", "large"])
def test_paper_presets_instantiate_and_match_the_paper_size(preset):
    model = decoder.build(preset, decoder.PAPER_VOCAB, device="meta")
    counts = decoder.count_parameters(model)
    cfg = model.config
    ratio = counts["total"] / PAPER[preset]
    print(f"\n{preset}: {counts['total'] / 1e6:,.1f}M parameters at vocabulary {decoder.PAPER_VOCAB:,} "
          f"(embedding {counts['embedding'] / 1e6:.1f}M, rest {counts['non_embedding'] / 1e6:,.1f}M) "
          f"vs the paper's {PAPER[preset] / 1e6:,.0f}M: {ratio:.3f}x")
    assert abs(ratio - 1) < 0.03  # the docstrings explain the gap
    shape = {"base": (1024, 2816, 16, 24, 32_768), "large": (1536, 8960, 12, 28, 131_072)}[preset]
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_hidden_layers,
            cfg.max_position_embeddings) == shape
    assert type(model).__name__ == "Qwen2ForCausalLM"


def test_tiny_trains_a_step_and_counts_flops():
    torch.manual_seed(0)
    model = decoder.build("tiny", vocab_size=99)
    ids = torch.randint(3, 99, (2, 16))  # [B, T]
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.embed_tokens.weight.grad is not None
    per_token = decoder.train_flops_per_token(model.config, 16)
    n = decoder.count_parameters(model)
    # 6 x (non-embedding + LM head) parameters, minus norms/biases, plus attention scores
    assert 6 * n["non_embedding"] < per_token < 6 * n["total"] + 12 * 4 * 128 * 16 + 1


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        decoder.build("huge", 10)


def test_a_searched_width_and_depth_stay_in_the_presets_family():
    tiny = decoder.tiny()
    wide = decoder.shaped("tiny", width=192, depth=6)
    assert (wide.hidden_size, wide.num_hidden_layers, wide.num_attention_heads) == (192, 6, 6)
    assert wide.hidden_size // wide.num_attention_heads == tiny.hidden_size // tiny.num_attention_heads  # head size
    assert wide.intermediate_size / wide.hidden_size == tiny.intermediate_size / tiny.hidden_size
    assert decoder.shaped("tiny") == tiny
    base = decoder.shaped("base", width=512)  # grouped-query attention keeps its 4 query heads per KV head
    assert (base.num_attention_heads, base.num_key_value_heads) == (8, 2)
    with pytest.raises(ValueError, match="width 100 must be a multiple of 32"):
        decoder.shaped("tiny", width=100)
    model = decoder.build("tiny", 300, width=64, depth=2)
    assert model.config.hidden_size == 64 and len(model.model.layers) == 2
