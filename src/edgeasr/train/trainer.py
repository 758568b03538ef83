"""Transducer trainer: single process or ``torchrun`` DDP (gloo on CPU, NCCL on GPU).

A run directory records everything needed to reproduce or resume it::

    run/config.yaml  run/git_commit  run/tokenizer.model  run/metrics.jsonl
    run/ckpt/last.safetensors  run/ckpt/last.optim.safetensors  run/ckpt/last.json
    run/best/  (a model package: the checkpoint with the lowest dev WER)

Batches depend only on (seed, epoch), so resuming after an interruption replays exactly the batches
that were not yet trained on.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from edgeasr.compress.saliency import (
    calibration_batches,
    input_moments,
    input_rms,
    rms_from_moments,
)
from edgeasr.compress.sparsity import compressible_weights
from edgeasr.compress.training import Compressor
from edgeasr.decode import evaluate_cache
from edgeasr.losses.ewc import EWCPenalty, diagonal_fisher
from edgeasr.model.amortized import AmortizedEncoder, start_weights, transplant
from edgeasr.model.checkpoint import (
    atomic_write_bytes,
    load_optimizer,
    load_package,
    save_optimizer,
    save_package,
    save_weights,
    set_decoding_defaults,
)
from edgeasr.model.cost import speech_ends
from edgeasr.model.transducer import Transducer
from edgeasr.tokenizer import Tokenizer, train_tokenizer
from edgeasr.train.averaging import WeightAverage
from edgeasr.train.config import ExperimentConfig
from edgeasr.train.data import (
    FeatureCache,
    MixedCache,
    cuts_path,
    iterate_batches,
    make_batches,
)
from edgeasr.train.specaug import SpecAugment

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def lr_factor(
    step: int, warmup: int, total: int, min_ratio: float, time_progress: float = 0.0
) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the peak.

    ``time_progress`` (the spent fraction of a wall-clock budget) moves the decay on when time,
    rather than the step count, will end the run.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    progress = min(1.0, progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def temperature_at(
    epoch: int, epochs: int, start: float, end: float, time_progress: float = 0.0
) -> float:
    """Geometric annealing from ``start`` at the first epoch to ``end`` at the last.

    ``time_progress`` (the spent fraction of a wall-clock budget) moves it on when time will
    end the run before the last epoch, so routing still ends binary.
    """
    progress = 1.0 if epochs <= 1 else epoch / (epochs - 1)
    progress = min(1.0, max(progress, time_progress))
    return start * (end / start) ** progress


class RoutingStats:
    """Per-epoch statistics of an amortized encoder's routing over valid training frames:
    share of frames per branch (soft weights and hard argmax) and a 10-bin histogram of the
    weight given to branch 0, which shows the choices becoming binary as the temperature falls."""

    def __init__(self, num_branches: int) -> None:
        self.soft = torch.zeros(num_branches, dtype=torch.float64)
        self.hard = torch.zeros(num_branches, dtype=torch.float64)
        self.hist = torch.zeros(10, dtype=torch.float64)

    def add(self, weights: torch.Tensor, mask: torch.Tensor) -> None:
        w = weights[mask].double().cpu()  # (N, K)
        self.soft += w.sum(0)
        self.hard += torch.bincount(w.argmax(-1), minlength=w.shape[1]).double()
        self.hist += torch.histc(w[:, 0], bins=10, min=0.0, max=1.0).double()

    def summary(self) -> dict:
        n = max(1.0, float(self.hard.sum()))
        return {
            "soft_share": [round(float(v) / n, 4) for v in self.soft],
            "hard_share": [round(float(v) / n, 4) for v in self.hard],
            "branch0_weight_hist": [round(float(v) / n, 4) for v in self.hist],
        }


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the heap instead of returning it to the kernel.

    By default glibc serves big allocations (the RNN-T loss's joint tensors, tens of MB) with
    mmap and unmaps them on free, so every training step faults in and zeroes them again: on our
    2-core machines half of training's CPU time went to the kernel. Returns False where mallopt
    is unavailable (not glibc), which only costs speed.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok &= libc.mallopt(m_trim_threshold, 1 << 30) == 1
        ok &= libc.mallopt(m_top_pad, 256 << 20) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:
        return "unknown"


class Trainer:
    def __init__(self, cfg: ExperimentConfig, corpus_dir: Path, run_dir: Path) -> None:
        self.cfg = cfg
        self.corpus_dir = Path(corpus_dir)
        self.run_dir = Path(run_dir)
        self.dist = init_distributed()
        self.device = torch.device(
            f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        )
        torch.set_num_threads(max(1, cfg.train.num_threads // self.dist.world))
        keep_freed_memory()
        self.ckpt_dir = self.run_dir / "ckpt"
        self._t0 = time.time()  # training clock; a resumed run continues it from the checkpoint

    # -- set-up ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        tc = self.cfg.train
        if tc.uses_replay_corpus and not (
            tc.replay_corpus and cuts_path(Path(tc.replay_corpus), "train").exists()
        ):
            # before anything is written: a bad replay corpus must not leave a half-made run
            raise ValueError(
                f"replay_utts or ewc_weight is set but replay_corpus {tc.replay_corpus!r} "
                "has no train split"
            )
        cache_dir = self.corpus_dir / "feats"
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict()))
            (self.run_dir / "git_commit").write_text(_git_commit() + "\n")
            FeatureCache.build(cuts_path(self.corpus_dir, "train"), cache_dir)
            FeatureCache.build(cuts_path(self.corpus_dir, "dev"), cache_dir)
        self._barrier()
        self.train_set = FeatureCache.load(cache_dir, "train")
        if self.cfg.train.max_train_utts:
            self.train_set.utts = self.train_set.utts[: self.cfg.train.max_train_utts]
        self.dev_set = FeatureCache.load(cache_dir, "dev")
        self.replay_set = self._load_replay()
        self.speech_end: dict[str, float] = {}
        if self.cfg.model.latency_weight:  # the end-of-speech latency loss needs them
            for corpus in (self.corpus_dir, tc.replay_corpus):
                if corpus:
                    self.speech_end |= speech_ends(cuts_path(Path(corpus), "train"))
        tok_file = self.run_dir / "tokenizer.model"
        init_from = self.cfg.train.compression.init_from
        start_from = self.cfg.train.init_weights_from
        if init_from and start_from:
            raise ValueError("set either compression.init_from or init_weights_from, not both")
        self.base_decoding: dict = {}
        source = None
        if start_from:
            source, source_tok, _ = load_package(start_from)
            if self.dist.main and not tok_file.exists():
                source_tok.save(tok_file)
        if init_from:
            # Fine-tuning (e.g. compression of a trained model): its weights, vocabulary and
            # feature statistics, never a retrained tokenizer whose ids would not match.
            base, base_tok, base_manifest = load_package(init_from)
            # tuned decoding settings carry over to the fine-tuned model
            self.base_decoding = base_manifest.get("decoding", {})
            if self.dist.main and not tok_file.exists():
                base_tok.save(tok_file)
            self.cfg.model = base.cfg
        elif self.dist.main and not tok_file.exists():
            texts = [u.text for u in self.train_set.utts]
            train_tokenizer(texts, self.cfg.tokenizer_vocab).save(tok_file)
        self._barrier()
        self.tokenizer = Tokenizer.load(tok_file)
        self.cfg.model.vocab_size = self.tokenizer.vocab_size
        torch.manual_seed(self.cfg.train.seed)
        if init_from:
            self.model = base.train()
        else:
            self.model = Transducer(self.cfg.model)
            mean, std = self.train_set.mean_std()
            self.model.set_normalization(torch.from_numpy(mean), torch.from_numpy(std))
            if source is not None:
                report = transplant(self.model, start_weights(self.model, source))
                log.info(
                    "started from %s: %d tensors copied, %d factorised, fresh: %s",
                    start_from,
                    len(report["copied"]),
                    len(report["factorized"]),
                    ", ".join(report["fresh"]) or "none",
                )
        self.model.to(self.device)
        self._restrict_training()
        self.teacher = self._load_teacher()
        self.ewc = self._ewc_penalty()
        self.compressor: Compressor | None = None
        self.average: WeightAverage | None = None  # made in fit(), after the compressor
        self.opt = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.cfg.train.lr,
            weight_decay=self.cfg.train.weight_decay,
        )
        self.ddp = (
            torch.nn.parallel.DistributedDataParallel(
                # the CTC warm-up leaves predictor and joiner out of the graph
                self.model,
                find_unused_parameters=self.cfg.train.ctc_warmup_steps > 0,
            )
            if self.dist.world > 1
            else self.model
        )
        self.gen = torch.Generator().manual_seed(self.cfg.train.seed + 7919 * self.dist.rank)
        self.specaug = SpecAugment(self.cfg.train.spec_augment, self.gen)

    def _restrict_training(self) -> None:
        """Apply ``train.force_branch`` and ``train.train_only`` (see :class:`TrainConfig`)."""
        tc, enc = self.cfg.train, self.model.encoder
        if tc.force_branch >= 0:
            if not isinstance(enc, AmortizedEncoder) or tc.force_branch >= enc.num_branches:
                raise ValueError(f"force_branch {tc.force_branch}: the encoder has no such branch")
            enc.forced_branch = tc.force_branch
        if not tc.train_only:
            return
        names = [n for n, _ in self.model.named_parameters()]
        for prefix in tc.train_only:
            if not any(n.startswith(prefix) for n in names):
                raise ValueError(f"train_only: no parameter starts with {prefix!r}")
        for name, p in self.model.named_parameters():
            p.requires_grad_(any(name.startswith(prefix) for prefix in tc.train_only))
        log.info(
            "training %d of %d parameters (%s)",
            sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            sum(p.numel() for p in self.model.parameters()),
            ", ".join(tc.train_only),
        )

    def _load_teacher(self) -> Transducer | None:
        """The frozen distillation teacher (``train.distill_from``), or None."""
        tc = self.cfg.train
        if not tc.distill_weight:
            return None
        if not tc.distill_from:
            raise ValueError("distill_weight is set but distill_from names no model package")
        teacher, teacher_tok, _ = load_package(tc.distill_from)
        if teacher_tok.model_proto != self.tokenizer.model_proto:
            raise ValueError(
                f"distillation teacher {tc.distill_from} has another tokenizer: its token ids "
                "would not mean the student's"
            )
        teacher.eval().requires_grad_(False)
        return teacher.to(self.device)

    def _ewc_penalty(self) -> EWCPenalty | None:
        """EWC anchored at the starting model (or at ``ewc_anchor``), its Fisher from
        ``ewc_utts`` replay-corpus utterances (a fixed, seeded sample, so a resumed run gets the
        same penalty)."""
        tc = self.cfg.train
        if not tc.ewc_weight:
            return None
        anchor = self.model
        if tc.ewc_anchor:
            anchor, anchor_tok, _ = load_package(tc.ewc_anchor)
            if anchor_tok.model_proto != self.tokenizer.model_proto:
                raise ValueError(f"EWC anchor {tc.ewc_anchor} has another tokenizer")
            anchor.to(self.device)
        assert self.replay_set is not None  # _load_replay loads it for EWC too
        rng = random.Random(f"edgeasr:{tc.seed}:ewc")
        utts = rng.sample(self.replay_set.utts, min(tc.ewc_utts, len(self.replay_set.utts)))
        sample = MixedCache([(self.replay_set, utts)])
        batches = make_batches(sample.utts, tc.max_frames // 4, tc.seed, 0)

        def loss(model: torch.nn.Module, b) -> torch.Tensor:
            return model(*(x.to(self.device) for x in b))

        data = (
            (b.feats, b.feat_lens, b.targets, b.target_lens)
            for _, b in iterate_batches(sample, batches, self._encode_text)
        )
        fisher = diagonal_fisher(anchor, tqdm(data, total=len(batches), desc="EWC Fisher"), loss)
        log.info("EWC: Fisher from %d replay utterances in %d batches", len(utts), len(batches))
        return EWCPenalty(anchor, fisher, tc.ewc_weight)

    def _barrier(self) -> None:
        if self.dist.world > 1:
            dist.barrier()

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    # -- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self, epoch: int, batch: int, step: int, best_wer: float) -> None:
        if not self.dist.main:
            return
        save_weights(self.model, self.ckpt_dir / "last.safetensors")
        states = self._compressor_state()
        if self.average is not None:
            states["average"] = self.average.state_dict()
        for kind, state in states.items():
            tmp = self.ckpt_dir / f"last.{kind}.tmp"
            save_file(state, str(tmp))
            os.replace(tmp, self.ckpt_dir / f"last.{kind}.safetensors")
        opt_extra = save_optimizer(self.opt, self.ckpt_dir / "last.optim.safetensors")
        state = {
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "best_wer": best_wer,
            "elapsed_s": round(self._elapsed(), 1),
            "optimizer": opt_extra,
            "generator": self.gen.get_state().tolist(),
        }
        atomic_write_bytes(self.ckpt_dir / "last.json", json.dumps(state).encode())

    def _compressor_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """What a checkpoint needs beyond the weights: pruning masks, diff parameters, the
        cached clipping scales of QAT below 8 bits, the rate controller's weight."""
        c = self.compressor
        out = {}
        if c is not None and c.pruner is not None:
            out["masks"] = c.pruner.state_dict()
        if c is not None and c.delta is not None:
            out["delta"] = {k: v.detach().contiguous() for k, v in c.delta.state_dict().items()}
        if c is not None and c.has_state:
            out["scales"] = c.scale_state()
        return out

    def _maybe_resume(self) -> tuple[int, int, int, float]:
        state_file = self.ckpt_dir / "last.json"
        if not state_file.exists():
            return 0, 0, 0, float("inf")
        state = json.loads(state_file.read_text())
        self.model.load_state_dict(load_file(str(self.ckpt_dir / "last.safetensors")))
        load_optimizer(self.opt, self.ckpt_dir / "last.optim.safetensors", state["optimizer"])
        self.gen.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self._t0 = time.time() - state.get("elapsed_s", 0.0)
        if self.compressor is not None and self.compressor.pruner is not None:
            self.compressor.pruner.load_state_dict(
                load_file(str(self.ckpt_dir / "last.masks.safetensors"))
            )
        if self.compressor is not None and self.compressor.delta is not None:
            self.compressor.delta.load_state_dict(
                load_file(str(self.ckpt_dir / "last.delta.safetensors"))
            )
        if self.compressor is not None and self.compressor.has_state:
            self.compressor.load_scale_state(
                load_file(str(self.ckpt_dir / "last.scales.safetensors"))
            )
        if self.average is not None:
            avg_file = self.ckpt_dir / "last.average.safetensors"
            if avg_file.exists():
                self.average.load_state_dict(load_file(str(avg_file)))
        log.info(
            "resuming at epoch %d batch %d (step %d)", state["epoch"], state["batch"], state["step"]
        )
        return state["epoch"], state["batch"], state["step"], state["best_wer"]

    def _load_replay(self) -> FeatureCache | None:
        """The corpus whose train split a fine-tune rehearses afresh each epoch (and EWC's
        Fisher comes from), if configured."""
        tc = self.cfg.train
        if not tc.uses_replay_corpus:
            return None
        cuts = cuts_path(Path(tc.replay_corpus), "train")  # checked in _prepare
        cache_dir = Path(tc.replay_corpus) / "feats"
        if self.dist.main:
            FeatureCache.build(cuts, cache_dir)
        self._barrier()
        return FeatureCache.load(cache_dir, "train")

    def _epoch_set(self, epoch: int) -> FeatureCache | MixedCache:
        """What epoch ``epoch`` trains on: the train split, plus a replay sample drawn for this
        epoch alone (the same one again after a resume: it depends only on seed and epoch)."""
        if self.replay_set is None or not self.cfg.train.replay_utts:
            return self.train_set
        rng = random.Random(f"edgeasr:{self.cfg.train.seed}:replay:{epoch}")
        n = min(self.cfg.train.replay_utts, len(self.replay_set.utts))
        pick = rng.sample(self.replay_set.utts, n)
        return MixedCache([(self.train_set, self.train_set.utts), (self.replay_set, pick)])

    def _speech_end_s(self, batch) -> torch.Tensor | None:
        """Where speech ends in each utterance of ``batch`` (seconds), when a loss needs it."""
        if not self.speech_end:
            return None
        return torch.tensor([self.speech_end[u.id] for u in batch.utts])

    def _distill_mask(self, epoch_set: FeatureCache | MixedCache, batch) -> torch.Tensor | None:
        """Which utterances of ``batch`` distil (None: all of them)."""
        if self.teacher is None or self.cfg.train.distill_on == "all":
            return None
        # distill_on == "replay" (config ensures a replay sample): part 1 of the epoch's set
        assert isinstance(epoch_set, MixedCache)
        return torch.tensor([epoch_set.part(u) == 1 for u in batch.utts], device=self.device)

    def _elapsed(self) -> float:
        return time.time() - self._t0

    def _time_progress(self) -> float:
        """Spent fraction of the wall-clock budget (0 without one)."""
        budget = self.cfg.train.time_budget_s
        return self._elapsed() / budget if budget else 0.0

    def _schedule_step(self, step: int, total_steps: int) -> int:
        """The step compression schedules (pruning, regulariser ramp) are at: they follow the
        clock like the LR, whichever of steps and time is further along."""
        return max(step, int(self._time_progress() * total_steps))

    def _out_of_time(self) -> bool:
        budget = self.cfg.train.time_budget_s
        return budget > 0 and self._elapsed() >= budget

    def _log_metrics(self, record: dict) -> None:
        if self.dist.main:
            with (self.run_dir / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _input_statistics(self) -> dict[str, dict[str, torch.Tensor] | None]:
        """What pruning needs to know of the weights' inputs (``Compressor``'s keyword
        arguments): their RMS for activation-aware scores, their second moments to reconstruct
        the kept weights; from evenly spaced training utterances, one per forward pass, through
        the model as it is before any compression step (so a resumed run computes the same)."""
        prune = self.cfg.train.compression.prune
        stats: dict[str, dict[str, torch.Tensor] | None] = {
            "input_scale": None,
            "input_moment": None,
        }
        if prune.target <= 0 or (prune.saliency != "activation" and not prune.reconstruct):
            return stats
        batches = calibration_batches(
            self.train_set, prune.calibration_utts, self._encode_text, self.device
        )
        names = compressible_weights(self.model)
        if prune.reconstruct:
            moments = input_moments(self.model, names, batches, full=True)
            stats["input_moment"] = moments
            rms = rms_from_moments(moments)
        else:
            rms = input_rms(self.model, names, batches)
        if prune.saliency == "activation":
            stats["input_scale"] = rms
        return stats

    def _shipped_model(self) -> Transducer:
        """The model as it will ship: with compression, its masked and quantised weights; with
        weight averaging, those of the running average (a copy: training goes on from the
        trained weights)."""
        with self._averaged() as averaged:
            if self.compressor is not None:
                return self.compressor.export(self.model)
            return copy.deepcopy(self.model) if averaged else self.model

    @contextmanager
    def _averaged(self) -> Iterator[bool]:
        """The model holds the running weight average inside the block, if there is one yet
        (yields whether it does), and its trained weights again after it."""
        if self.average is None or not self.average.count:
            yield False
            return
        with self.average.swapped_in():
            yield True

    def _make_average(self) -> WeightAverage | None:
        """The running mean of the trained tensors (``train.average_last_epochs``): the model's
        parameters that train and a compressor's own (buckets, factors)."""
        if not self.cfg.train.average_last_epochs:
            return None
        named = {f"model.{n}": p for n, p in self.model.named_parameters() if p.requires_grad}
        if self.compressor is not None:
            named |= {f"compressor.{i}": p for i, p in enumerate(self.compressor.parameters())}
        return WeightAverage(named)

    # -- main loop ------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train to the configured number of epochs; returns the best model package dir."""
        # fields set after loading (the CLI's --epochs, --max-steps) are checked again, before
        # anything is written: e.g. fewer epochs than average_last_epochs
        self.cfg.train.validate()
        self._prepare()
        tc = self.cfg.train
        n_batches = len(make_batches(self._epoch_set(0).utts, tc.max_frames, tc.seed, 0))
        per_rank = n_batches // self.dist.world
        total_steps = per_rank * tc.epochs
        comp = tc.compression
        if comp.bits or comp.prune.target or comp.hash_fraction or comp.lora_fraction:
            if self.dist.world > 1:
                raise ValueError("compression training runs in a single process")
            self.compressor = Compressor(
                self.model, tc.compression, total_steps, **self._input_statistics()
            )
            extra = self.compressor.parameters()
            if extra:
                self.opt.add_param_group({"params": extra, "lr_scale": comp.delta_lr_scale})
            if comp.delta:
                # a sparse diff trains the model's own (masked) weights: everything else is
                # frozen, so the model's group is the diff
                self.opt.param_groups[0]["lr_scale"] = comp.sparse_lr_scale
        self.average = self._make_average()
        average_from = tc.epochs - tc.average_last_epochs  # first epoch whose steps are averaged
        self._t0 = time.time()
        start_epoch, start_batch, step, best_wer = self._maybe_resume()
        for epoch in range(start_epoch, tc.epochs):
            epoch_set = self._epoch_set(epoch)
            batches = make_batches(epoch_set.utts, tc.max_frames, tc.seed, epoch)
            batches = batches[self.dist.rank :: self.dist.world][:per_rank]
            self.ddp.train()
            routing = None
            if isinstance(self.model.encoder, AmortizedEncoder):
                self.model.encoder.temperature = temperature_at(
                    epoch, tc.epochs, tc.temperature_start, tc.temperature_end
                )
                routing = RoutingStats(self.model.encoder.num_branches)
            bar = tqdm(
                total=len(batches),
                initial=start_batch,
                desc=f"epoch {epoch + 1}/{tc.epochs}",
                disable=not self.dist.main,
                unit="batch",
            )
            running = []
            for bi, batch in iterate_batches(epoch_set, batches, self._encode_text, start_batch):
                if routing is not None and tc.time_budget_s:
                    self.model.encoder.temperature = temperature_at(
                        epoch,
                        tc.epochs,
                        tc.temperature_start,
                        tc.temperature_end,
                        self._time_progress(),
                    )
                factor = lr_factor(
                    step, tc.warmup_steps, total_steps, tc.min_lr_ratio, self._time_progress()
                )
                sched = self._schedule_step(step, total_steps)
                for g in self.opt.param_groups:
                    g["lr"] = tc.lr * factor * g.get("lr_scale", 1.0)
                args = (
                    batch.feats.to(self.device),
                    batch.feat_lens.to(self.device),
                    batch.targets.to(self.device),
                    batch.target_lens.to(self.device),
                )
                kwargs = {
                    "augment": self.specaug,
                    "ctc_only": step < tc.ctc_warmup_steps,
                    "teacher": self.teacher,
                    "distill_weight": tc.distill_weight,
                    "distill_mask": self._distill_mask(epoch_set, batch),
                    "speech_end_s": self._speech_end_s(batch),
                    "label_weight": tc.label_weight,
                }
                if self.compressor is None:
                    loss = self.ddp(*args, **kwargs)
                else:
                    loss = self.compressor.forward(self.model, *args, **kwargs)
                    reg = self.compressor.penalty(self.model, sched)
                    if reg is not None:
                        loss = loss + reg
                if self.ewc is not None:
                    loss = loss + self.ewc(self.model)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [p for g in self.opt.param_groups for p in g["params"]], tc.grad_clip
                )
                if torch.isfinite(grad_norm):
                    self.opt.step()
                else:
                    log.warning("skipping step %d: non-finite gradient", step)
                if self.compressor is not None:
                    self.compressor.after_step(self.model, sched)
                if self.average is not None and epoch >= average_from:
                    self.average.update()
                step += 1
                running.append(loss.item())
                if routing is not None and self.model.last_routing is not None:
                    routing.add(*self.model.last_routing)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{np.mean(running[-50:]):.3f}", lr=f"{self.opt.param_groups[0]['lr']:.2e}"
                )
                if step % 50 == 0:
                    self._log_metrics(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": float(np.mean(running[-50:])),
                            "lr": self.opt.param_groups[0]["lr"],
                            "elapsed_s": round(self._elapsed(), 1),
                            **(self.compressor.rate_log() if self.compressor else {}),
                        }
                    )
                if step % tc.checkpoint_every == 0:
                    self._save_checkpoint(epoch, bi + 1, step, best_wer)
                if (tc.max_steps and step >= tc.max_steps) or self._out_of_time():
                    break
            bar.close()
            start_batch = 0
            last = (
                epoch + 1 == tc.epochs
                or bool(tc.max_steps and step >= tc.max_steps)
                or self._out_of_time()
            )
            if self.dist.main and ((epoch + 1) % tc.eval_every == 0 or last):
                shipped = self._shipped_model()
                if self.device.type != "cpu":
                    # the numpy search feeds CPU arrays; decode a CPU copy, keep training here
                    shipped = copy.deepcopy(shipped).cpu()
                res = evaluate_cache(
                    shipped, self.tokenizer, self.dev_set, max_utts=tc.dev_max_utts
                )
                self.model.train()
                record = {
                    "epoch": epoch + 1,
                    "step": step,
                    "dev_wer": res.wer,
                    "train_loss": float(np.mean(running)) if running else None,
                    "elapsed_s": round(self._elapsed(), 1),
                }
                if routing is not None:
                    record["routing"] = {
                        "temperature": self.model.encoder.temperature,
                        **routing.summary(),
                    }
                    log.info("epoch %d routing: %s", epoch + 1, record["routing"])
                log.info("epoch %d: dev WER %.2f%%", epoch + 1, 100 * res.wer)
                for r in res.results[:3]:
                    log.info("  ref: %s\n  hyp: %s", r.ref, r.hyp)
                self._log_metrics(record)
                # a compressed model counts only once pruning reached its target sparsity (or
                # when this is the last evaluation of the run)
                # and a branched one once its routing is annealed to (near) hard choices: an
                # earlier, softer one may route more to the full branch and look better on dev,
                # but it is not the model the annealing was meant to produce
                annealing = (
                    routing is not None
                    and self.model.encoder.forced_branch is None
                    and self.model.encoder.num_branches > 1
                    and self.model.encoder.temperature > tc.temperature_end * 1.001
                )
                eligible = (
                    (
                        self.compressor is None
                        or self.compressor.schedule_done(self._schedule_step(step, total_steps))
                    )
                    and not annealing
                ) or last
                if eligible and res.wer <= best_wer:
                    best_wer = res.wer
                    info = {
                        "epoch": epoch + 1,
                        "step": step,
                        "dev_wer": res.wer,
                        "experiment": self.cfg.to_dict(),
                    }
                    if self.compressor is not None:
                        with self._averaged():  # the statistics of what ships
                            info["compression"] = self.compressor.summary(self.model)
                    if self.average is not None and self.average.count:
                        info["averaged_steps"] = self.average.count
                    save_package(shipped, self.tokenizer, self.run_dir / "best", info=info)
                    if self.base_decoding:
                        set_decoding_defaults(self.run_dir / "best", self.base_decoding)
            self._save_checkpoint(epoch + 1, 0, step, best_wer)
            self._barrier()
            if (tc.max_steps and step >= tc.max_steps) or self._out_of_time():
                break
        if self.dist.world > 1:
            dist.destroy_process_group()
        return self.run_dir / "best"
