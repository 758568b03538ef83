"""SpecAugment (frequency and time masks) and vocal tract length warping of normalised features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

# Kaldi's mel filterbank as configured in edgeasr.features: 20 Hz up to Nyquist - 400 Hz.
_LOW_HZ = 20.0
_HIGH_HZ = 8000.0 - 400.0


@dataclass
class SpecAugmentConfig:
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width_ratio: float = 0.05  # each time mask covers at most this share of the utterance
    max_time_width: int = 40
    # Vocal tract length perturbation: each utterance's spectrum is scaled in frequency by a
    # factor drawn from [1 - warp, 1 + warp] (0 = off). See ``warp_positions``.
    warp: float = 0.0


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def _hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * torch.expm1(mel / 1127.0)


@lru_cache(maxsize=4)
def _centres_mel(num_bins: int) -> torch.Tensor:
    lo, hi = (
        _mel(torch.tensor(_LOW_HZ, dtype=torch.float64)),
        _mel(torch.tensor(_HIGH_HZ, dtype=torch.float64)),
    )
    step = (hi - lo) / (num_bins + 1)
    return lo + step * torch.arange(1, num_bins + 1, dtype=torch.float64)


def warp_positions(alpha: float, num_bins: int) -> torch.Tensor:
    """Fractional input bin read by each output bin when formants move by a factor ``alpha``.

    A shorter vocal tract puts every formant at ``alpha`` times its frequency (VTLP, Jaitly &
    Hinton 2013), so output bin ``i`` (centre ``f_i`` Hz) takes the energy the input had at
    ``f_i / alpha``. Done on the mel axis of cached log-mel features, this turns the few voices a
    TTS engine has into a continuum of speakers without re-synthesising or re-computing fbank.
    """
    centres = _centres_mel(num_bins)
    lo = centres[0] - (centres[1] - centres[0])
    step = centres[1] - centres[0]
    src = _mel(_hz(centres) / alpha)
    return ((src - lo) / step - 1.0).clamp(0.0, num_bins - 1.0).float()


def frequency_warp(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Warp the last (mel) axis of ``x`` by ``alpha`` with linear interpolation between bins."""
    if alpha == 1.0:
        return x
    pos = warp_positions(alpha, x.shape[-1]).to(x.device)
    left = pos.floor().long()
    right = (left + 1).clamp_max(x.shape[-1] - 1)
    frac = (pos - left).to(x.dtype)
    return x[..., left] * (1.0 - frac) + x[..., right] * frac


class SpecAugment:
    """Masks drawn from a torch.Generator so a resumed run repeats the same augmentation."""

    def __init__(self, cfg: SpecAugmentConfig, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.gen = generator

    def _rand(self, high: int) -> int:
        return int(torch.randint(0, max(high, 1), (1,), generator=self.gen).item())

    def _alpha(self) -> float:
        u = float(torch.rand((1,), generator=self.gen).item())
        return 1.0 + self.cfg.warp * (2.0 * u - 1.0)

    def __call__(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        B, _, F = x.shape
        for b in range(B):
            T = int(lens[b])
            if self.cfg.warp > 0:
                alpha = self._alpha()
                if not math.isclose(alpha, 1.0):
                    x[b, :T] = frequency_warp(x[b, :T], alpha)
            for _ in range(self.cfg.freq_masks):
                w = self._rand(self.cfg.freq_width + 1)
                f0 = self._rand(F - w + 1)
                x[b, :, f0 : f0 + w] = 0.0
            max_w = min(self.cfg.max_time_width, int(T * self.cfg.time_width_ratio))
            for _ in range(self.cfg.time_masks):
                w = self._rand(max_w + 1)
                t0 = self._rand(T - w + 1)
                x[b, t0 : t0 + w, :] = 0.0
        return x
