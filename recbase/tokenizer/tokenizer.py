"""One interface over both tokenizers (CL-VAE, RQ-KMeans): fit, concept IDs, reconstruct, save, load."""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch

from recbase import storage
from recbase.artifacts import TokenizerOutput
from recbase.config import TokenizerConfig, from_dict, to_dict
from recbase.tokenizer import clvae
from recbase.tokenizer.rqkmeans import RQKMeans

WEIGHTS, META = TokenizerOutput.weights, TokenizerOutput.spec


class Tokenizer:
    def __init__(self, cfg: TokenizerConfig, input_dim: int, model: clvae.CLVAE | RQKMeans) -> None:
        self.cfg, self.input_dim, self.model = cfg, input_dim, model
        self.train_log: clvae.TrainLog | None = None

    @property
    def levels(self) -> int:
        return self.cfg.levels

    @classmethod
    def fit(cls, x: np.ndarray, cfg: TokenizerConfig, device: str = "cpu",
            log: Callable[[str], None] = print, progress: bool = False,
            on_epoch: Callable[[dict], None] | None = None) -> "Tokenizer":
        x = np.asarray(x, dtype=np.float32)
        if cfg.kind == "rqkmeans":
            tok = cls(cfg, x.shape[1], RQKMeans(cfg.levels, cfg.codebook_size, cfg.seed).fit(x))
            return tok
        model, train_log = clvae.train(x, cfg, device=device, log=log, progress=progress, on_epoch=on_epoch)
        tok = cls(cfg, x.shape[1], model.cpu())
        tok.train_log = train_log
        return tok

    def codes(self, x: np.ndarray) -> np.ndarray:
        """Concept IDs [N, L] (int32) of embeddings [N, E]."""
        x = np.asarray(x, dtype=np.float32)
        if isinstance(self.model, RQKMeans):
            return self.model.codes(x).astype(np.int32)
        with torch.no_grad():
            return self.model.codes(torch.tensor(x)).numpy().astype(np.int32)

    def codebooks(self) -> np.ndarray:
        """Each level's code vectors [L, K, D]: where the codes live (CL-VAE: its latent space, D =
        latent_dim; RQ-KMeans: the embedding space); an item's latent is the sum of its codes' vectors."""
        if isinstance(self.model, RQKMeans):
            return np.asarray(self.model.codebooks, dtype=np.float32)
        return self.model.rq.codebooks.detach().cpu().numpy()

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """What the IDs decode to, in embedding space [N, E]."""
        if isinstance(self.model, RQKMeans):
            return self.model.reconstruct(codes)
        with torch.no_grad():
            return self.model.reconstruct(torch.as_tensor(codes, dtype=torch.long)).numpy()

    def save(self, directory: str) -> None:
        buf = io.BytesIO()
        state = self.model.state_dict() if isinstance(self.model, clvae.CLVAE) else {"codebooks": torch.from_numpy(self.model.codebooks)}
        torch.save(state, buf)
        storage.write_bytes(buf.getvalue(), storage.join(directory, WEIGHTS))
        storage.write_json({"input_dim": self.input_dim, "config": to_dict(self.cfg)}, storage.join(directory, META))

    @classmethod
    def load(cls, directory: str) -> "Tokenizer":
        meta = storage.read_json(storage.join(directory, META))
        cfg = from_dict(TokenizerConfig, meta["config"], "tokenizer")
        with storage.open_binary(storage.join(directory, WEIGHTS)) as f:
            state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
        if cfg.kind == "rqkmeans":
            model = RQKMeans(cfg.levels, cfg.codebook_size, cfg.seed)
            model.codebooks = state["codebooks"].numpy()
        else:
            model = clvae.CLVAE(meta["input_dim"], cfg)
            model.load_state_dict(state)
            model.eval()
        return cls(cfg, meta["input_dim"], model)


def codebooks_for(code_content: str, directory: str) -> np.ndarray | None:
    """The code vectors of the tokenizer saved in ``directory`` where ``pretrain.code_content`` puts them in a
    fresh model's embedding; None where it is off."""
    return None if code_content == "off" else Tokenizer.load(directory).codebooks()
