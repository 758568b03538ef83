"""Training-time augmentation: vocal tract length warping on the mel axis, and masking."""

import torch

from edgeasr.train.specaug import SpecAugment, SpecAugmentConfig, frequency_warp, warp_positions


def test_warp_identity_and_monotone():
    pos = warp_positions(1.0, 80)
    assert torch.allclose(pos, torch.arange(80, dtype=torch.float32), atol=1e-4)
    up = warp_positions(1.1, 80)
    assert torch.all(up[1:] >= up[:-1])
    # alpha > 1 (shorter vocal tract) reads from lower frequencies
    assert torch.all(up[5:-5] < torch.arange(5, 75))


def test_warp_moves_a_formant_up_by_the_expected_mel_amount():
    x = torch.zeros(3, 80)
    x[:, 40] = 1.0  # one "formant" at bin 40
    y = frequency_warp(x, 1.15)
    peak = int(y[0].argmax())
    assert peak > 40
    # a 15 % higher formant is a few mel bins up near the middle of the range, never 0 or 20
    assert 2 <= peak - 40 <= 12
    assert torch.allclose(frequency_warp(x, 1.0), x)


def test_specaugment_warp_is_seeded_and_keeps_padding():
    cfg = SpecAugmentConfig(freq_masks=0, time_masks=0, warp=0.1)
    x = torch.randn(2, 50, 80)
    x[1, 30:] = 7.0  # padding beyond the second utterance's length
    lens = torch.tensor([50, 30])
    a = SpecAugment(cfg, torch.Generator().manual_seed(3))(x, lens)
    b = SpecAugment(cfg, torch.Generator().manual_seed(3))(x, lens)
    assert torch.equal(a, b)
    assert not torch.allclose(a, x)
    assert torch.equal(a[1, 30:], x[1, 30:])
