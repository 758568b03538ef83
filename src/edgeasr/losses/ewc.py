"""Elastic weight consolidation (Kirkpatrick et al., 2017) for model updates.

A model update learns new names and voices from a few hundred utterances; every weight it moves
may also move what the device already recognised. Replay and distillation (configs/update-*.yaml)
rehearse a sample of the old data; EWC instead says, per weight, how much the old data cares:
the diagonal of the Fisher information of the base model on base-corpus utterances. The penalty

    ewc_weight / 2 · Σ_i F_i (w_i − w0_i)²

makes changing an important weight expensive and a free one cheap. For a sparse diff this also
steers *which* weights the diff keeps: magnitude pruning of the change keeps the largest |δ|,
and under the penalty those are the weights the old data does not depend on.

The Fisher is the empirical one (squared gradients of the RNN-T loss on the reference
transcripts) over mini-batches, normalised to mean 1 over all penalised weights, so that
``ewc_weight`` reads as the price of a squared change of a weight of average importance and does
not depend on the model's size or the loss' scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def diagonal_fisher(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]],
    loss_fn: Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Mean squared gradient of ``loss_fn`` per trainable parameter over ``batches``,
    normalised to mean 1 over all of them (see the module docstring).

    ``model`` is left as it was: gradients are cleared, the train/eval mode is restored.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it runs
    count = 0
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            for n, p in params.items():
                if p.grad is not None:
                    acc[n] += p.grad.detach() ** 2
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if count == 0:
        raise ValueError("EWC: no batches to estimate the Fisher information from")
    total = sum(float(a.sum()) for a in acc.values())
    numel = sum(a.numel() for a in acc.values())
    if not total > 0.0:
        raise ValueError("EWC: the Fisher information is zero (no gradient reached the weights)")
    scale = numel / total
    return {n: a * scale for n, a in acc.items()}


class EWCPenalty:
    """``weight / 2 · Σ F (w − w0)²`` over the parameters the Fisher was estimated for, with
    ``w0`` the weights when the penalty was created (the base model of the update)."""

    def __init__(self, model: nn.Module, fisher: dict[str, torch.Tensor], weight: float) -> None:
        if not weight > 0.0:
            raise ValueError(f"EWC weight must be > 0, got {weight}")
        params = dict(model.named_parameters())
        missing = sorted(set(fisher) - set(params))
        if missing:
            raise ValueError(f"EWC: the model has no parameters {missing[:3]}")
        self.weight = float(weight)
        self.fisher = fisher
        self.anchor = {n: params[n].detach().clone() for n in fisher}

    def __call__(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        terms = [(self.fisher[n] * (params[n] - self.anchor[n]) ** 2).sum() for n in self.fisher]
        return 0.5 * self.weight * torch.stack(terms).sum()
