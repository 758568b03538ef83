"""The streaming transducer: normalisation + encoder + predictor + joiner, and its loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from edgeasr.losses.amortization import amortization_loss, compute_loss, end_latency_loss
from edgeasr.losses.distill import lattice_kd_loss
from edgeasr.losses.rnnt import joint_logprobs, rnnt_loss_from_logprobs
from edgeasr.model.amortized import AmortizedEncoder, BranchConfig
from edgeasr.model.config import ModelConfig
from edgeasr.model.conformer import ConformerEncoder
from edgeasr.model.encoder import Encoder, EncoderState
from edgeasr.model.joiner import Joiner
from edgeasr.model.predictor import Predictor
from edgeasr.tokenizer import BLANK_ID


class Transducer(nn.Module):
    # Largest joiner output (in logits) materialised at once in training; see joint_logprobs.
    joint_max_elements: int = 1 << 24

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Global mean/variance normalisation lives in the model so every consumer (trainer,
        # decoder, exported runtime) applies the same statistics.
        self.register_buffer("feat_mean", torch.zeros(cfg.num_mel_bins))
        self.register_buffer("feat_std", torch.ones(cfg.num_mel_bins))
        self.encoder: Encoder | AmortizedEncoder | ConformerEncoder
        if cfg.encoder_type == "amortized":
            self.encoder = AmortizedEncoder(
                cfg.num_mel_bins,
                cfg.stack,
                cfg.encoder_dim,
                [BranchConfig(**b) for b in cfg.branches],
                cfg.arbitrator_hidden,
                cfg.dropout,
                cfg.device_mflops,
                cfg.arbitrator_memory,
                cfg.arbitrator_feedback,
                cfg.guard_backlog_frames,
                cfg.hard_backlog,
            )
        elif cfg.encoder_type == "conformer":
            self.encoder = ConformerEncoder(cfg)
        else:
            self.encoder = Encoder(cfg)
        # Routing weights and frame mask of the last training forward (amortized encoders),
        # read by the trainer for its per-epoch routing histogram.
        self.last_routing: tuple[torch.Tensor, torch.Tensor] | None = None
        self.predictor = Predictor(cfg)
        self.joiner = Joiner(cfg)
        self.ctc_head = nn.Linear(cfg.encoder_dim, cfg.vocab_size) if cfg.ctc_weight > 0 else None

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp_min(1e-5))

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.feat_mean) / self.feat_std

    def encode(
        self, feats: torch.Tensor, lens: torch.Tensor, state: EncoderState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Raw fbank (B, T, 80) → projected encoder output (B, T', J) ready for the joiner."""
        enc, enc_lens, state = self.encode_raw(feats, lens, state)
        return self.joiner.enc_proj(enc), enc_lens, state

    def encode_raw(
        self, feats: torch.Tensor, lens: torch.Tensor, state: EncoderState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Raw fbank (B, T, 80) → encoder output (B, T', D) before the joiner's projection: what
        both the joiner (after ``joiner.enc_proj``) and the CTC head read."""
        return self.encoder(self.normalize(feats), lens, state)

    def ctc_log_probs(self, enc_raw: torch.Tensor) -> torch.Tensor:
        """The CTC head's per-frame log-softmax (B, T', V) on :meth:`encode_raw` output, for
        rescoring the N-best (:mod:`edgeasr.search.rescore`)."""
        if self.ctc_head is None:
            raise ValueError("this model has no CTC head (trained with ctc_weight 0)")
        return torch.log_softmax(self.ctc_head(enc_raw).float(), -1)

    def decode_tokens(self, context: torch.Tensor) -> torch.Tensor:
        """Predictor on exactly ``context_size`` tokens per row → projected (N, J)."""
        return self.joiner.dec_proj(self.predictor(context, pad_left=False))[:, -1]

    def forward(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
        augment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        ctc_only: bool = False,
        teacher: Transducer | None = None,
        distill_weight: float = 0.0,
        distill_mask: torch.Tensor | None = None,
        speech_end_s: torch.Tensor | None = None,
        label_weight: float = 1.0,
    ) -> torch.Tensor:
        """Mean RNN-T loss per utterance for a padded batch.

        ``augment`` (SpecAugment in training) acts on normalised features, where a masked value
        of zero means "the average frame" rather than silence at some arbitrary level.
        ``ctc_only`` trains just the encoder through the CTC head: on templated voice-assistant
        text the predictor learns the label prior so fast that a transducer trained from scratch
        sits for thousands of steps emitting that prior regardless of the audio; a CTC warm-up
        gives the joiner an encoder that already carries acoustics.
        ``teacher`` adds ``distill_weight`` times the lattice distillation loss towards that
        model's outputs on the clean (unaugmented) features (:mod:`edgeasr.losses.distill`),
        averaged over the batch with the utterances outside ``distill_mask`` (B,) counted as 0.
        ``label_weight`` scales the RNN-T and CTC losses on ``targets`` (0: learn from the
        teacher alone; the reference still fixes the lattice the distillation is taken over).
        ``speech_end_s`` (B,): where speech ends in each utterance, for the end-of-speech latency
        loss of an amortized encoder (``latency_weight``), which cannot train without it.
        """
        x = self.normalize(feats)
        if augment is not None:
            x = augment(x, feat_lens)
        aux = x.new_zeros(())
        if isinstance(self.encoder, AmortizedEncoder):
            enc_raw, enc_lens, _, weights, lags = self.encoder.forward_routed(x, feat_lens)
            mask = torch.arange(weights.shape[1], device=x.device)[None] < enc_lens[:, None]
            self.last_routing = (weights.detach(), mask)
            cost = self.encoder.frame_cost_s().to(x.device)
            if self.cfg.compute_weight:
                aux = aux + self.cfg.compute_weight * compute_loss(weights, cost, mask)
            if self.cfg.amortization_weight:
                threshold = self.cfg.backlog_frames * self.encoder.frame_s
                am = amortization_loss(weights, lags, cost, threshold, mask)
                aux = aux + self.cfg.amortization_weight * am
            if self.cfg.latency_weight:
                if speech_end_s is None:
                    raise ValueError("latency_weight needs each utterance's end of speech")
                end = torch.ceil(speech_end_s.to(x.device) / self.encoder.frame_s - 1e-6) - 1
                end = torch.minimum(end.clamp(min=0).long(), enc_lens.to(x.device) - 1)
                lat = end_latency_loss(weights, lags, cost, end)
                aux = aux + self.cfg.latency_weight * lat
        else:
            enc_raw, enc_lens, _ = self.encoder(x, feat_lens)
        if ctc_only:
            return self._ctc_loss(enc_raw, enc_lens, targets, target_lens) + aux
        enc = self.joiner.enc_proj(enc_raw)
        dec = self.joiner.dec_proj(self.predictor(targets))  # (B, U+1, J)
        lattice = None
        if teacher is not None and distill_weight > 0:
            lattice = self._teacher_lattice(teacher, feats, feat_lens, targets, enc)
        lat = joint_logprobs(
            self.joiner,
            enc,
            dec,
            targets,
            self.cfg.vocab_size,
            BLANK_ID,
            self.joint_max_elements,
            teacher=lattice,
        )
        loss = (
            label_weight
            * rnnt_loss_from_logprobs(lat.blank, lat.label, enc_lens, target_lens).mean()
        )
        if lat.kl is not None:
            kd = lattice_kd_loss(lat.kl, enc_lens, target_lens)
            if distill_mask is not None:
                kd = torch.where(distill_mask, kd, 0.0)
            loss = loss + distill_weight * kd.mean()
        if self.ctc_head is not None:
            ctc = self._ctc_loss(enc_raw, enc_lens, targets, target_lens)
            loss = loss + label_weight * self.cfg.ctc_weight * ctc
        return loss + aux

    @staticmethod
    @torch.no_grad()
    def _teacher_lattice(
        teacher: Transducer,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        targets: torch.Tensor,
        enc: torch.Tensor,
    ) -> tuple[Joiner, torch.Tensor, torch.Tensor]:
        """The teacher's joiner and projected encoder/predictor outputs on the clean features."""
        t_enc, _, _ = teacher.encode(feats, feat_lens)
        if t_enc.shape[:2] != enc.shape[:2]:
            raise ValueError(
                f"teacher encoder output {tuple(t_enc.shape[:2])} does not match the student's "
                f"{tuple(enc.shape[:2])}: distillation needs the same frame rate"
            )
        return teacher.joiner, t_enc, teacher.joiner.dec_proj(teacher.predictor(targets))

    def _ctc_loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
    ) -> torch.Tensor:
        lp = self.ctc_log_probs(enc).transpose(0, 1)
        total = F.ctc_loss(
            lp, targets, enc_lens, target_lens, blank=BLANK_ID, reduction="sum", zero_infinity=True
        )
        return total / targets.shape[0]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
