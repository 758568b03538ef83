"""SpecAugment: masks are seeded (a resumed run repeats them) and stay inside the utterance."""

import torch

from edgeasr.train.specaug import SpecAugment, SpecAugmentConfig


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
