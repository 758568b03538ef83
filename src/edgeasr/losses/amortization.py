"""Losses of the amortized encoder: expected compute, and the amortization loss.

Both act on the arbitrator's routing weights ``w`` (B, T, K) over valid frames only. ``cost``
(K,) is each branch's time per frame on the simulated device, so "cheaper" has one meaning in
the losses, the model's backlog and the device simulator.
"""

from __future__ import annotations

import torch


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def compute_loss(weights: torch.Tensor, cost: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Expected cost per frame relative to the dearest branch, in [0, 1]."""
    return _masked_mean(weights @ (cost / cost.max()), mask)


def amortization_loss(
    weights: torch.Tensor,
    lags: torch.Tensor,
    cost: torch.Tensor,
    threshold_s: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Charge the saving of a cheaper branch on frames that met no significant backlog.

    A frame that met backlog ``lag`` costs ``sum_k w_k (1 - cost_k / max cost)`` scaled by
    ``max(0, 1 - lag / threshold_s)``: full charge with nothing waiting, none once a
    ``threshold_s`` backlog has built up. Cheap branches are therefore used to drain backlog,
    not to keep it low on average, and at the end of speech little is left to drain.
    """
    saving = weights @ (1.0 - cost / cost.max())  # (B, T)
    idle = torch.relu(1.0 - lags / threshold_s)
    return _masked_mean(saving * idle, mask)
