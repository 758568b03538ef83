"""Losses of the amortized encoder: expected compute, and the amortization loss.

Both act on the arbitrator's routing weights ``w`` (B, T, K) over valid frames only. ``cost``
(K,) is each branch's time per frame on the simulated device, so "cheaper" has one meaning in
the losses, the model's backlog and the device simulator. Both are summed over an utterance's
frames and averaged over utterances, like the RNN-T loss, so a weight of 1 trades one nat of
transcript likelihood against one whole frame on the dearest branch.
"""

from __future__ import annotations

import torch


def _per_utterance(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask.to(x.dtype)).sum() / max(1, x.shape[0])


def compute_loss(weights: torch.Tensor, cost: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Expected cost relative to the dearest branch, summed over frames (per utterance)."""
    return _per_utterance(weights @ (cost / cost.max()), mask)


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
    return _per_utterance(saving * idle, mask)


def end_latency_loss(
    weights: torch.Tensor,
    lags: torch.Tensor,
    cost: torch.Tensor,
    end_frame: torch.Tensor,
) -> torch.Tensor:
    """The simulated end-of-speech latency, in frames of the dearest branch, per utterance.

    Frame ``e = end_frame[b]`` holds the last speech sample; the device finishes it
    ``lags[b, e] + weights[b, e] @ cost`` after it arrived (its backlog, then its own cost), the
    latency ``runtime.devicesim`` reports. The backlog is a differentiable function of every
    earlier routing weight, so this teaches the arbitrator both to drain the backlog before the
    end and to take the cheap branch where speech fades. It charges exactly what the latency
    bar measures, where the amortization loss only discourages building a backlog.
    """
    rows = torch.arange(weights.shape[0], device=weights.device)
    delay = lags[rows, end_frame] + weights[rows, end_frame] @ cost
    return (delay / cost.max()).mean()
