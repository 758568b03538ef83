"""Joiner: combine one encoder frame and one predictor state into vocabulary logits."""

from __future__ import annotations

import torch
from torch import nn

from edgeasr.model.config import ModelConfig


class Joiner(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(cfg.encoder_dim, cfg.joiner_dim)
        self.dec_proj = nn.Linear(cfg.predictor_dim, cfg.joiner_dim)
        self.out = nn.Linear(cfg.joiner_dim, cfg.vocab_size)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        """Projected inputs broadcast against each other: (..., J) + (..., J) → (..., V).

        Callers project once with ``enc_proj``/``dec_proj`` and reuse the projections, which is
        what makes search cheap; this method takes already projected tensors.
        """
        return self.out(torch.tanh(enc + dec))
