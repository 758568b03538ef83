"""Compression inside the trainer: masked + fake-quantised weights in the forward pass, the grid
regulariser in the loss, mask updates after each optimiser step.

The model's parameters stay the float "master" weights that AdamW updates; every forward pass
runs on ``effective_weights`` (mask, then quantise-dequantise with a straight-through gradient)
through ``torch.func.functional_call``, which also works for ``nn.LSTM``. What is evaluated,
saved and shipped is ``export``: a copy whose weights are those effective weights, so the dev WER
seen in training is the WER of the compressed model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from edgeasr.compress.quant import (
    CLIP_BELOW_BITS,
    channel_scale,
    code_entropy_bits,
    fake_quant,
    grid_distance,
    grid_penalty,
    packed_bits,
    quantize,
    rate_penalty,
)
from edgeasr.compress.sparsity import PruneConfig, Pruner, compressible_weights


@dataclass
class CompressionConfig:
    init_from: str = ""  # model package to fine-tune ("" trains from scratch)
    bits: int = 0  # fake-quantise compressible weights to this many bits (0: float)
    reg_weight: float = 0.0  # grid regulariser: pull per weight towards the grid (see grid_penalty)
    reg_ramp_frac: float = 0.5  # the regulariser rises linearly over this share of the steps
    # rate regulariser: pull per code unit towards zero (see rate_penalty), with the same ramp;
    # trades accuracy for a smaller packed file
    rate_weight: float = 0.0
    # a size budget instead of a fixed pull: every SCALE_EVERY steps the rate weight (starting
    # at rate_weight) grows or shrinks, by up to 2^RATE_STEP, as the estimated packed size (zero
    # maps plus entropy-coded codes, bits per compressed weight; Compressor.rate_bits),
    # extrapolated RATE_HORIZON moves along its slope, is above or below this many bits per
    # weight (0: a fixed weight with the grid regulariser's ramp)
    rate_target_bits: float = 0.0
    # Compress only weights whose name starts with this ("" = every compressible weight); e.g.
    # "encoder." for a sparsified-encoder baseline whose predictor and joiner stay dense.
    only: str = ""
    # Prune the change from init_from's weights instead of the weights: the model is then
    # base + a sparse difference (a neural diff; target = 1 - its density).
    delta: bool = False
    # A hash diff instead (HashedNets): each compressed matrix changes by sign * bucket[hash]
    # with this share of buckets per weight; seeds the hash (update.diff.hash_index). Only the
    # buckets train, with the learning rate times delta_lr_scale.
    hash_fraction: float = 0.0
    hash_seed: int = 0
    # A low-rank (LoRA) diff instead: each compressed matrix changes by B @ A, whose factors
    # hold this share of its weights (update.diff.lowrank_rank); only the factors train, with
    # the learning rate times delta_lr_scale (B starts at zero, so early steps move little).
    lora_fraction: float = 0.0
    delta_lr_scale: float = 4.0
    # A sparse diff trains the changed weights themselves at the learning rate times this.
    # Only a small share of the weights move, so at a full fine-tune's step size each moves too
    # little and the diff learns the new material far more slowly (measured in
    # configs/update-replay.yaml). 1.0 keeps the full fine-tune's step size.
    sparse_lr_scale: float = 1.0
    prune: PruneConfig = field(default_factory=PruneConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse values that would train wrongly; also for fields set after loading (CLI)."""
        # a zero or negative multiplier would silently freeze or reverse the diff's training
        for name in ("delta_lr_scale", "sparse_lr_scale"):
            v = getattr(self, name)
            if not math.isfinite(v) or v <= 0:
                raise ValueError(f"compression {name} must be a finite number > 0, got {v}")
        if not math.isfinite(self.rate_weight) or self.rate_weight < 0:
            raise ValueError(f"compression rate_weight must be >= 0, got {self.rate_weight}")
        if not math.isfinite(self.rate_target_bits) or self.rate_target_bits < 0:
            raise ValueError(f"rate_target_bits must be >= 0, got {self.rate_target_bits}")
        if self.rate_target_bits and not self.rate_weight:
            raise ValueError("rate_target_bits needs a starting rate_weight > 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prune"]["block"] = list(self.prune.block)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CompressionConfig:
        d = dict(d)
        prune = dict(d.pop("prune", {}) or {})
        if "block" in prune:
            prune["block"] = tuple(int(v) for v in prune["block"])
        known = set(CompressionConfig.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown compression keys: {sorted(unknown)}")
        return cls(**d, prune=PruneConfig(**prune))


class HashDelta(nn.Module):
    """The buckets of a hash diff: ``names`` of the (frozen) model change by
    ``sign * bucket[hash]`` (HashedNets), with ``fraction`` × weights buckets per matrix.

    The buckets are the trained parameters, so the optimiser sees each bucket's true gradient
    (the signed sum over its positions); the hash is the device's own
    (:func:`edgeasr.update.diff.hash_index`), so the diff that ships the buckets (method
    ``hash``, same fraction and seed) reproduces the trained model."""

    def __init__(self, model: nn.Module, names: list[str], fraction: float, seed: int) -> None:
        from edgeasr.update.diff import hash_index

        super().__init__()
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"hash_fraction must be in (0, 1), got {fraction}")
        params = dict(model.named_parameters())
        self.buckets = nn.ParameterList()
        self.index: list[tuple[torch.Tensor, torch.Tensor]] = []
        for n in names:
            k = max(1, round(fraction * params[n].numel()))
            idx, sign = hash_index(n, params[n].numel(), k, seed)
            self.index.append((torch.from_numpy(idx), torch.from_numpy(sign)))
            self.buckets.append(nn.Parameter(torch.zeros(k)))

    def delta(self, i: int, like: torch.Tensor) -> torch.Tensor:
        idx, sign = self.index[i]
        return (sign.to(like.device) * self.buckets[i][idx.to(like.device)]).view_as(like)


class LowRankDelta(nn.Module):
    """The factors of a low-rank diff: ``names`` of the (frozen) model change by ``B @ A``.

    ``A`` starts random and ``B`` at zero, as in LoRA, so training starts from the base model;
    the ranks come from :func:`edgeasr.update.diff.lowrank_rank`, so the diff that ships them
    (method ``lowrank``, same fraction) reproduces the trained model."""

    def __init__(self, model: nn.Module, names: list[str], fraction: float, seed: int) -> None:
        from edgeasr.update.diff import lowrank_rank

        super().__init__()
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"lora_fraction must be in (0, 1), got {fraction}")
        params = dict(model.named_parameters())
        gen = torch.Generator().manual_seed(seed)
        self.names = names
        self.a = nn.ParameterList()
        self.b = nn.ParameterList()
        for n in names:
            shape = params[n].shape
            rows, cols = shape[0], params[n][0].numel()
            r = lowrank_rank(tuple(shape), fraction)
            self.a.append(nn.Parameter(torch.randn(r, cols, generator=gen) / cols**0.5))
            self.b.append(nn.Parameter(torch.zeros(rows, r)))

    def delta(self, i: int, like: torch.Tensor) -> torch.Tensor:
        return (self.b[i] @ self.a[i]).view_as(like)


# Steps between two searches for the clipping points of QAT below 8 bits (quant.clipped_scale),
# and between two moves of the rate budget's controller.
SCALE_EVERY = 25
# The controller's largest move, in doublings (proportional in log space below that): the
# weights answer a stronger pull only over a hundred steps or so, and a faster controller keeps
# doubling meanwhile, overshoots and collapses weights the loss needs (a first try that could
# double every 25 steps had to be stopped within a hundred steps)
RATE_STEP = 0.25
# ... and it steers by where the estimate will be this many moves ahead along its latest
# slope, not where it is (a derivative term). The weights answer a change of the pull only
# after some hundred steps, so a controller that looks at the present estimate alone kept
# raising the pull until the budget was reached and then overshot: on the 30 h recipe down to
# 3.34 bits against a budget of 3.85 and 1,200 steps to recover (the seed-2 replicate of
# stop 31, README: Compression)
RATE_HORIZON = 4
# Where a budget's controller starts when no rate weight is given: on the small model a pull of
# 4e-6 per code unit takes int8 + 50% from 4.5 to 3.8 bits per weight in 200 steps, so 1e-6
# starts below what a 1/8 budget needs and the controller climbs from there
DEFAULT_RATE_WEIGHT = 1e-6


class Compressor:
    """Applies one ``CompressionConfig`` to one model over a run of ``total_steps``.

    Below 8 bits each row's scale is its least-squares clipping point, a search of some forty
    passes over the weights: several times the cost of a training step, while the point moves
    little in a few steps. So the forward pass uses scales cached every ``SCALE_EVERY`` steps
    (saved with the checkpoint, so a resumed run continues with the same ones), and ``export``
    searches afresh, so the shipped weights are exactly what ``quantize`` (and ``edgeasr pack``)
    makes of them.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: CompressionConfig,
        total_steps: int,
        input_scale: dict[str, torch.Tensor] | None = None,
        input_moment: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """``input_scale``: the inputs' RMS per weight (``compress.saliency.input_rms``), which
        activation-aware pruning (``prune.saliency: activation``) needs; ``input_moment``: their
        ``E[x x^T]`` (``compress.saliency.input_moments``), which ``prune.reconstruct`` needs."""
        if cfg.prune.target > 0 and cfg.prune.saliency == "activation" and not input_scale:
            raise ValueError("activation-aware pruning needs the inputs' statistics")
        self.cfg = cfg
        self.total_steps = total_steps
        diffs = [cfg.delta, cfg.hash_fraction > 0, cfg.lora_fraction > 0]
        params = dict(model.named_parameters())
        # a diff is the change of the weights that train: those frozen before it is made
        # (``train.train_only``) stay the base's, so it carries nothing for them
        self.names = [
            n
            for n in compressible_weights(model)
            if n.startswith(cfg.only) and (params[n].requires_grad or not any(diffs))
        ]
        if not self.names:
            trained = " among those that train" if any(diffs) else ""
            raise ValueError(f"no compressible weights start with {cfg.only!r}{trained}")
        if cfg.rate_weight and not cfg.bits:
            raise ValueError("rate_weight needs quantisation (bits): it pulls on integer codes")
        if any(diffs) and (cfg.bits or not cfg.init_from):
            raise ValueError("a diff run needs init_from and no quantisation")
        if sum(diffs) > 1 or ((cfg.hash_fraction or cfg.lora_fraction) and cfg.prune.target):
            raise ValueError("choose one diff: a pruned delta, a hash or a low-rank one")
        reference = {n: params[n].detach().clone() for n in self.names} if cfg.delta else None
        self.pruner = (
            Pruner(model, self.names, cfg.prune, total_steps, reference, input_scale, input_moment)
            if cfg.prune.target > 0
            else None
        )
        # a hash or low-rank diff is a module of its own whose parameters are the diff
        self.delta: HashDelta | LowRankDelta | None = None
        if cfg.hash_fraction:
            self.delta = HashDelta(model, self.names, cfg.hash_fraction, cfg.hash_seed)
        elif cfg.lora_fraction:
            self.delta = LowRankDelta(model, self.names, cfg.lora_fraction, cfg.hash_seed)
        if any(diffs):
            # W = W_base + d with only d trained: everything else stays the base's, so the
            # diff carries nothing but d
            train = set(self.names) if self.delta is None else set()
            for n, p in model.named_parameters():
                p.requires_grad_(n in train)

        self.scales: dict[str, torch.Tensor] = {}
        self.refresh_scales(model)
        # the rate regulariser's current weight; with a size budget, the controller moves it
        self.rate_scale = cfg.rate_weight
        self.last_rate_bits: float | None = None  # the controller's latest size estimate

    def refresh_scales(self, model: nn.Module) -> None:
        """Search the clipping points anew (only QAT below ``CLIP_BELOW_BITS`` caches them)."""
        if self.cfg.bits and self.cfg.bits < CLIP_BELOW_BITS:
            with torch.no_grad():
                self.scales = {
                    n: channel_scale(w, self.cfg.bits).reshape(-1)
                    for n, w in self._unquantised(model).items()
                }

    def rate_log(self) -> dict[str, float]:
        """The rate controller's weight and latest size estimate, for the training log (empty
        without a budget)."""
        if not self.cfg.rate_target_bits:
            return {}
        out = {"rate_weight": self.rate_scale}
        if self.last_rate_bits is not None:
            out["rate_bits"] = round(self.last_rate_bits, 4)
        return out

    @property
    def has_state(self) -> bool:
        """Whether a checkpoint must keep ``scale_state`` (cached clipping points, or the rate
        controller's weight) for a resumed run to continue the same way."""
        return bool(self.scales) or bool(self.cfg.rate_target_bits)

    def scale_state(self) -> dict[str, torch.Tensor]:
        out = {f"scale.{n}": s.detach().cpu().contiguous() for n, s in self.scales.items()}
        if self.cfg.rate_target_bits:
            out["rate.weight"] = torch.tensor([self.rate_scale], dtype=torch.float64)
            if self.last_rate_bits is not None:  # the slope's starting point
                out["rate.bits"] = torch.tensor([self.last_rate_bits], dtype=torch.float64)
        return out

    def load_scale_state(self, state: dict[str, torch.Tensor]) -> None:
        self.scales = {n: state[f"scale.{n}"].to(s.device) for n, s in self.scales.items()}
        if "rate.weight" in state:
            self.rate_scale = float(state["rate.weight"][0])
        if "rate.bits" in state:
            self.last_rate_bits = float(state["rate.bits"][0])

    def parameters(self) -> list[nn.Parameter]:
        """Trainable tensors the compressor owns (buckets, factors), for the optimiser."""
        return [] if self.delta is None else list(self.delta.parameters())

    def _unquantised(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The compressed weights before quantisation: masked, plus the diff."""
        params = dict(model.named_parameters())
        out: dict[str, torch.Tensor] = {}
        for i, n in enumerate(self.names):
            w = params[n]
            if self.pruner is not None:
                w = self.pruner.masked(n, w)
            if self.delta is not None:
                w = w + self.delta.delta(i, w)
            out[n] = w
        return out

    def effective_weights(self, model: nn.Module, fresh: bool = False) -> dict[str, torch.Tensor]:
        """What the forward pass runs on; ``fresh``: search the clipping points anew."""
        out = self._unquantised(model)
        if self.cfg.bits:
            for n, w in out.items():
                scale = None if fresh else self.scales.get(n)
                out[n] = fake_quant(w, self.cfg.bits, scale)
        return out

    def forward(self, model: nn.Module, *args, **kwargs):
        return functional_call(model, self.effective_weights(model), args, kwargs)

    def ramp(self, step: int) -> float:
        """The regularisers' share of their full weight at ``step`` (linear, then 1)."""
        return min(1.0, step / max(1, int(self.cfg.reg_ramp_frac * self.total_steps)))

    def reg_scale(self, step: int) -> float:
        return self.cfg.reg_weight * self.ramp(step)

    def penalty(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """Grid and rate regularisers over all compressed weights, each times its ramped weight
        (None: both off).

        Pruned weights sit at zero, a grid point and the rate penalty's minimum, so they add
        nothing to either.
        """
        grid = self.reg_scale(step)
        # a budget's controller sets the weight itself; a fixed weight rises with the ramp
        rate = self.rate_scale * (1.0 if self.cfg.rate_target_bits else self.ramp(step))
        if not self.cfg.bits or (grid <= 0 and rate <= 0):
            return None
        params = dict(model.named_parameters())
        total = torch.zeros((), device=next(iter(params.values())).device)
        for n in self.names:
            if grid > 0:
                total = total + grid * grid_penalty(params[n], self.cfg.bits, self.scales.get(n))
            if rate > 0:
                total = total + rate * rate_penalty(params[n], self.cfg.bits, self.scales.get(n))
        return total

    def schedule_done(self, steps_taken: int) -> bool:
        """Whether the pruning masks reached their target after ``steps_taken`` steps."""
        return self.pruner is None or steps_taken > self.pruner.end

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.pruner is not None and not self.pruner.update(step):
            self.pruner.apply()
        if step % SCALE_EVERY == 0:
            self.refresh_scales(model)
            if self.cfg.rate_target_bits:
                bits = self.rate_bits(model)
                ahead = bits
                if self.last_rate_bits is not None:
                    ahead += RATE_HORIZON * (bits - self.last_rate_bits)
                self.last_rate_bits = bits
                over = ahead / self.cfg.rate_target_bits - 1.0
                self.rate_scale *= 2.0 ** max(-RATE_STEP, min(RATE_STEP, 4.0 * over))

    @torch.no_grad()
    def export(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the effective (masked, quantised) weights."""
        out = copy.deepcopy(model)
        eff = self.effective_weights(model, fresh=True)
        for n, p in out.named_parameters():
            if n in eff:
                p.copy_(eff[n])
        return out

    @torch.no_grad()
    def _code_stats(self, model: nn.Module) -> list[tuple[int, int, float]]:
        """Per matrix: (weights, non-zero codes, entropy of the non-zero codes in bits)."""
        out = []
        for w in self.effective_weights(model, fresh=True).values():
            codes, _ = quantize(w, self.cfg.bits)
            out.append((codes.numel(), int((codes != 0).sum()), code_entropy_bits(codes)))
        return out

    def code_bits(self, model: nn.Module) -> float:
        """Entropy of the non-zero codes, bits per kept weight, each matrix with its own
        distribution (as the packed file codes them), averaged over the kept weights."""
        return _code_bits(self._code_stats(model))

    def rate_bits(self, model: nn.Module) -> float:
        """Estimated packed bits per compressed weight (``quant.packed_bits``: zero maps plus
        kept codes at their entropies). The packed file adds per-row scales, floats, the
        tokenizer and zstd's overhead: on the compression page's 50% int8 rows it is 4-5% larger
        than this estimate (scripts/probe_code_entropy.py --packed)."""
        return _rate_bits(self._code_stats(model))

    def summary(self, model: nn.Module) -> dict:
        """What the package records, so `edgeasr pack` knows the bit width and block shape;
        ``grid_distance``: how far the float weights were from the grid before rounding."""
        params = dict(model.named_parameters())
        stats = self._code_stats(model) if self.cfg.bits else None  # one pass for both sizes
        dist = (
            sum(grid_distance(params[n], self.cfg.bits) * params[n].numel() for n in self.names)
            / sum(params[n].numel() for n in self.names)
            if self.cfg.bits
            else None
        )
        return {
            "bits": self.cfg.bits,
            "grid_distance": dist,
            "code_bits": _code_bits(stats) if stats is not None else None,
            "rate_bits": _rate_bits(stats) if stats is not None else None,
            "rate_weight": self.rate_scale if self.cfg.rate_weight else None,
            "sparsity": self.pruner.sparsity() if self.pruner is not None else 0.0,
            "hash": (
                {"fraction": self.cfg.hash_fraction, "seed": self.cfg.hash_seed}
                if self.cfg.hash_fraction
                else None
            ),
            "lowrank": {"fraction": self.cfg.lora_fraction} if self.cfg.lora_fraction else None,
            "block": list(self.cfg.prune.block),
            "weights": self.names,
        }


def _code_bits(stats: list[tuple[int, int, float]]) -> float:
    """Bits per kept code over matrices given as ``Compressor._code_stats`` gives them."""
    kept = sum(k for _, k, _ in stats)
    return packed_bits(stats)[1] / kept if kept else 0.0


def _rate_bits(stats: list[tuple[int, int, float]]) -> float:
    """Estimated packed bits per compressed weight, zero maps and kept codes together."""
    total = sum(n for n, _, _ in stats)
    return sum(packed_bits(stats)) / total if total else 0.0


def compression_experiment(
    config: str | Path,
    init_from: str | Path,
    bits: int,
    sparsity: float,
    block: tuple[int, int] = (1, 1),
    reg_weight: float = 0.0,
):
    """The fine-tuning experiment of one compression setting (``configs/compress.yaml``)."""
    from edgeasr.train.config import load_experiment

    cfg = load_experiment(config)
    comp = cfg.train.compression
    comp.init_from = str(init_from)
    comp.bits = bits
    comp.reg_weight = reg_weight
    comp.prune.target = sparsity
    comp.prune.block = tuple(block)
    cfg.name = f"compress-b{bits}-s{round(100 * sparsity)}"
    if cfg.train.distill_weight and not cfg.train.distill_from:
        # the model being compressed (or updated) is the teacher of its compressed self
        cfg.train.distill_from = str(init_from)
    return cfg


DIFF_METHODS = ("sparse", "hash", "lowrank")


def diff_experiment(
    config: str | Path, base: str | Path, method: str, density: float, seed: int = 0
):
    """The fine-tuning experiment of one model update trained as a diff from ``base``:
    ``sparse`` prunes the change to ``density`` of each matrix's weights (cubic schedule),
    ``hash`` ties it into ``density`` × weights hashed buckets, ``lowrank`` factorises it into
    factors holding ``density`` of the weights; "full" (no diff) fine-tunes every weight."""
    if method == "full":
        cfg = compression_experiment(config, base, 0, 0.0)
        cfg.name = "update-full"
    elif method not in DIFF_METHODS or not 0.0 < density < 1.0:
        raise ValueError(
            f"need a method in {DIFF_METHODS} and 0 < density < 1, got {method} {density}"
        )
    else:
        cfg = compression_experiment(config, base, 0, 1.0 - density if method == "sparse" else 0.0)
        cfg.name = f"update-{method}-d{density:g}"
        comp = cfg.train.compression
        comp.delta = method == "sparse"
        comp.hash_fraction = density if method == "hash" else 0.0
        comp.lora_fraction = density if method == "lowrank" else 0.0
        comp.hash_seed = seed
    return cfg
