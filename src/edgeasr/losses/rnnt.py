"""RNN-T (transducer) loss in pure PyTorch.

fast-rnnt, optimized-transducer and k2 do not build against the pinned torch, so the loss is
ours. Only two numbers per lattice node matter for the loss: the log-probability of blank and of
the next reference token. We gather those from the joiner's log-softmax first, so the dynamic
programme runs on (B, T, U+1) tensors instead of (B, T, U+1, V), and memory is dominated by the
single log-softmax the joiner needs anyway.

The forward variable is computed along anti-diagonals (t + u = const), where every node depends
only on the previous diagonal; that gives T+U vectorised steps that autograd differentiates.
``logaddexp`` is written as max + log1p(exp(-|a-b|)) because torch.logaddexp with a very
negative sentinel has a NaN second derivative, which breaks gradcheck's double-backward checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from edgeasr.losses.distill import node_kl

NEG_INF = -1.0e4  # finite "minus infinity": exp() underflows to 0, gradients stay finite


def _logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    m = torch.maximum(a, b)
    return m + torch.log1p(torch.exp(-(a - b).abs()))


def rnnt_loss_from_logprobs(
    blank_lp: torch.Tensor,
    label_lp: torch.Tensor,
    frame_lens: torch.Tensor,
    label_lens: torch.Tensor,
) -> torch.Tensor:
    """Negative log-likelihood per utterance from gathered log-probabilities.

    Args:
        blank_lp: (B, T, U+1) log P(blank | t, u).
        label_lp: (B, T, U+1) log P(y_{u+1} | t, u); the last column is unused.
        frame_lens: (B,) valid encoder frames per utterance.
        label_lens: (B,) reference lengths.

    Returns:
        (B,) losses, -log P(y | x).
    """
    B, T, U1 = blank_lp.shape
    device, dtype = blank_lp.device, blank_lp.dtype
    u_idx = torch.arange(U1, device=device)
    # alpha over the current diagonal, indexed by u; t = d - u.
    alpha = torch.full((B, U1), NEG_INF, device=device, dtype=dtype)
    alpha[:, 0] = 0.0  # diagonal 0 holds only the start node (t=0, u=0)
    neg = torch.full((B, 1), NEG_INF, device=device, dtype=dtype)
    final = torch.full((B,), NEG_INF, device=device, dtype=dtype)
    last_t = frame_lens - 1
    for d in range(1, T + U1 - 1):
        t = d - u_idx  # (U1,)
        valid = (t >= 0) & (t < T)
        tc = t.clamp(0, T - 1)
        # from (t-1, u) by blank: alpha_prev[u] + blank_lp[t-1, u]
        tp = (t - 1).clamp(0, T - 1)
        from_blank = alpha + blank_lp[:, tp, u_idx]
        from_blank = torch.where(((t - 1) >= 0).unsqueeze(0), from_blank, NEG_INF)
        # from (t, u-1) by label: alpha_prev[u-1] + label_lp[t, u-1]
        prev_shift = torch.cat([neg, alpha[:, :-1]], dim=1)
        lab = torch.cat([neg, label_lp[:, tc[1:], u_idx[:-1]]], dim=1)
        from_label = prev_shift + lab
        new = _logaddexp(from_blank, from_label)
        alpha = torch.where(valid.unsqueeze(0), new, NEG_INF)
        # Terminal node of each utterance: (T_b - 1, U_b) lies on diagonal T_b - 1 + U_b.
        hit = (last_t + label_lens) == d
        # the test skips work on the CPU; on an accelerator the host sync would cost more
        if blank_lp.device.type != "cpu" or hit.any():
            val = alpha.gather(1, label_lens.view(B, 1)).squeeze(1)
            val = val + blank_lp[torch.arange(B, device=device), last_t, label_lens]
            final = torch.where(hit, val, final)
    # diagonal 0 case: T_b = 1 and U_b = 0
    hit0 = (last_t + label_lens) == 0
    if hit0.any():
        val0 = blank_lp[:, 0, 0]
        final = torch.where(hit0, val0, final)
    return -final


class JointLogprobs(NamedTuple):
    """What training needs from the lattice, each (B, T, U+1)."""

    blank: torch.Tensor  # log P(blank | t, u)
    label: torch.Tensor  # log P(y_{u+1} | t, u); the column u = U is padding
    kl: torch.Tensor | None  # KL(teacher ‖ model) over the vocabulary per node, with a teacher


Teacher = tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor, torch.Tensor]


def _gather_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    blank: int,
    teacher_logits: torch.Tensor | None = None,
) -> JointLogprobs:
    """(B, T, U+1, V) logits → blank and next-label log-probs, and the node KL to a teacher."""
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    B, T, U1, _ = logp.shape
    tgt = torch.cat([targets, targets.new_zeros(B, 1)], dim=1)[:, :U1]
    label_lp = logp.gather(3, tgt.view(B, 1, U1, 1).expand(B, T, U1, 1)).squeeze(3)
    kl = None if teacher_logits is None else node_kl(logp, teacher_logits)
    return JointLogprobs(logp[..., blank], label_lp, kl)


def joint_logprobs(
    joiner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    enc: torch.Tensor,
    dec: torch.Tensor,
    targets: torch.Tensor,
    vocab_size: int,
    blank: int = 0,
    max_elements: int = 1 << 24,
    teacher: Teacher | None = None,
) -> JointLogprobs:
    """Blank and label log-probabilities over the whole lattice with bounded memory.

    The full joiner output is (B, T, U+1, V): for a batch of long utterances that is gigabytes.
    Here it is computed for sub-batches of at most ``max_elements`` logits under activation
    checkpointing, so only the (B, T, U+1) gathered values stay alive; backward recomputes one
    sub-batch's logits at a time. Peak memory is therefore one sub-batch, whatever the batch.

    Args:
        joiner: maps projected (b, T, 1, J) and (b, 1, U+1, J) to logits (b, T, U+1, V).
        enc: (B, T, J) projected encoder output; dec: (B, U+1, J) projected predictor output.
        teacher: (joiner, enc, dec) of a distillation teacher on the same lattice; its logits are
            made a sub-batch at a time next to the model's (no gradient), so the per-node KL of
            the full vocabulary costs no (B, T, U+1, V) tensor either.
    """
    B, T, _ = enc.shape
    U1 = dec.shape[1]
    per_utt = max(1, T * U1 * vocab_size)
    step = max(1, max_elements // per_utt)

    def piece(e: torch.Tensor, d: torch.Tensor, tgt: torch.Tensor, s: int) -> torch.Tensor:
        t_logits = None
        if teacher is not None:
            t_join, t_enc, t_dec = teacher
            with torch.no_grad():
                t_logits = t_join(
                    t_enc[s : s + e.shape[0]].unsqueeze(2), t_dec[s : s + e.shape[0]].unsqueeze(1)
                )
        out = _gather_logprobs(joiner(e.unsqueeze(2), d.unsqueeze(1)), tgt, blank, t_logits)
        return torch.stack([x for x in out if x is not None])

    if step >= B:
        both = piece(enc, dec, targets, 0)
    else:
        parts = [
            checkpoint(
                piece,
                enc[s : s + step],
                dec[s : s + step],
                targets[s : s + step],
                s,
                use_reentrant=False,
            )
            for s in range(0, B, step)
        ]
        both = torch.cat(parts, dim=1)
    return JointLogprobs(both[0], both[1], both[2] if teacher is not None else None)


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    frame_lens: torch.Tensor,
    label_lens: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """RNN-T loss from joiner logits.

    Args:
        logits: (B, T, U+1, V) unnormalised joiner outputs.
        targets: (B, U) int64 token ids (padding arbitrary beyond label_lens).
        frame_lens, label_lens: (B,) int64.
        reduction: "mean" (sum over batch / total label tokens would bias to long
            utterances; we average per utterance), "sum" or "none".
    """
    blank_lp, label_lp, _ = _gather_logprobs(logits, targets, blank)
    losses = rnnt_loss_from_logprobs(blank_lp, label_lp, frame_lens, label_lens)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses
