"""Model configuration: a dataclass mirrored by the YAML files under ``configs/``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

ENCODER_TYPES = ("lstm", "amortized", "conformer")


@dataclass
class ModelConfig:
    """Shapes of the streaming transducer.

    The encoder stacks ``stack`` 10 ms frames (so its first layer runs at 40 ms), then a stack of
    unidirectional LSTMs; after layer ``reduce_after`` pairs of frames are concatenated once more
    (80 ms), which halves the cost of the upper layers, the joiner and the loss. Look-ahead is
    limited to the frames inside one stacking window.
    """

    vocab_size: int = 256
    num_mel_bins: int = 80
    stack: int = 4
    encoder_dim: int = 320
    lstm_hidden: int = 320
    num_layers: int = 4
    reduce_after: int = 1  # 0 disables the second time reduction
    dropout: float = 0.1
    predictor_dim: int = 256
    context_size: int = 2
    joiner_dim: int = 256
    # Weight of an auxiliary CTC loss on the encoder output (training only; the head is not used
    # at inference). It teaches the encoder alignments early and shortens the plateau where an
    # RNN-T from scratch only learns the label prior.
    ctc_weight: float = 0.0
    # "lstm" (above) or "amortized": the branched encoder of model/amortized.py. It routes
    # frames of ``stack`` fbank frames (no second reduction) of width ``encoder_dim`` through
    # ``branches`` (each {hidden, layers, rank}), simulating the backlog on a device of
    # ``device_mflops``; training adds ``compute_weight`` x expected cost (relative to the
    # dearest branch) and ``amortization_weight`` x the amortization loss, which charges the
    # saving of a cheaper branch when the backlog is under ``backlog_frames`` frames; both are
    # summed over an utterance's frames, like the RNN-T loss. ``latency_weight`` x the
    # end-of-speech latency loss charges, per utterance, the simulated delay of the frame that
    # holds the end of speech (its backlog plus its own cost, in frames of the dearest branch);
    # training then needs each utterance's end of speech (the trainer reads the supervisions).
    # ``arbitrator_memory`` > 0 gives the arbitrator a GRU state of that width over the frames
    # it has seen (its only context otherwise is the current frame and the backlog), and
    # ``arbitrator_feedback`` lets it read the encoder output of the frame before.
    # ``guard_backlog_frames`` >= 0 is the backlog guard (``AmortizedEncoder.guard_backlog_s``)
    # in training and, unless the caller overrides it, at inference: with more than that many
    # frames queued no branch slower than real time is taken. Negative: off. ``hard_backlog``
    # simulates the training backlog from the sampled hard choices (straight-through), so the
    # guard and the latency loss see the backlog the device will have.
    encoder_type: str = "lstm"
    branches: list[dict] = field(default_factory=list)
    arbitrator_hidden: int = 32
    arbitrator_memory: int = 0
    arbitrator_feedback: bool = False
    device_mflops: float = 650.0
    compute_weight: float = 0.0
    amortization_weight: float = 0.0
    backlog_frames: float = 1.0
    latency_weight: float = 0.0
    guard_backlog_frames: float = -1.0
    hard_backlog: bool = False
    # "conformer": the causal Conformer of model/conformer.py, ``num_layers`` layers of width
    # ``encoder_dim`` on frames of ``stack`` fbank frames (no second reduction), attending to
    # ``left_context`` earlier frames with ``attention_heads`` heads; feed-forward width
    # ``ff_dim`` (0: 4 x encoder_dim) and a causal depthwise convolution of ``conv_kernel``.
    attention_heads: int = 4
    left_context: int = 32
    ff_dim: int = 0
    conv_kernel: int = 8

    def __post_init__(self) -> None:
        if self.encoder_type not in ENCODER_TYPES:
            raise ValueError(
                f"unknown encoder_type {self.encoder_type!r} (one of {', '.join(ENCODER_TYPES)})"
            )
        if self.encoder_type == "conformer":
            if self.reduce_after:
                raise ValueError(
                    "a conformer encoder runs at the stacking rate: set reduce_after 0"
                )
            if self.encoder_dim % self.attention_heads:
                raise ValueError("encoder_dim must be a multiple of attention_heads")
            if self.left_context < 1 or self.conv_kernel < 2:
                raise ValueError("a conformer needs left_context >= 1 and conv_kernel >= 2")
        if self.encoder_type == "amortized":
            if not self.branches:
                raise ValueError("an amortized encoder needs at least one entry in branches")
            if self.reduce_after:
                raise ValueError("an amortized encoder routes stacked frames: set reduce_after 0")
            if self.arbitrator_memory < 0:
                raise ValueError("arbitrator_memory must be >= 0 (0: no memory)")
            if not math.isfinite(self.guard_backlog_frames):
                raise ValueError("guard_backlog_frames must be a number (negative: off)")

    @property
    def subsampling(self) -> int:
        return self.stack * (2 if self.reduce_after > 0 else 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)
