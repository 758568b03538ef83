"""SpecAugment (frequency and time masking) on normalised features."""

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
