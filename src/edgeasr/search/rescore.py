"""Second pass: rerank the transducer's N-best with the model's own CTC head.

Every model trained with ``ctc_weight > 0`` has a CTC head on the encoder (training's auxiliary
loss). It is a second, differently biased view of the same audio: CTC scores each frame on its
own, where the transducer's joiner conditions on the last tokens and can talk itself into a
fluent wrong word. Joint CTC/attention decoders (WeNet's "attention rescoring", ESPnet) use the
same two views; here the first pass is the streaming beam search and the second pass, once the
utterance is over, reranks its N-best by

    log P_rnnt(y | x) + ctc_weight · log P_ctc(y | x) + word_bonus · words(y)

The word bonus offsets both scores' preference for fewer emissions (each extra word costs
probability), the role a word insertion penalty plays in classic decoders. With shallow fusion
(context phrases) each hypothesis also carries its phrase bonus; the second pass counts the
audio 1 + ctc_weight times, so it counts the bonus that many times too, or the boost tuned for
the first pass would lose ground to the acoustics exactly where a rare name needs it.

The weights are tuned on dev (``edgeasr tune-decoding --ctc-weights ... --word-bonuses ...``),
at a beam recorded with them that decoding then defaults to: the gain grows with the beam
because the right answer is more often somewhere in a larger N-best
(``scripts/probe_nbest_lm.py``).

Only numpy: the device runtime can use it without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgeasr.search.beam import Hypothesis
from edgeasr.tokenizer import BLANK_ID


def ctc_log_likelihood(
    log_probs: np.ndarray, tokens: Sequence[int], blank: int = BLANK_ID
) -> float:
    """log P_ctc(tokens | x): the forward algorithm over every CTC alignment, in log space.

    ``log_probs`` (T, V) are per-frame log-softmax outputs of the CTC head. Returns -inf when
    ``tokens`` cannot be aligned to T frames (more frames are needed than there are).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"ctc_log_likelihood: need (T, V) log-probs, got shape {lp.shape}")
    T = lp.shape[0]
    if T == 0:
        return 0.0 if not tokens else -np.inf
    # extended label sequence: blank, y1, blank, y2, ..., yU, blank
    ext = np.full(2 * len(tokens) + 1, blank, dtype=np.int64)
    ext[1::2] = np.asarray(tokens, dtype=np.int64)
    S = len(ext)
    # a label may skip the blank before it unless it repeats the label two places back
    skip = np.zeros(S, dtype=bool)
    if S > 2:
        skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = np.full(S, -np.inf)
    alpha[0] = lp[0, ext[0]]
    if S > 1:
        alpha[1] = lp[0, ext[1]]
    for t in range(1, T):
        prev1 = np.concatenate([[-np.inf], alpha[:-1]])
        prev2 = np.where(skip, np.concatenate([[-np.inf, -np.inf], alpha[:-2]]), -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, prev1), prev2) + lp[t, ext]
    if S == 1:
        return float(alpha[0])
    return float(np.logaddexp(alpha[-1], alpha[-2]))


@dataclass(frozen=True)
class Rescorer:
    """The second pass's weights; ``enabled`` is False when it would change nothing."""

    ctc_weight: float = 0.0
    word_bonus: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ctc_weight", "word_bonus"):
            v = getattr(self, name)
            if not np.isfinite(v):
                raise ValueError(f"rescoring: {name} must be a finite number, got {v}")
        if self.ctc_weight < 0:
            raise ValueError(f"rescoring: ctc_weight must be >= 0, got {self.ctc_weight}")

    @classmethod
    def from_decoding(cls, decoding: dict) -> Rescorer:
        """The weights recorded in a package manifest's ``decoding`` section (by ``edgeasr
        tune-decoding --ctc-weights``; off when absent)."""
        return cls(float(decoding.get("ctc_weight", 0.0)), float(decoding.get("word_bonus", 0.0)))

    def for_model(self, has_ctc: bool) -> Rescorer:
        """These weights for a model with or without CTC log-probs: without them, off
        altogether (the two weights were tuned together, so neither half is used alone)."""
        return self if has_ctc or not self.ctc_weight else Rescorer()

    @property
    def enabled(self) -> bool:
        return bool(self.ctc_weight or self.word_bonus)

    def to_decoding(self) -> dict[str, float]:
        """The manifest entries :meth:`from_decoding` reads (none when off)."""
        if not self.enabled:
            return {}
        return {"ctc_weight": self.ctc_weight, "word_bonus": self.word_bonus}

    def scores(
        self,
        hyps: Sequence[Hypothesis],
        ctc_log_probs: np.ndarray | None,
        count_words: Callable[[list[int]], int],
    ) -> list[float]:
        """The combined score of each hypothesis (its ranking in the second pass): the
        transducer's log-probability, the CTC term, the word bonus and the phrase bonus scaled
        like the acoustic evidence (see the module docstring)."""
        if self.ctc_weight and ctc_log_probs is None:
            raise ValueError("rescoring with ctc_weight > 0 needs the CTC head's log-probs")
        out = []
        for h in hyps:
            s = (
                h.log_prob
                + (1.0 + self.ctc_weight) * h.context_score
                + self.word_bonus * count_words(h.tokens)
            )
            if self.ctc_weight:
                s += self.ctc_weight * ctc_log_likelihood(ctc_log_probs, h.tokens)
            out.append(s)
        return out

    def posterior_scores(
        self,
        hyps: Sequence[Hypothesis],
        ctc_log_probs: np.ndarray | None,
        count_words: Callable[[list[int]], int],
    ) -> list[float]:
        """The combined scores on a log-probability's scale, for N-best posteriors (word
        confidences) that agree with this ranking: divided by 1 + ctc_weight, the number of
        times they count the audio (a softmax over the raw sum would be as over-confident as
        squaring the probabilities at ctc_weight 1)."""
        return [s / (1.0 + self.ctc_weight) for s in self.scores(hyps, ctc_log_probs, count_words)]

    def ranked(
        self,
        hyps: Sequence[Hypothesis],
        ctc_log_probs: np.ndarray | None,
        count_words: Callable[[list[int]], int],
    ) -> list[tuple[Hypothesis, float]]:
        """``hyps`` best first by the combined score (stable: ties keep the first pass' order),
        each with its :meth:`posterior_scores` entry, so that a caller wanting both the order
        and the confidences scores every hypothesis (a CTC forward pass each) once."""
        s = self.scores(hyps, ctc_log_probs, count_words)
        order = sorted(range(len(hyps)), key=lambda i: -s[i])
        return [(hyps[i], s[i] / (1.0 + self.ctc_weight)) for i in order]

    def rerank(
        self,
        hyps: Sequence[Hypothesis],
        ctc_log_probs: np.ndarray | None,
        count_words: Callable[[list[int]], int],
    ) -> list[Hypothesis]:
        """``hyps`` best first by the combined score (stable: ties keep the first pass' order).

        Fewer than two hypotheses (a beam that has seen no frame yet) come back as they are,
        CTC log-probs or not. The hypotheses themselves are unchanged, so their ``log_prob``
        stays the transducer's probability for the lattice's path scores; word confidences
        should come from :meth:`posterior_scores` (:meth:`ranked` gives both at once).
        """
        if not self.enabled or len(hyps) < 2:
            return list(hyps)
        return [h for h, _ in self.ranked(hyps, ctc_log_probs, count_words)]
