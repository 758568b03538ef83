"""Gradual magnitude pruning (Zhu & Gupta 2017) to a fixed share of zero weights, optionally in
blocks, and optionally activation-aware (weights scored by what they add to their outputs, see
``compress.saliency``).

Sparsity follows the cubic schedule ``s(t) = s_f (1 - (1 - p)^3)``, ``p`` the progress from
``start`` to ``end``: it prunes fast while the network still has redundancy and slows down as it
approaches the target, leaving the last part of training to recover. Masks only ever lose ones
(a pruned weight never comes back), are re-applied after every optimiser step (AdamW's momentum
and weight decay would otherwise revive zeros) and are saved with the checkpoint.

Blocks (e.g. 1×8: eight neighbouring inputs of one output row) cost an eighth of the zero map in
the packed file and let the sparse kernels skip whole runs of memory; 1×1 is unstructured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def cubic_sparsity(step: int, start: int, end: int, target: float) -> float:
    """Target sparsity at ``step``: 0 before ``start``, ``target`` from ``end`` on."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if step < start:
        return 0.0
    if step >= end or end <= start:
        return target
    p = (step - start) / (end - start)
    return target * (1.0 - (1.0 - p) ** 3)


# Parameters that never get compressed: feature statistics, norms and biases are a rounding error
# of the size and sensitive; the CTC head is used only in training and is not shipped.
def compressible_weights(model: nn.Module) -> list[str]:
    """Names of the weight matrices (2-D and up) that pruning and quantisation act on."""
    return [
        n for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("ctc_head.")
    ]


def block_shape_for(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    """The block used for a tensor: ``block`` if it tiles the 2-D view, else 1×1."""
    rows, cols = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
    if rows % block[0] == 0 and cols % block[1] == 0:
        return block
    return (1, 1)


def block_scores(w: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Mean |w| per block, as a (rows / br, cols / bc) grid."""
    br, bc = block
    m = w.detach().abs().reshape(w.shape[0], -1)
    R, C = m.shape
    return m.reshape(R // br, br, C // bc, bc).mean(dim=(1, 3))


def expand_block_mask(
    bmask: torch.Tensor, block: tuple[int, int], shape: torch.Size
) -> torch.Tensor:
    br, bc = block
    return bmask.repeat_interleave(br, 0).repeat_interleave(bc, 1).reshape(shape)


@dataclass
class PruneConfig:
    target: float = 0.0  # final share of zero weights in every pruned tensor (layer scope)
    start_frac: float = 0.1  # schedule start/end as fractions of the run's steps
    end_frac: float = 0.7
    every: int = 50  # steps between mask updates
    scope: str = "layer"  # "layer": each tensor reaches the target; "global": one threshold
    block: tuple[int, int] = (1, 1)
    # "magnitude": score |w|; "activation": |w| times the RMS of the input it multiplies, from
    # calibration_utts training utterances (compress.saliency), so one global threshold
    # compares weights of different layers by what they add to their outputs
    saliency: str = "magnitude"
    calibration_utts: int = 200
    # one-shot only: after pruning, set each row's kept weights to the least-squares fit of the
    # row's dense output on the calibration inputs (reconstruct_kept), so the kept weights take
    # over what the pruned ones did instead of leaving it to fine-tuning
    reconstruct: bool = False

    def __post_init__(self) -> None:
        # a config file with a typo fails when it is read, before a run directory exists
        check_prune_choices(self)


def check_prune_choices(cfg: PruneConfig) -> None:
    if cfg.scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {cfg.scope!r}")
    if cfg.saliency not in ("magnitude", "activation"):
        raise ValueError(f"saliency must be 'magnitude' or 'activation', got {cfg.saliency!r}")
    if cfg.reconstruct and (cfg.start_frac, cfg.end_frac) != (0.0, 0.0):
        # a gradual schedule would solve ~10^4 least-squares problems at each of its updates
        raise ValueError("reconstruct needs one-shot pruning (start_frac = end_frac = 0)")


# Ridge added to E[x x^T] before solving, as a share of its mean diagonal (SparseGPT's default):
# inputs that never vary on the calibration set would otherwise make the system singular.
RECONSTRUCT_DAMP = 0.01


@torch.no_grad()
def reconstruct_kept(w: torch.Tensor, keep: torch.Tensor, moment: torch.Tensor) -> torch.Tensor:
    """``w`` (out, in) with each row's kept weights re-fitted and the rest zero.

    Per row ``r`` with kept inputs ``K`` and pruned ``P``, minimises the expected output error
    ``E[(x . w_r - x_K . v)^2] = (w_r - v)^T M (w_r - v)`` (``M = E[x x^T]``, ``moment``) over
    ``v`` zero outside ``K``: ``v_K = w_K + M_KK^-1 M_KP w_P``. A pruned input that correlates
    with kept ones is thus partly carried by them (Optimal Brain Surgeon's update, computed
    per row as in SparseGPT but for a mask chosen beforehand). Rows with the same kept set (the
    rows of a block) share one solve.
    """
    m = moment.double()
    eye = torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
    m = m + RECONSTRUCT_DAMP * m.diagonal().mean() * eye
    wd, keep = w.double().to(m.device), keep.bool().to(m.device)
    out = torch.zeros_like(wd)
    patterns, which = torch.unique(keep, dim=0, return_inverse=True)
    for i, k in enumerate(patterns):
        rows = (which == i).nonzero().flatten()
        if not k.any():
            continue
        p = ~k
        fit = wd[rows][:, k]
        if p.any():
            fit = fit + torch.linalg.solve(m[k][:, k], m[k][:, p] @ wd[rows][:, p].T).T
        out[rows.unsqueeze(1), k.nonzero().flatten()] = fit
    return out.to(w.device, w.dtype)


class Pruner:
    """Owns the block masks of ``names`` in ``model`` and updates them on the cubic schedule.

    With ``reference`` (weights of the same names) it prunes the *change* from the reference
    instead of the weights: ``w = ref + mask * (w - ref)``, scored by ``|w - ref|``. That is a
    sparse neural diff trained with iterative pruning.

    With ``input_scale`` (per weight name, one factor per input column of its 2-D view, e.g. the
    inputs' RMS from :func:`edgeasr.compress.saliency.input_rms`) each weight is scored by
    ``|w| * scale``; weights without one keep their magnitude.

    With ``cfg.reconstruct``, ``input_moment`` (per weight name, ``E[x x^T]`` of its inputs,
    :func:`edgeasr.compress.saliency.input_moments`) re-fits the kept weights of every matrix
    whose mask the one-shot prune changed (:func:`reconstruct_kept`); matrices without one
    (embeddings, convolutions) are only masked.
    """

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        cfg: PruneConfig,
        total_steps: int,
        reference: dict[str, torch.Tensor] | None = None,
        input_scale: dict[str, torch.Tensor] | None = None,
        input_moment: dict[str, torch.Tensor] | None = None,
    ):
        check_prune_choices(cfg)  # fields may have been set after the config was made
        if cfg.reconstruct and (reference is not None or not input_moment):
            raise ValueError("reconstruct needs the inputs' second moments and prunes weights only")
        self.input_moment = {n: m for n, m in (input_moment or {}).items() if n in set(names)}
        self.cfg = cfg
        self.params = {n: p for n, p in model.named_parameters() if n in set(names)}
        self.reference = reference
        self.input_scale = {
            n: s.reshape(1, -1).to(self.params[n].device)
            for n, s in (input_scale or {}).items()
            if n in self.params
        }
        for n, sc in self.input_scale.items():
            cols = self.params[n][0].numel()
            if sc.shape[1] != cols:
                raise ValueError(f"{n}: input scale has {sc.shape[1]} entries, not {cols}")
        for n, m in self.input_moment.items():
            cols = self.params[n][0].numel()
            if tuple(m.shape) != (cols, cols):
                raise ValueError(f"{n}: input moment is {tuple(m.shape)}, not ({cols}, {cols})")
        self.blocks = {
            n: block_shape_for(tuple(p.shape), tuple(cfg.block)) for n, p in self.params.items()
        }
        self.block_masks = {
            n: torch.ones_like(block_scores(p, self.blocks[n]), dtype=torch.bool)
            for n, p in self.params.items()
        }
        self.start = int(cfg.start_frac * total_steps)
        self.end = max(self.start, int(cfg.end_frac * total_steps))
        self._next_update: int | None = None
        self._reached_end = False

    def mask(self, name: str) -> torch.Tensor:
        p = self.params[name]
        return expand_block_mask(self.block_masks[name], self.blocks[name], p.shape).to(p.dtype)

    def sparsity(self) -> float:
        """Share of zero weights over all pruned tensors (by the masks)."""
        zeros = sum(int((~self.mask(n).bool()).sum()) for n in self.params)
        total = sum(p.numel() for p in self.params.values())
        return zeros / max(1, total)

    def update(self, step: int) -> bool:
        """Recompute masks if ``step`` is an update step; returns whether anything changed.

        Update steps are ``start + k * every`` and ``end``. ``step`` may jump (a schedule that
        follows a wall-clock budget, ``Trainer``): the first step at or past an update step
        updates, and the first at or past ``end`` sets the target sparsity, so a run whose
        steps skip never misses the end of its schedule.
        """
        if self.cfg.target <= 0 or step < self.start or self._reached_end:
            return False
        if self._next_update is None:  # first call (also after a resume)
            k = -(-(step - self.start) // self.cfg.every)  # ceil
            self._next_update = self.start + k * self.cfg.every
        if step < min(self._next_update, self.end):
            return False  # not an update step; the end of the schedule always is one
        k = (step - self.start) // self.cfg.every + 1
        self._next_update = self.start + k * self.cfg.every
        self._reached_end = step >= self.end
        s = cubic_sparsity(step, self.start, self.end, self.cfg.target)
        scores = {
            n: block_scores(self._scored(n), self.blocks[n]).masked_fill(~self.block_masks[n], -1.0)
            for n in self.params
        }
        before = dict(self.block_masks)
        if self.cfg.scope == "layer":
            for n, sc in scores.items():
                self.block_masks[n] = self._keep(sc, s)
        else:
            # Global threshold on block scores: small tensors may end up far sparser than large.
            flat = torch.cat([sc.flatten() for sc in scores.values()])
            k = int(s * flat.numel())
            if k > 0:
                thr = flat.kthvalue(k).values
                for n, sc in scores.items():
                    self.block_masks[n] = sc > thr
        if self.cfg.reconstruct:
            # only where the mask changed: a resumed run recomputes the same mask and must not
            # re-fit weights that fine-tuning has moved since
            for n, m in self.input_moment.items():
                if not torch.equal(before[n], self.block_masks[n]):
                    p = self.params[n]
                    keep = self.mask(n).reshape(p.shape[0], -1)
                    fit = reconstruct_kept(p.detach().reshape(keep.shape), keep, m.to(p.device))
                    p.data.copy_(fit.reshape(p.shape))
        self.apply()
        return True

    @staticmethod
    def _keep(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
        k = int(round(sparsity * scores.numel()))
        keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
        if k > 0:
            keep[torch.argsort(scores.flatten(), stable=True)[:k]] = False
        return keep.reshape(scores.shape)

    def _scored(self, name: str) -> torch.Tensor:
        """What the blocks are ranked by: the pruned quantity, times its input's scale."""
        d = self.delta(name)
        if name not in self.input_scale:
            return d
        return d.detach().reshape(d.shape[0], -1).abs() * self.input_scale[name]

    def delta(self, name: str) -> torch.Tensor:
        """What is pruned: the weight, or its change from the reference."""
        p = self.params[name]
        return p if self.reference is None else p - self.reference[name]

    def masked(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """``w`` (the parameter or a function of it) with the pruned part removed."""
        if self.reference is None:
            return w * self.mask(name)
        ref = self.reference[name]
        return ref + (w - ref) * self.mask(name)

    @torch.no_grad()
    def apply(self) -> None:
        """Remove the pruned weights or changes (after each optimiser step and after loading)."""
        for n, p in self.params.items():
            if not bool(self.block_masks[n].all()):
                p.copy_(self.masked(n, p))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"mask.{n}": m.to(torch.uint8).cpu() for n, m in self.block_masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n in self.block_masks:
            self.block_masks[n] = state[f"mask.{n}"].bool().to(self.params[n].device)
        self.apply()
