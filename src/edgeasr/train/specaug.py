"""SpecAugment (frequency and time masking) and a vocal-tract-length warp on normalised features."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SpecAugmentConfig:
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width_ratio: float = 0.05  # each time mask covers at most this share of the utterance
    max_time_width: int = 40
    # Frequency warp (VTLP-like): each utterance's mel axis is stretched by a factor drawn
    # uniformly from [1 - freq_warp, 1 + freq_warp] (0: off). The synthetic corpus has few voices
    # per engine and the test voices are unseen, so stretching the spectrum imitates a speaker
    # with a different vocal-tract length, the largest difference between two voices of one
    # engine. Applied before the masks.
    freq_warp: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.freq_warp < 0.5:
            raise ValueError(f"freq_warp must be in [0, 0.5), got {self.freq_warp}")


def warp_frequency(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Stretch each utterance's feature axis: output bin ``f`` reads input bin ``f / factor``.

    A factor above 1 moves spectral structure up (formants of a shorter vocal tract), below 1
    down; bins read from beyond the top repeat the top bin. Linear interpolation between bins,
    one gather per side, so it runs on the accelerator the batch is on. ``x``: (B, T, F),
    ``factors``: (B,).
    """
    B, T, F = x.shape
    pos = torch.arange(F, dtype=torch.float32)[None, :] / factors.float()[:, None]
    pos = pos.clamp(0.0, F - 1)
    lo = pos.floor().long()  # pos is already within [0, F - 1]
    hi = (lo + 1).clamp(max=F - 1)
    frac = (pos - lo).to(x.device, x.dtype)[:, None, :]
    lo, hi = (i.to(x.device)[:, None, :].expand(B, T, F) for i in (lo, hi))
    return x.gather(2, lo) * (1.0 - frac) + x.gather(2, hi) * frac


class SpecAugment:
    """Masks drawn from a torch.Generator so a resumed run repeats the same augmentation."""

    def __init__(self, cfg: SpecAugmentConfig, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.gen = generator

    def _rand(self, high: int) -> int:
        return int(torch.randint(0, max(high, 1), (1,), generator=self.gen).item())

    def __call__(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        # Masks are drawn on the host and applied as two small 0/1 tensors, so a batch on an
        # accelerator costs one host sync and one multiply instead of several per utterance.
        B, T_max, F = x.shape
        if self.cfg.freq_warp > 0.0:
            u = torch.rand(B, generator=self.gen)
            x = warp_frequency(x, 1.0 + self.cfg.freq_warp * (2.0 * u - 1.0))
        keep_t = torch.ones(B, T_max)
        keep_f = torch.ones(B, F)
        for b, T in enumerate(lens.tolist()):
            for _ in range(self.cfg.freq_masks):
                w = self._rand(self.cfg.freq_width + 1)
                f0 = self._rand(F - w + 1)
                keep_f[b, f0 : f0 + w] = 0.0
            max_w = min(self.cfg.max_time_width, int(T * self.cfg.time_width_ratio))
            for _ in range(self.cfg.time_masks):
                w = self._rand(max_w + 1)
                t0 = self._rand(T - w + 1)
                keep_t[b, t0 : t0 + w] = 0.0
        keep_t, keep_f = keep_t.to(x.device, x.dtype), keep_f.to(x.device, x.dtype)
        return x * keep_t[:, :, None] * keep_f[:, None, :]
