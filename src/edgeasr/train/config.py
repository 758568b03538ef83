"""Experiment configuration: YAML files under ``configs/`` mapped onto dataclasses."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from edgeasr.compress.training import CompressionConfig
from edgeasr.model.config import ModelConfig
from edgeasr.train.specaug import SpecAugmentConfig


@dataclass
class TrainConfig:
    epochs: int = 10
    max_frames: int = 6400  # padded 10 ms frames per batch (e.g. 16 × 4 s)
    lr: float = 2e-3
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    seed: int = 1
    num_threads: int = 2
    checkpoint_every: int = 200  # steps between resumable checkpoints
    ctc_warmup_steps: int = 0  # first steps train the encoder with CTC only (see Transducer)
    max_steps: int = 0  # stop early after this many steps (0: no limit); for smoke tests
    dev_max_utts: int = 400
    # Dev evaluation (and the choice of the best package) every N epochs and after the last;
    # on an accelerator an epoch of the 10 h corpus takes seconds, less than its dev decoding.
    eval_every: int = 1
    # Train on the first N training utterances only (0: all). Fine-tuning runs (compression)
    # use a subset so that their schedules (LR, pruning) still span whole epochs.
    max_train_utts: int = 0
    # Wall-clock budget of the whole run in seconds (0: none), for fixed-time runs on a lent
    # accelerator whose speed is not known beforehand: the cosine decay then follows elapsed
    # time (whichever of steps and time is further along), so the LR has decayed when the budget
    # is spent, and training stops there after a last dev evaluation.
    time_budget_s: float = 0.0
    # A model package to start from wherever names and shapes fit (matrices factorised by SVD
    # where this model is low-rank), with its tokenizer; the rest starts fresh. This is how a
    # branched encoder or a low-rank baseline starts from a trained single encoder.
    init_weights_from: str = ""
    # Fresh replay for fine-tunes (model updates): every epoch also trains on ``replay_utts``
    # utterances drawn anew (seeded by epoch) from the train split of the corpus ``replay_corpus``,
    # so the model rehearses a different sample of what it knew each epoch instead of the same
    # few hundred utterances six times over.
    replay_corpus: str = ""
    replay_utts: int = 0
    # Distillation (edgeasr.losses.distill): add distill_weight × the lattice KL towards the
    # model package distill_from, same tokenizer and frame rate. A model update
    # (compress.training.diff_experiment) distils from the model it updates unless told otherwise,
    # so that it keeps that model's behaviour where it distils. The KL needs the reference
    # transcript's lattice, so this distils on labelled data; distilling on unlabelled audio
    # would take the teacher's own 1-best as the reference (not built).
    distill_from: str = ""
    distill_weight: float = 0.0
    # Which utterances distil: "all", or "replay": only the fresh replay sample (replay_utts),
    # so that new material is learnt from its labels alone while the rehearsed old data keeps
    # the teacher's behaviour.
    distill_on: str = "all"
    # Weight of the RNN-T and CTC losses on the reference transcripts. Below 1 the teacher's
    # distribution counts for more than the labels; at 0 (with distill_weight > 0) the student
    # only learns to be its teacher, which keeps a compression fine-tune from refitting a small
    # sample of the teacher's training data. Measured on the one-shot int8 + 50% recipe, it did
    # not beat the labels (15.07% against 14.98%; README, Compression): fresh audio did.
    label_weight: float = 1.0
    # Elastic weight consolidation (edgeasr.losses.ewc): add ewc_weight / 2 · Σ F (w − w0)² with
    # F the diagonal Fisher of the starting model on ewc_utts utterances of the replay corpus's
    # train split (the data the update must not forget), normalised to mean 1.
    ewc_weight: float = 0.0
    ewc_utts: int = 200
    # A model package to anchor EWC at (its weights as w0, its Fisher) instead of the starting
    # model: in a chain of updates, anchoring every one at the original model keeps the drift
    # from adding up update after update. Empty: the starting model.
    ewc_anchor: str = ""
    # Amortized encoders: Gumbel-softmax temperature, annealed geometrically from start (first
    # epoch) to end (last epoch) so that routing ends effectively binary.
    temperature_start: float = 1.0
    temperature_end: float = 0.05
    # Train one branch of an amortized encoder on its own: every frame is routed to branch
    # ``force_branch`` (-1: the arbitrator routes), in training and in dev evaluation, so a new
    # lean branch can learn to serve an already trained predictor and joiner (with
    # ``train_only``) before the arbitrator sends it any frames.
    force_branch: int = -1
    # Parameter-name prefixes that train (empty: all); every other parameter is frozen. E.g.
    # ["encoder.branches.1.", "encoder.arbitrator."] keeps a trained full branch, predictor and
    # joiner exactly as they were while a lean branch and the arbitrator learn around them.
    train_only: list[str] = field(default_factory=list)
    # Ship the uniform mean of the trained weights over every step of the last N epochs
    # (edgeasr.train.averaging) instead of the weights after the last step; 0: off. Dev
    # evaluations inside those epochs score the running mean, so the best package is chosen
    # among the means (and the weights before them).
    average_last_epochs: int = 0
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)

    @property
    def uses_replay_corpus(self) -> bool:
        """Whether the run reads ``replay_corpus``: to rehearse it, or for EWC's Fisher."""
        return bool(self.replay_utts or self.ewc_weight)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on inconsistent settings; run again after fields are set later."""
        if not (math.isfinite(self.distill_weight) and self.distill_weight >= 0.0):
            raise ValueError(
                f"distill_weight must be a finite number >= 0, got {self.distill_weight}"
            )
        if not (math.isfinite(self.label_weight) and self.label_weight >= 0.0):
            raise ValueError(f"label_weight must be a finite number >= 0, got {self.label_weight}")
        if not self.label_weight and not self.distill_weight:
            raise ValueError("label_weight 0 needs distill_weight > 0: nothing would be learnt")
        if not self.label_weight and self.distill_on != "all":
            raise ValueError(
                "label_weight 0 needs distill_on: all, or some utterances teach nothing"
            )
        if self.distill_on not in ("all", "replay"):
            raise ValueError(f"distill_on must be 'all' or 'replay', got {self.distill_on!r}")
        if self.distill_weight and self.distill_on == "replay" and not self.replay_utts:
            raise ValueError("distill_on: replay needs a replay sample (replay_utts > 0)")
        if not (math.isfinite(self.ewc_weight) and self.ewc_weight >= 0.0):
            raise ValueError(f"ewc_weight must be a finite number >= 0, got {self.ewc_weight}")
        if self.ewc_weight and self.ewc_utts < 1:
            raise ValueError(f"ewc_utts must be at least 1 with ewc_weight, got {self.ewc_utts}")
        if self.force_branch < -1:
            raise ValueError(
                f"force_branch must be -1 (none) or a branch index, not {self.force_branch}"
            )
        if not 0 <= self.average_last_epochs <= self.epochs:
            raise ValueError(
                f"average_last_epochs must be between 0 and epochs ({self.epochs}), "
                f"got {self.average_last_epochs}"
            )
        if self.average_last_epochs and self.time_budget_s:
            raise ValueError(
                "average_last_epochs needs a fixed number of epochs; with time_budget_s the "
                "last epochs are not known beforehand"
            )
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")


@dataclass
class ExperimentConfig:
    name: str
    model: ModelConfig
    train: TrainConfig
    tokenizer_vocab: int = 256

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "tokenizer_vocab": self.tokenizer_vocab,
            "model": self.model.to_dict(),
            "train": {**asdict(self.train), "compression": self.train.compression.to_dict()},
        }


def _dataclass_from(cls, d: dict):
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
    return cls(**d)


def experiment_from_dict(d: dict) -> ExperimentConfig:
    train = dict(d.get("train", {}))
    spec = _dataclass_from(SpecAugmentConfig, train.pop("spec_augment", {}) or {})
    comp = CompressionConfig.from_dict(train.pop("compression", {}) or {})
    tcfg = _dataclass_from(TrainConfig, train)
    tcfg.spec_augment = spec
    tcfg.compression = comp
    vocab = int(d.get("tokenizer_vocab", 256))
    mcfg = ModelConfig.from_dict({**d.get("model", {}), "vocab_size": vocab})
    return ExperimentConfig(
        name=d.get("name", "experiment"), model=mcfg, train=tcfg, tokenizer_vocab=vocab
    )


def load_experiment(path: str | Path) -> ExperimentConfig:
    return experiment_from_dict(yaml.safe_load(Path(path).read_text()))
