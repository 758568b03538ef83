"""Offline decoding and scoring: a Transcriber for files and sample buffers, WER over cut sets.

This is the training-side (torch) inference path used by ``edgeasr transcribe``/``decode`` and by
the trainer's dev evaluation. The device runtime will reuse ``edgeasr.search`` with onnxruntime.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch

from edgeasr.audio import SAMPLE_RATE
from edgeasr.features import StreamingFbank, compute_fbank
from edgeasr.model.checkpoint import (
    load_package,
    set_decoding_defaults,
    tuned_blank_penalty,
    tuned_rescorer,
)
from edgeasr.model.scorer import TorchScorer
from edgeasr.model.transducer import Transducer
from edgeasr.search.beam import (
    BeamState,
    Hypothesis,
    greedy_search,
    modified_beam_search,
    nbest,
    tuned_beam,
)
from edgeasr.search.rescore import Rescorer
from edgeasr.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "edgeasr-small-en"


@dataclass
class NBestEntry:
    text: str
    log_prob: float


@dataclass
class Result:
    id: str
    ref: str
    hyp: str
    nbest: list[NBestEntry]


@dataclass
class EvalResult:
    wer: float
    num_utts: int
    num_ref_words: int
    results: list[Result]


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus-level WER (errors / reference words) via jiwer; empty hypotheses are deletions."""
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r.strip()]
    if not pairs:
        return 0.0
    out = jiwer.process_words([r for r, _ in pairs], [h if h.strip() else "" for _, h in pairs])
    return float(out.wer)


def utterance_errors(refs: list[str], hyps: list[str]) -> list[int]:
    """Word errors (substitutions + deletions + insertions) per utterance, counted the way
    :func:`word_error_rate` counts them (an utterance without reference words counts 0)."""
    out = []
    for r, h in zip(refs, hyps, strict=True):
        if not r.strip():
            out.append(0)
            continue
        o = jiwer.process_words(r, h if h.strip() else "")
        out.append(o.substitutions + o.deletions + o.insertions)
    return out


def relative_change_ci(
    errors_a: list[int], errors_b: list[int], resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """B's WER change relative to A on the same utterances, with its 95 % interval from a paired
    bootstrap over utterances (one resample serves both, so what they share cancels; reference
    words cancel in the ratio). Says whether a few percent relative can be told from chance on
    a test set of this size."""
    a, b = np.asarray(errors_a, float), np.asarray(errors_b, float)
    if a.shape != b.shape or a.size == 0 or a.sum() == 0:
        raise ValueError("need the same non-empty utterances and some errors in A")
    idx = np.random.default_rng(seed).integers(0, a.size, (resamples, a.size))
    base = a[idx].sum(1)
    keep = base > 0  # a resample without errors in A has no relative change
    rel = (b[idx].sum(1)[keep] - base[keep]) / base[keep]
    lo, hi = np.percentile(rel, [2.5, 97.5])
    return float((b.sum() - a.sum()) / a.sum()), float(lo), float(hi)


class Transcriber:
    """Load a model package once; transcribe sample buffers (16 kHz float32 mono).

    Beam search is the first pass; ``rescorer`` (weights tuned into the package by
    ``edgeasr tune-decoding``, off by default) reranks its N-best with the model's CTC head and a
    word bonus once the utterance is over (:mod:`edgeasr.search.rescore`).
    """

    def __init__(
        self,
        model: Transducer,
        tokenizer: Tokenizer,
        method: str = "beam",
        beam: int = 4,
        blank_penalty: float = 0.0,
        rescorer: Rescorer | None = None,
    ) -> None:
        if method not in ("greedy", "beam"):
            raise ValueError(f"unknown decoding method {method!r} (greedy or beam)")
        self.rescorer = rescorer or Rescorer()
        if self.rescorer.ctc_weight and model.ctc_head is None:
            raise ValueError("CTC rescoring needs a model with a CTC head (ctc_weight > 0)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.scorer = TorchScorer(self.model)
        self.method = method
        self.beam = beam
        self.blank_penalty = blank_penalty

    @classmethod
    def from_dir(cls, model_dir: str | Path = DEFAULT_MODEL_DIR, **kw) -> Transcriber:
        """Load a package; decoding settings default to those tuned into its manifest."""
        model, tokenizer, manifest = load_package(model_dir)
        kw.setdefault("blank_penalty", tuned_blank_penalty(manifest))
        if kw.get("beam") is None:
            kw["beam"] = tuned_beam(manifest.get("decoding", {}))
        if "rescorer" not in kw:
            tuned = tuned_rescorer(manifest)
            kw["rescorer"] = tuned.for_model(model.ctc_head is not None)
            if kw["rescorer"] != tuned:
                log.warning(
                    "%s: second pass tuned but no CTC head; decoding in one pass", model_dir
                )
        return cls(model, tokenizer, **kw)

    @property
    def _needs_ctc(self) -> bool:
        """Whether the second pass will read the CTC head (beam search, a CTC weight)."""
        return self.method == "beam" and bool(self.rescorer.ctc_weight)

    def first_pass(self, feats: np.ndarray) -> tuple[list[Hypothesis], np.ndarray | None]:
        """Beam (or greedy) search over one utterance's fbank features: its N-best, first-pass
        order, and the CTC head's log-probs when the second pass needs them."""
        if feats.shape[0] < self.model.cfg.subsampling:
            return [Hypothesis([], 0.0, [])], None
        enc, ctc, _ = self.scorer.encode_chunk_ctc(feats, None, ctc=self._needs_ctc)
        if self.method == "greedy":
            return [greedy_search(self.scorer, enc, blank_penalty=self.blank_penalty)], None
        beam = modified_beam_search(
            self.scorer, enc, beam=self.beam, blank_penalty=self.blank_penalty
        )
        return nbest(beam), ctc

    def second_pass(
        self, hyps: list[Hypothesis], ctc: np.ndarray | None, rescorer: Rescorer | None = None
    ) -> list[Hypothesis]:
        """The N-best reranked by ``rescorer`` (default: this transcriber's)."""
        r = rescorer or self.rescorer
        if self.method != "beam" or not r.enabled:
            return hyps
        return r.rerank(hyps, ctc, self.count_words)

    def count_words(self, tokens: list[int]) -> int:
        return len(self.tokenizer.decode(tokens).split())

    def decode_features(self, feats: np.ndarray) -> list[Hypothesis]:
        """N-best (best first) for one utterance's fbank features."""
        return self.second_pass(*self.first_pass(feats))

    def decode_streaming(self, samples: np.ndarray, chunk_ms: int = 160) -> list[Hypothesis]:
        """Decode as a device would: audio arrives in ``chunk_ms`` pieces, features, encoder
        state and beam are carried between pieces, nothing looks at the future.

        Gives the same N-best as whole-utterance beam search (the encoder is causal and the
        search frame-synchronous); tests hold it to that.
        """
        sub = self.model.cfg.subsampling
        fbank = StreamingFbank()
        pending = np.zeros((0, fbank.cfg.num_mel_bins), dtype=np.float32)
        enc_state = None
        beam_state = BeamState(self.scorer.context_size)
        step = max(1, SAMPLE_RATE * chunk_ms // 1000)
        need_ctc = self._needs_ctc
        ctc_chunks: list[np.ndarray] = []

        def advance(final: bool) -> None:
            nonlocal pending, enc_state, beam_state
            if final:
                fbank.input_finished()
            pending = np.concatenate([pending, fbank.pop_frames()])
            n = (len(pending) // sub) * sub
            if n:
                enc, ctc, enc_state = self.scorer.encode_chunk_ctc(pending[:n], enc_state, need_ctc)
                if ctc is not None:
                    ctc_chunks.append(ctc)
                pending = pending[n:]
                beam_state = modified_beam_search(
                    self.scorer, enc, self.beam, beam_state, self.blank_penalty
                )

        for start in range(0, len(samples), step):
            fbank.accept_waveform(samples[start : start + step])
            advance(final=False)
        advance(final=True)
        ctc_all = np.concatenate(ctc_chunks) if ctc_chunks else None
        return self.second_pass(nbest(beam_state), ctc_all)

    def transcribe_nbest(self, samples: np.ndarray) -> list[NBestEntry]:
        """N-best for a whole buffer: streamed for beam search, whole-utterance for greedy."""
        if self.method == "beam":
            hyps = self.decode_streaming(samples)
        else:
            hyps = self.decode_features(compute_fbank(samples))
        return [NBestEntry(self.tokenizer.decode(h.tokens), h.log_prob) for h in hyps]

    def transcribe(self, samples: np.ndarray) -> str:
        return self.transcribe_nbest(samples)[0].text


def evaluate_cache(
    model: Transducer,
    tokenizer: Tokenizer,
    cache,
    max_utts: int = 0,
    method: str = "greedy",
    beam: int = 4,
    blank_penalty: float = 0.0,
    rescorer: Rescorer | None = None,
) -> EvalResult:
    """WER over a FeatureCache (the trainer's dev set); ``max_utts`` > 0 takes an even subset."""
    was_training = model.training
    tr = Transcriber(model, tokenizer, method, beam, blank_penalty, rescorer)
    utts = cache.utts
    if max_utts and len(utts) > max_utts:
        stride = len(utts) / max_utts
        utts = [utts[int(i * stride)] for i in range(max_utts)]
    results = []
    with torch.inference_mode():
        for u in utts:
            hyps = tr.decode_features(cache.features(u))
            nb = [NBestEntry(tokenizer.decode(h.tokens), h.log_prob) for h in hyps]
            results.append(Result(u.id, u.text, nb[0].text, nb))
    model.train(was_training)
    wer = word_error_rate([r.ref for r in results], [r.hyp for r in results])
    return EvalResult(wer, len(results), sum(len(r.ref.split()) for r in results), results)


def tune_blank_penalty(
    model_dir: str | Path,
    cache,
    penalties: list[float],
    beam: int = 4,
    max_utts: int = 0,
    split: str = "dev",
) -> tuple[float, dict[float, float]]:
    """Sweep the blank penalty with beam search on ``cache`` (a dev split) and record the best
    in the package manifest; returns (best penalty, {penalty: WER})."""
    model, tok, _ = load_package(model_dir)
    sweep = {p: evaluate_cache(model, tok, cache, max_utts, "beam", beam, p).wer for p in penalties}
    best = min(sweep, key=lambda p: (sweep[p], p))
    set_decoding_defaults(
        model_dir,
        {"blank_penalty": best, "tuned_on": split, "sweep": {str(k): v for k, v in sweep.items()}},
    )
    return best, sweep


def tune_rescoring(
    model_dir: str | Path,
    cache,
    ctc_weights: list[float],
    word_bonuses: list[float],
    beam: int = 16,
    max_utts: int = 0,
    split: str = "dev",
) -> tuple[Rescorer, dict[tuple[float, float], float]]:
    """Sweep the second pass (CTC weight × word bonus) over one first pass at ``beam`` with the
    package's blank penalty, on ``cache`` (a dev split), and record the best in its manifest
    with that beam, which decoding then defaults to (:func:`~edgeasr.search.beam.tuned_beam`).

    The first pass does not depend on the second pass' weights, so every utterance is searched
    once and only the cheap reranking is repeated per grid point.
    """
    model, tok, manifest = load_package(model_dir)
    utts = cache.utts
    if max_utts and len(utts) > max_utts:
        stride = len(utts) / max_utts
        utts = [utts[int(i * stride)] for i in range(max_utts)]
    if any(ctc_weights) and model.ctc_head is None:
        raise ValueError(f"{model_dir}: no CTC head, so only word bonuses can be tuned")
    # a CTC weight in the grid makes the first pass fetch the CTC head's log-probs too
    fetch = Rescorer(ctc_weight=1.0) if any(ctc_weights) else Rescorer()
    tr = Transcriber(
        model, tok, beam=beam, blank_penalty=tuned_blank_penalty(manifest), rescorer=fetch
    )
    with torch.inference_mode():
        first = [(u.text, *tr.first_pass(cache.features(u))) for u in utts]
    sweep = {}
    for cw in ctc_weights:
        for wb in word_bonuses:
            r = Rescorer(cw, wb)
            hyps = [tok.decode(tr.second_pass(h, c, r)[0].tokens) for _, h, c in first]
            sweep[(cw, wb)] = word_error_rate([ref for ref, _, _ in first], hyps)
    best = min(sweep, key=lambda k: (sweep[k], k))
    set_decoding_defaults(
        model_dir,
        {
            "ctc_weight": best[0],
            "word_bonus": best[1],
            "beam": beam,
            "rescoring": {
                "beam": beam,
                "tuned_on": split,
                "sweep": {f"{k[0]}:{k[1]}": v for k, v in sweep.items()},
            },
        },
    )
    return Rescorer(*best), sweep


def write_results(ev: EvalResult, out_dir: Path, extra: dict | None = None) -> None:
    """Per-utterance JSONL (with N-best) and a summary JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "results.jsonl").open("w") as fh:
        for r in ev.results:
            fh.write(json.dumps(asdict(r)) + "\n")
    summary = {"wer": ev.wer, "num_utts": ev.num_utts, "num_ref_words": ev.num_ref_words}
    summary.update(extra or {})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
