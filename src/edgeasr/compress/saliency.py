"""Activation statistics for activation-aware pruning: the RMS of every input of every matrix.

Magnitude pruning removes the smallest weights, but a small weight on an input that is always
large can matter more than a large weight on an input that is nearly silent. Scoring a weight by
``|w_ij| * rms(x_j)`` (the size of its contribution to the output, as in Wanda, Sun et al. 2023)
ranks weights of different layers on one scale, which is what one global pruning threshold
needs: on the bundled model, pruned once to 50% with one global threshold and no fine-tuning,
magnitude gives 31.3% WER on the test splits and ``|w| * rms`` 18.2%
(``scripts/probe_saliency.py``). After the compression page's two-epoch distilled fine-tune most
of that gap is gone (docs/results/compression.md: within the test set's noise).

The same forward passes can also collect each matrix's full input second moment ``E[x x^T]``,
which one-shot pruning uses to *reconstruct* the weights it keeps
(``compress.sparsity.reconstruct_kept``): on the bundled model pruned once to 50%, with one
global activation-aware threshold and no fine-tuning, that takes the test WER from 18.2% to 14.5%
(1x1) and from 79.0% to 41.1% (8x1 blocks) (``scripts/probe_saliency.py --refit``). After two
passes of fine-tuning over 30 h that lead is gone (docs/results/compression.md: within noise).

The statistics come from forward passes over a few training utterances, one at a time so that
padding never dilutes them, taken once from the model being compressed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from edgeasr.train.data import FeatureCache, iterate_batches


def calibration_batches(
    cache: FeatureCache,
    n: int,
    encode: Callable[[str], list[int]],
    device: str | torch.device = "cpu",
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Forward-pass arguments (features, lengths, targets, target lengths) of ``n`` evenly
    spaced utterances of ``cache``, one utterance per batch so no padding enters the RMS."""
    n = min(n, len(cache.utts))
    picks = [[int(i * len(cache.utts) / n)] for i in range(n)]
    for _, b in iterate_batches(cache, picks, encode):
        yield tuple(t.to(device) for t in (b.feats, b.feat_lens, b.targets, b.target_lens))


@torch.no_grad()
def input_rms(
    model: nn.Module, names: list[str], batches: Iterable[tuple[torch.Tensor, ...]]
) -> dict[str, torch.Tensor]:
    """RMS over all positions of each input feature of the weights ``names``, one (in,) tensor
    per weight that a ``Linear`` or single-layer ``LSTM`` owns (an LSTM's recurrent matrix reads
    the layer's own outputs, one step earlier). Weights of other modules (embeddings,
    convolutions) get none. ``batches``: argument tuples of ``model``'s forward pass."""
    return rms_from_moments(input_moments(model, names, batches, full=False))


def rms_from_moments(moments: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inputs' RMS (float32) from :func:`input_moments`, full matrices or diagonals: one
    pass over the calibration utterances serves both the scores and the re-fit."""
    return {n: (m.diagonal() if m.dim() == 2 else m).sqrt().float() for n, m in moments.items()}


@torch.no_grad()
def input_moments(
    model: nn.Module, names: list[str], batches: Iterable[tuple[torch.Tensor, ...]], full: bool
) -> dict[str, torch.Tensor]:
    """Mean of ``x x^T`` over all positions of the inputs ``x`` of each weight of ``names`` (as
    :func:`input_rms` picks them): the (in, in) matrix in float64 with ``full``, else only its
    diagonal (in,) in float32."""
    wanted = set(names)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def add(name: str, x: torch.Tensor) -> None:
        if name not in wanted:
            return
        x = x.detach().reshape(-1, x.shape[-1])
        x = x.double() if full else x.float()
        sums[name] = sums.get(name, 0.0) + (x.T @ x if full else (x**2).sum(dim=0))
        counts[name] = counts.get(name, 0) + x.shape[0]

    hooks = []
    for mname, mod in model.named_modules():
        at = f"{mname}." if mname else ""
        if isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_pre_hook(lambda m, a, n=at + "weight": add(n, a[0])))
        elif isinstance(mod, nn.LSTM):
            if mod.num_layers != 1 or mod.bidirectional:
                raise ValueError(f"{mname}: activation statistics need single-layer LSTMs")
            hooks.append(
                mod.register_forward_pre_hook(lambda m, a, n=at + "weight_ih_l0": add(n, a[0]))
            )
            hooks.append(
                mod.register_forward_hook(lambda m, a, out, n=at + "weight_hh_l0": add(n, out[0]))
            )
    was_training = model.training
    model.eval()
    try:
        for args in tqdm(batches, desc="input statistics", unit="utt"):
            model(*args)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: sums[n] / max(1, counts[n]) for n in sums}
