"""The streaming transducer: normalisation + encoder + predictor + joiner, and its loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgeasr.losses.rnnt import rnnt_loss
from edgeasr.model.config import ModelConfig
from edgeasr.model.encoder import Encoder, EncoderState
from edgeasr.model.joiner import Joiner
from edgeasr.model.predictor import Predictor
from edgeasr.tokenizer import BLANK_ID


class Transducer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Global mean/variance normalisation lives in the model so every consumer (trainer,
        # decoder, exported runtime) applies the same statistics.
        self.register_buffer("feat_mean", torch.zeros(cfg.num_mel_bins))
        self.register_buffer("feat_std", torch.ones(cfg.num_mel_bins))
        self.encoder = Encoder(cfg)
        self.predictor = Predictor(cfg)
        self.joiner = Joiner(cfg)

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp_min(1e-5))

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.feat_mean) / self.feat_std

    def encode(
        self, feats: torch.Tensor, lens: torch.Tensor, state: EncoderState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Raw fbank (B, T, 80) → projected encoder output (B, T', J) ready for the joiner."""
        enc, enc_lens, state = self.encoder(self.normalize(feats), lens, state)
        return self.joiner.enc_proj(enc), enc_lens, state

    def decode_tokens(self, context: torch.Tensor) -> torch.Tensor:
        """Predictor on exactly ``context_size`` tokens per row → projected (N, J)."""
        return self.joiner.dec_proj(self.predictor(context, pad_left=False))[:, -1]

    def forward(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
        augment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Mean RNN-T loss per utterance for a padded batch.

        ``augment`` (SpecAugment in training) acts on normalised features, where a masked value
        of zero means "the average frame" rather than silence at some arbitrary level.
        """
        x = self.normalize(feats)
        if augment is not None:
            x = augment(x, feat_lens)
        enc, enc_lens, _ = self.encoder(x, feat_lens)
        enc = self.joiner.enc_proj(enc)
        dec = self.joiner.dec_proj(self.predictor(targets))  # (B, U+1, J)
        logits = self.joiner(enc.unsqueeze(2), dec.unsqueeze(1))  # (B, T, U+1, V)
        return rnnt_loss(logits, targets, enc_lens, target_lens, blank=BLANK_ID)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
