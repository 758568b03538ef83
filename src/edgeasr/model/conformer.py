"""Causal streaming Conformer encoder with carried state: the alternative to the LSTM encoder.

Every layer is causal: self-attention sees the current frame and at most ``left_context``
earlier frames, and the depthwise convolution only looks back. Look-ahead is therefore exactly
the LSTM encoder's (the frames inside one stacking window), and, because nothing depends on where
a chunk starts, streaming chunk by chunk gives the whole-utterance result for any chunk size.

The carried state is two tensors with the batch on axis 1, like the LSTM's (h, c), so export and
runtime pass it through unchanged:

* ``attn``: (L, B, left_context, 2D + 1) — keys and values of the last ``left_context`` frames of
  every layer, plus a validity flag (1 for a real frame, 0 for the empty cache at the start of an
  utterance, which attention must not see);
* ``conv``: (L, B, conv_kernel - 1, D) — the depthwise convolution's left input; zeros at the
  start of an utterance are exactly the causal zero padding of the offline pass.

Positions enter through a learnt bias per head and frame offset (0..left_context), which is
independent of absolute time and so well defined in streaming. Layer norm replaces the
Conformer's batch norm in the convolution module: batch statistics have no meaning for one
stream on a device.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from edgeasr.model.config import ModelConfig
from edgeasr.model.encoder import EncoderState, StackFrames, nonzero_macs


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(self.dropout(F.silu(self.w1(self.norm(x))))))


class ConformerLayer(nn.Module):
    """Macaron feed-forward, causal self-attention, causal convolution, feed-forward, norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        D, H = cfg.encoder_dim, cfg.attention_heads
        self.dim, self.heads, self.left = D, H, cfg.left_context
        self.kernel = cfg.conv_kernel
        ff = cfg.ff_dim or 4 * D
        self.ff1 = _FeedForward(D, ff, cfg.dropout)
        self.att_norm = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D)
        self.att_out = nn.Linear(D, D)
        self.pos_bias = nn.Parameter(torch.zeros(H, cfg.left_context + 1))
        self.conv_norm = nn.LayerNorm(D)
        self.pw1 = nn.Linear(D, 2 * D)
        self.depthwise = nn.Conv1d(D, D, cfg.conv_kernel, groups=D)
        self.dw_norm = nn.LayerNorm(D)
        self.pw2 = nn.Linear(D, D)
        self.ff2 = _FeedForward(D, ff, cfg.dropout)
        self.out_norm = nn.LayerNorm(D)
        self.dropout = nn.Dropout(cfg.dropout)

    def weight_macs(self) -> int:
        """Multiply-adds of the weights per frame (non-zeros; the position table is a lookup)."""
        return sum(nonzero_macs(m) for m in self.modules() if isinstance(m, (nn.Linear, nn.Conv1d)))

    def attention_macs(self) -> int:
        """Multiply-adds of scores and weighted values per frame with a full left context."""
        return 2 * (self.left + 1) * self.dim

    def _attend(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, D = x.shape
        H, dh, N = self.heads, D // self.heads, self.left
        q, k, v = self.qkv(self.att_norm(x)).split(D, dim=-1)
        new = torch.cat([k, v, torch.ones_like(k[..., :1])], dim=-1)  # (B, T, 2D+1)
        full = torch.cat([cache, new], dim=1)  # (B, N+T, 2D+1): cached frames then this chunk
        keys, values, valid = full[..., :D], full[..., D : 2 * D], full[..., 2 * D] > 0.5
        # offset[i, j] = how many frames key j lies before query i (query i sits at N + i)
        offset = (torch.arange(T, device=x.device)[:, None] + N) - torch.arange(
            N + T, device=x.device
        )[None, :]
        allowed = (offset >= 0) & (offset <= N) & valid[:, None, :]  # (B, T, N+T)
        bias = self.pos_bias[:, offset.clamp(0, N)]  # (H, T, N+T)
        qh = q.reshape(B, T, H, dh).transpose(1, 2)
        kh = keys.reshape(B, N + T, H, dh).transpose(1, 2)
        vh = values.reshape(B, N + T, H, dh).transpose(1, 2)
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(dh) + bias
        scores = scores.masked_fill(~allowed[:, None], -1e9)  # every query sees itself
        out = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(B, T, D)
        return self.att_out(out), full[:, -N:]

    def _convolve(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.glu(self.pw1(self.conv_norm(x)), dim=-1)  # (B, T, D)
        full = torch.cat([cache, y], dim=1)  # (B, K-1+T, D)
        y = self.depthwise(full.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        y = self.pw2(F.silu(self.dw_norm(y)))
        return y, full[:, -(self.kernel - 1) :]

    def forward(
        self, x: torch.Tensor, attn_cache: torch.Tensor, conv_cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x + 0.5 * self.ff1(x)
        a, attn_cache = self._attend(x, attn_cache)
        x = x + self.dropout(a)
        c, conv_cache = self._convolve(x, conv_cache)
        x = x + self.dropout(c)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x), attn_cache, conv_cache


class ConformerEncoder(nn.Module):
    """Stacked fbank frames → input projection → causal Conformer layers (same API as Encoder)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stack = StackFrames(cfg.stack)
        self.input_proj = nn.Linear(cfg.num_mel_bins * cfg.stack, cfg.encoder_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_layers))

    def frame_macs(self) -> int:
        """Multiply-adds per output frame: non-zero weights plus attention over a full context."""
        per_layer = sum(layer.weight_macs() + layer.attention_macs() for layer in self.layers)
        return nonzero_macs(self.input_proj) + per_layer

    def init_state(self, batch: int, device: torch.device | None = None) -> EncoderState:
        cfg = self.cfg
        L, D = cfg.num_layers, cfg.encoder_dim
        return (
            torch.zeros(L, batch, cfg.left_context, 2 * D + 1, device=device),
            torch.zeros(L, batch, cfg.conv_kernel - 1, D, device=device),
        )

    def forward(
        self, feats: torch.Tensor, lens: torch.Tensor, state: EncoderState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Encode normalised features; see :meth:`edgeasr.model.encoder.Encoder.forward`.

        Padded frames at the end of a batch row never reach a real frame: every layer is causal.
        """
        x, lens = self.stack(feats, lens)
        x = self.dropout(torch.relu(self.input_proj(x)))
        if state is None:
            state = self.init_state(feats.shape[0], feats.device)
        attn, conv = state
        new_attn, new_conv = [], []
        for i, layer in enumerate(self.layers):
            x, a, c = layer(x, attn[i], conv[i])
            new_attn.append(a)
            new_conv.append(c)
        return x, lens, (torch.stack(new_attn), torch.stack(new_conv))
