"""Stateless prediction network (embedding + causal context convolution over the last tokens).

A stateless predictor (as in icefall's reworked transducers) costs almost nothing on device and
makes beam search hypotheses with the same last ``context_size`` tokens share decoder output.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeasr.model.config import ModelConfig
from edgeasr.tokenizer import BLANK_ID


class Predictor(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.context_size = cfg.context_size
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.predictor_dim)
        self.conv = nn.Conv1d(
            cfg.predictor_dim,
            cfg.predictor_dim,
            kernel_size=cfg.context_size,
            groups=cfg.predictor_dim // 4,
            bias=False,
        )

    def forward(self, tokens: torch.Tensor, pad_left: bool = True) -> torch.Tensor:
        """tokens (B, U) → (B, U, D). With ``pad_left`` the sequence is prefixed by blanks so
        output u depends on tokens < u (training); without, tokens is exactly the context."""
        emb = self.embedding(tokens)
        if pad_left:
            pad = tokens.new_full((tokens.shape[0], self.context_size), BLANK_ID)
            emb = torch.cat([self.embedding(pad), emb], dim=1)
        x = self.conv(emb.transpose(1, 2)).transpose(1, 2)
        return torch.relu(x)
