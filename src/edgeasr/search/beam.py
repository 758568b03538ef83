"""Greedy and modified beam search for a transducer with a stateless predictor.

The search sees the model only through :class:`Scorer` (predictor and joiner on numpy arrays), so
the training-side torch model and the device-side onnxruntime sessions use the same code. The
encoder output is passed in already projected for the joiner.

Modified beam search (as in icefall) emits at most one symbol per frame, which keeps the beam
synchronous in time and makes streaming trivial: the beam after frame t is the whole state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgeasr.tokenizer import BLANK_ID


class Scorer(Protocol):
    """What search needs from a model: both return arrays already projected to the joiner dim."""

    context_size: int

    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        """(N, context_size) int64 token ids → (N, J) float32."""
        ...

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """(N, J) encoder frames and (N, J) decoder outputs → (N, V) logits."""
        ...


@dataclass
class Hypothesis:
    """One search result: token ids, total log-probability and the frame of each token.

    ``scores[k]`` is the hypothesis' log-probability right after emitting token ``k``; the
    differences between them split the total into per-word acoustic scores for lattices.
    """

    tokens: list[int]
    log_prob: float
    frames: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def _joint_log_probs(
    scorer: Scorer, enc: np.ndarray, dec: np.ndarray, blank_penalty: float
) -> np.ndarray:
    """Joiner log-probabilities with ``blank_penalty`` taken off the blank logit first."""
    logits = scorer.joiner(enc, dec)
    if blank_penalty:
        logits = logits.copy()
        logits[:, BLANK_ID] -= blank_penalty
    return _log_softmax(logits)


def _context(tokens: list[int], size: int) -> list[int]:
    ctx = tokens[-size:]
    return [BLANK_ID] * (size - len(ctx)) + ctx


def greedy_search(
    scorer: Scorer, enc: np.ndarray, max_symbols_per_frame: int = 3, blank_penalty: float = 0.0
) -> Hypothesis:
    """Best-path decoding of one utterance; enc is (T, J).

    ``blank_penalty`` is subtracted from the blank logit: a model that drops words (deletions)
    emits blank too eagerly, and a penalty tuned on dev data trades deletions for insertions.
    """
    tokens: list[int] = []
    frames: list[int] = []
    scores: list[float] = []
    total = 0.0
    dec = scorer.decoder(np.array([_context(tokens, scorer.context_size)], dtype=np.int64))
    for t in range(enc.shape[0]):
        for _ in range(max_symbols_per_frame):
            lp = _joint_log_probs(scorer, enc[t : t + 1], dec, blank_penalty)[0]
            k = int(lp.argmax())
            total += float(lp[k])
            if k == BLANK_ID:
                break
            tokens.append(k)
            frames.append(t)
            scores.append(total)
            dec = scorer.decoder(np.array([_context(tokens, scorer.context_size)], dtype=np.int64))
    return Hypothesis(tokens, total, frames, scores)


class BeamState:
    """The beam after some frames; kept between calls so search can run chunk by chunk."""

    def __init__(self, context_size: int) -> None:
        self.hyps: list[Hypothesis] = [Hypothesis([], 0.0)]
        self.frame = 0
        self.context_size = context_size


def modified_beam_search(
    scorer: Scorer,
    enc: np.ndarray,
    beam: int = 4,
    state: BeamState | None = None,
    blank_penalty: float = 0.0,
) -> BeamState:
    """Advance the beam over the frames in ``enc`` (T, J); call repeatedly for streaming.

    Hypotheses reaching the same token sequence are merged by adding their probabilities
    (log-sum-exp), so the N-best lists distinct transcripts with calibrated scores.
    """
    st = state or BeamState(scorer.context_size)
    for t in range(enc.shape[0]):
        hyps = st.hyps
        ctx = np.array([_context(h.tokens, st.context_size) for h in hyps], dtype=np.int64)
        dec = scorer.decoder(ctx)
        lp = _joint_log_probs(
            scorer, np.repeat(enc[t : t + 1], len(hyps), axis=0), dec, blank_penalty
        )
        scores = lp + np.array([h.log_prob for h in hyps])[:, None]
        flat = scores.reshape(-1)
        k = min(beam * 2, flat.size)
        top = np.argpartition(-flat, k - 1)[:k]
        top = top[np.argsort(-flat[top])]
        merged: dict[tuple[int, ...], Hypothesis] = {}
        V = lp.shape[1]
        for idx in top:
            h_i, tok = divmod(int(idx), V)
            h = hyps[h_i]
            s = float(flat[idx])
            if tok == BLANK_ID:
                new = Hypothesis(h.tokens, s, h.frames, h.scores)
            else:
                new = Hypothesis(h.tokens + [tok], s, h.frames + [st.frame], h.scores + [s])
            key = tuple(new.tokens)
            if key in merged:
                old = merged[key]
                old.log_prob = float(np.logaddexp(old.log_prob, s))
            else:
                merged[key] = new
        st.hyps = sorted(merged.values(), key=lambda h: -h.log_prob)[:beam]
        st.frame += 1
    return st


def nbest(state: BeamState, n: int | None = None) -> list[Hypothesis]:
    """Hypotheses of a beam, best first."""
    hyps = sorted(state.hyps, key=lambda h: -h.log_prob)
    return hyps if n is None else hyps[:n]
