"""Causal streaming LSTM encoder with carried state.

State is an explicit tensor tuple so the same module runs offline (whole utterance, state None)
and streaming (chunk by chunk), and exports to ONNX with state as graph inputs and outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeasr.model.config import ModelConfig

# (h, c) per layer, stacked: h (L, B, P), c (L, B, H)
EncoderState = tuple[torch.Tensor, torch.Tensor]


class StackFrames(nn.Module):
    """Concatenate ``factor`` consecutive frames; trailing frames that do not fill a group drop."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, D = x.shape
        T2 = T // self.factor
        x = x[:, : T2 * self.factor].reshape(B, T2, D * self.factor)
        return x, torch.div(lens, self.factor, rounding_mode="floor")


def nonzero_macs(module: nn.Module) -> int:
    """Multiply-adds of one pass through every weight matrix of ``module``: its non-zeros.

    Element-wise work (gate non-linearities, norms) is left out: under 1% of any encoder here.
    """
    return sum(int(torch.count_nonzero(p)) for p in module.parameters() if p.dim() >= 2)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stack = StackFrames(cfg.stack)
        self.input_proj = nn.Linear(cfg.num_mel_bins * cfg.stack, cfg.encoder_dim)
        self.reduce = StackFrames(2) if cfg.reduce_after > 0 else None
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(cfg.num_layers):
            self.layers.append(
                nn.LSTM(
                    cfg.encoder_dim,
                    cfg.lstm_hidden,
                    batch_first=True,
                    # A projection only when the cell is wider than the output: torch's oneDNN
                    # kernel (about 2x faster on CPU) does not support projected LSTMs.
                    proj_size=cfg.encoder_dim if cfg.lstm_hidden != cfg.encoder_dim else 0,
                )
            )
            self.norms.append(nn.LayerNorm(cfg.encoder_dim))
        if self.reduce is not None:
            self.reduce_proj = nn.Linear(2 * cfg.encoder_dim, cfg.encoder_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def frame_macs(self) -> int:
        """Multiply-adds per output frame (``subsampling`` x 10 ms), from non-zero weights."""
        fast_steps = self.cfg.subsampling // self.cfg.stack  # input-rate steps per output frame
        macs = fast_steps * nonzero_macs(self.input_proj)
        for i, lstm in enumerate(self.layers):
            fast = self.reduce is None or i < self.cfg.reduce_after
            macs += (fast_steps if fast else 1) * nonzero_macs(lstm)
        if self.reduce is not None:
            macs += nonzero_macs(self.reduce_proj)
        return macs

    def init_state(self, batch: int, device: torch.device | None = None) -> EncoderState:
        L, P, H = self.cfg.num_layers, self.cfg.encoder_dim, self.cfg.lstm_hidden
        return (torch.zeros(L, batch, P, device=device), torch.zeros(L, batch, H, device=device))

    def forward(
        self, feats: torch.Tensor, lens: torch.Tensor, state: EncoderState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Encode normalised features.

        Args:
            feats: (B, T, num_mel_bins); in streaming use T must be a multiple of
                ``cfg.subsampling`` so that no frame is left inside a stacking group.
            lens: (B,) valid frames.
            state: carried LSTM state or None for the start of an utterance.

        Returns (encoder_out (B, T', D), out_lens (B,), new_state).
        """
        x, lens = self.stack(feats, lens)
        x = torch.relu(self.input_proj(x))
        x = self.dropout(x)
        if state is None:
            state = self.init_state(feats.shape[0], feats.device)
        h0, c0 = state
        hs, cs = [], []
        for i, (lstm, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            y, (h, c) = lstm(x, (h0[i : i + 1].contiguous(), c0[i : i + 1].contiguous()))
            hs.append(h)
            cs.append(c)
            y = self.dropout(y)
            x = norm(x + y)
            if self.reduce is not None and i + 1 == self.cfg.reduce_after:
                x, lens = self.reduce(x, lens)
                x = self.reduce_proj(x)
        return x, lens, (torch.cat(hs, 0), torch.cat(cs, 0))
