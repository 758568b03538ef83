"""Per-channel symmetric weight quantisation: exact (PTQ, packing), fake (QAT forward) and the
grid regulariser (QAT loss).

A ``bits``-bit weight is ``q * scale`` with integer ``q`` in [-(2^(b-1) - 1), 2^(b-1) - 1] and one
scale per output channel (row): symmetric so zero is exactly representable (pruned weights stay
zero and cost nothing in the packed file), per row because row norms of LSTM gate matrices differ
by an order of magnitude. At 8 bits and more the scale is ``max |w_row| / qmax``. Below 8 bits it
is the clipping point with the least squared rounding error over the row (``clipped_scale``): a
4-bit row has only 7 levels a side, and spending them up to one rare outlier leaves the bulk of
the weights on a coarse grid. On the bundled model clipping cuts the 4-bit rounding error by a
quarter (``scripts/probe_clipping.py``), and QAT 4-bit on the compression page went from 15.63%
to 14.13% WER with it (PTQ 4-bit alone moved within noise); at 8 bits it changes nothing
measurable, so 8 bits keep the maximum. Scales are rounded up to float16
numbers, in training as in packing, so the packed file stores them in two bytes without changing
a single dequantised weight.

Requantising weights that already sit on a grid gives back the same grid (``quantize`` is
idempotent): their largest code is qmax, so the row-maximum candidate reproduces the scale with
zero error, and it is the first candidate the search considers. That is what lets ``edgeasr
pack`` recover a QAT model's trained codes from its float weights.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def qmax(bits: int) -> int:
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    return (1 << (bits - 1)) - 1


# Bit widths below this clip each row at its least-squares point instead of its maximum.
CLIP_BELOW_BITS = 8
# Clipping points searched, as fractions of the row maximum: the maximum first (ties keep it),
# then 0.98 down to 0.30 (the bundled model's 4-bit rows clip at 0.68-0.90 of their maximum,
# 5th to 95th percentile).
CLIP_RATIOS = (1.0, *(r / 100 for r in range(98, 29, -2)))


def channel_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Scale per output channel, shaped to broadcast against ``w`` (rows = dim 0)."""
    scale = clipped_scale(w, bits) if bits < CLIP_BELOW_BITS else max_scale(w, bits)
    return scale.reshape(channel_scale_shape(w))


def row_scale(w: torch.Tensor, bits: int, scale: torch.Tensor | None) -> torch.Tensor:
    """``scale`` (one per row, e.g. cached in training) shaped against ``w``, or the searched
    ``channel_scale`` when it is None."""
    return channel_scale(w, bits) if scale is None else scale.reshape(channel_scale_shape(w))


def channel_scale_shape(w: torch.Tensor) -> tuple[int, ...]:
    """Per-row scales broadcast against ``w`` in this shape."""
    return (-1,) + (1,) * (w.dim() - 1)


def max_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-row scale that maps the row maximum to qmax, (rows,)."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).float()
    return float16_ceil(amax / qmax(bits))


def clipped_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-row scale, (rows,), among ``CLIP_RATIOS`` of the row maximum, with the least summed
    squared error after quantise-dequantise (weights beyond the clipping point saturate at
    qmax)."""
    rows = w.detach().reshape(w.shape[0], -1).float()
    amax = rows.abs().amax(dim=1)
    best_err = torch.full_like(amax, float("inf"))
    best = max_scale(w, bits)
    for ratio in CLIP_RATIOS:  # one row-sized pass per candidate keeps memory at one matrix
        s = float16_ceil(amax * ratio / qmax(bits))  # > 0 even for an all-zero row
        q = torch.clamp(torch.round(rows / s[:, None]), -qmax(bits), qmax(bits))
        err = ((q * s[:, None] - rows) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, s, best)
    return best


def float16_ceil(x: torch.Tensor) -> torch.Tensor:
    """The smallest float16 number ≥ ``x`` (and > 0), as float32; raises past float16's range."""
    if bool((x > torch.finfo(torch.float16).max).any()):
        raise ValueError("a quantisation scale exceeds float16's range (weights above ~8e6)")
    h = x.clamp_min(0).to(torch.float16)
    # the next float16 up: for non-negative finite halves, the bit pattern + 1 (this works on
    # every device; torch.nextafter has no float16 kernel on some)
    up = (h.view(torch.int16) + 1).view(torch.float16)
    return torch.where((h.float() < x) | (h == 0), up, h).float()


def quantize(
    w: torch.Tensor, bits: int, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` → (integer codes as int32, per-row scale (rows,)); ``dequantize`` inverts.

    ``scale`` (one per row, e.g. cached during training) replaces the search.
    """
    scale = row_scale(w, bits, scale)
    q = torch.clamp(torch.round(w.detach() / scale), -qmax(bits), qmax(bits)).to(torch.int32)
    return q, scale.reshape(-1)


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float32) * scale.reshape(channel_scale_shape(q))


def fake_quant(w: torch.Tensor, bits: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Quantise-dequantise in the forward pass, identity gradient (straight-through estimator)."""
    q, s = quantize(w, bits, scale)
    return w + (dequantize(q, s) - w).detach()


def grid_penalty(w: torch.Tensor, bits: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the weights of ``(scale / pi) * |sin(pi * w / scale)|``: zero on the grid.

    Each term is (to first order) the weight's distance to its nearest grid point, so the
    penalty acts like an L1 pull towards the grid with unit slope whatever the bit width, and
    ``reg_weight`` means the same for 8 and 4 bits. Its gradient points every weight at its
    nearest grid point, so the optimiser itself moves weights where rounding will not hurt,
    which the straight-through estimator alone never asks for (it sees the rounded forward
    pass but passes gradients as if nothing were rounded). The scale is held fixed (detached)
    so the penalty cannot be lowered by stretching the grid.
    """
    scale = row_scale(w, bits, scale)
    return (scale / math.pi * torch.sin(math.pi * w / scale).abs()).sum()


def rate_penalty(w: torch.Tensor, bits: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of ``|w| / scale`` over the weights below their row's maximum: the L1 norm of the
    integer codes, which is (up to a constant) their code length under a Laplacian model.

    Why: the packed file entropy-codes the kept codes, and a QAT model's int8 codes are spread
    almost evenly over their range (about 7.4 bits each at 50% sparsity, so int8 + 50% packs to
    1/7 of the fp32 bytes, not 1/8; ``scripts/probe_code_entropy.py``). This pull lets training
    trade accuracy for bits: weights the loss does not hold up drift towards zero, the codes'
    distribution peaks and the entropy coder spends fewer bits on them. Each row's largest
    weight is left out, so the penalty cannot shrink the scale itself (which would re-spread
    every code of the row over the grid); the scale is held fixed (detached) as in
    ``grid_penalty``. Zero (pruned) weights add nothing.
    """
    scale = row_scale(w, bits, scale)
    a = w.abs()
    row_max = a.detach().reshape(w.shape[0], -1).amax(dim=1).reshape(channel_scale_shape(w))
    return (a / scale * (a.detach() < row_max)).sum()


def code_entropy_bits(codes: torch.Tensor) -> float:
    """Order-0 entropy, in bits per code, of the non-zero integer codes (0.0 when none): what
    an entropy coder spends per kept weight, the quantity ``rate_penalty`` lowers."""
    nz = codes[codes != 0]
    if nz.numel() == 0:
        return 0.0
    _, counts = torch.unique(nz, return_counts=True)
    p = counts.double() / nz.numel()
    return float(-(p * torch.log2(p)).sum())


def packed_bits(stats: list[tuple[int, int, float]]) -> tuple[float, float]:
    """(zero-map bits, kept-code bits) in total over matrices given as (weights, non-zero codes,
    entropy of those codes in bits each): each zero map at its binary entropy (the bitmap's
    cost after zstd) and each matrix's codes at theirs, as the packed file stores them.
    ``Compressor.rate_bits`` and ``scripts/probe_code_entropy.py --packed`` both estimate
    sizes with it."""
    map_bits = code_bits = 0.0
    for n, k, h in stats:
        p = k / n if n else 0.0
        if 0.0 < p < 1.0:
            map_bits += n * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
        code_bits += k * h
    return map_bits, code_bits


def grid_distance(w: torch.Tensor, bits: int) -> float:
    """Mean distance to the nearest grid point in units of the step (0: on the grid, 0.5 max)."""
    x = w.detach() / channel_scale(w, bits)
    return float((x - torch.round(x)).abs().mean())


def quantize_model(model: nn.Module, bits: int, names: list[str]) -> nn.Module:
    """Post-training quantisation: a copy whose weights ``names`` are rounded to the grid.

    The weights stay float tensors (dequantised), so every consumer — torch decoding, ONNX export
    — runs the quantised model unchanged; the packed file stores the integer codes.
    """
    out = copy.deepcopy(model)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for n in names:
            q, scale = quantize(params[n], bits)
            params[n].copy_(dequantize(q, scale))
    return out
