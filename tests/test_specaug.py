"""SpecAugment: masks are seeded (a resumed run repeats them) and stay inside the utterance."""

import pytest
import torch

from edgeasr.train.specaug import SpecAugment, SpecAugmentConfig, warp_frequency


def test_specaugment_is_seeded_and_keeps_padding():
    cfg = SpecAugmentConfig(freq_masks=2, time_masks=2)
    x = torch.randn(2, 50, 80)
    x[1, 30:] = 7.0  # padding beyond the second utterance's length
    lens = torch.tensor([50, 30])
    a = SpecAugment(cfg, torch.Generator().manual_seed(3))(x, lens)
    b = SpecAugment(cfg, torch.Generator().manual_seed(3))(x, lens)
    assert torch.equal(a, b)
    assert bool((a == 0).any()) and not torch.equal(a, x)
    # time masks stay inside each utterance; frequency masks may cover padding (harmless)
    assert torch.equal(a[1, 30:][a[1, 30:] != 0], x[1, 30:][a[1, 30:] != 0])


def test_frequency_warp_moves_a_peak_and_is_identity_at_one():
    x = torch.zeros(3, 4, 80)
    x[:, :, 40] = 1.0
    out = warp_frequency(x, torch.tensor([1.0, 1.1, 0.9]))
    assert torch.equal(out[0], x[0])
    assert int(out[1, 0].argmax()) == 44  # 44 / 1.1 = 40: the peak moved up
    assert int(out[2, 0].argmax()) == 36  # 36 / 0.9 = 40: and down
    assert 0 < float(out[1, 0, 43]) < 1  # interpolated between bins, not rounded


def test_warp_is_seeded_and_off_by_default():
    x = torch.randn(2, 50, 80)
    lens = torch.tensor([50, 30])
    no_masks = {"freq_masks": 0, "time_masks": 0}
    plain = SpecAugment(SpecAugmentConfig(**no_masks), torch.Generator().manual_seed(3))(x, lens)
    assert torch.equal(plain, x)
    cfg = SpecAugmentConfig(freq_warp=0.1, **no_masks)
    a = SpecAugment(cfg, torch.Generator().manual_seed(3))(x, lens)
    b = SpecAugment(cfg, torch.Generator().manual_seed(3))(x, lens)
    assert torch.equal(a, b) and not torch.equal(a, x)
    with pytest.raises(ValueError, match="freq_warp"):
        SpecAugmentConfig(freq_warp=0.6)
