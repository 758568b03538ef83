"""Two end-pointers: a speculative one that lets downstream work start early, and a final one.

Both look at trailing non-speech as the decoder sees it: encoder frames since the best
hypothesis last emitted a token (a transducer emits blank through silence and hesitation alike,
so this needs no separate voice activity detector). The speculative end-pointer fires after a
shorter stretch than the final one; if speech resumes or the best hypothesis changes after it
fired, the stream signals ``reset`` so downstream can drop what it started.

An optional learned end-of-query classifier (``endpoint.onnx`` in the runtime package, trained by
:mod:`edgeasr.train.endpoint`) reads the encoder output, which carries what was said so far: after
"call" a pause is probably mid-sentence, after "call jonathan" it is probably the end. With it,
each end-pointer fires once the trailing stretch passes its minimum *and* the classifier's
probability passes its threshold, and always at the rule's maximum as a safety net.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EndpointConfig:
    """Trailing non-speech (seconds) and classifier thresholds for both end-pointers."""

    speculative_s: float = 0.32
    final_s: float = 0.56
    # With the learned classifier: fire at ``*_min_s`` when p(end) ≥ threshold, else at ``*_s``.
    speculative_min_s: float = 0.16
    final_min_s: float = 0.32
    speculative_threshold: float = 0.5
    final_threshold: float = 0.8
    use_classifier: bool = True
    # Cut an utterance that never pauses (a stuck microphone, music) after this long.
    max_utterance_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.speculative_s <= self.final_s:
            raise ValueError("end-pointer: need 0 < speculative_s <= final_s")
        if not 0 < self.speculative_min_s <= self.final_min_s:
            raise ValueError("end-pointer: need 0 < speculative_min_s <= final_min_s")


@dataclass
class EndpointDecision:
    speculative: bool
    final: bool


def decide(
    cfg: EndpointConfig,
    trailing_s: float,
    utterance_s: float,
    has_speech: bool,
    p_end: float | None,
) -> EndpointDecision:
    """Whether each end-pointer's condition holds at this frame (the caller tracks firing)."""
    if not has_speech:
        return EndpointDecision(False, False)
    if utterance_s >= cfg.max_utterance_s:
        return EndpointDecision(True, True)
    spec = trailing_s >= cfg.speculative_s
    final = trailing_s >= cfg.final_s
    if p_end is not None and cfg.use_classifier:
        spec = spec or (trailing_s >= cfg.speculative_min_s and p_end >= cfg.speculative_threshold)
        final = final or (trailing_s >= cfg.final_min_s and p_end >= cfg.final_threshold)
    return EndpointDecision(spec or final, final)


class EndOfQueryClassifier:
    """p(the speaker has finished) per encoder frame, from ``endpoint.onnx`` (a tiny MLP)."""

    def __init__(self, session) -> None:
        self._session = session

    def __call__(self, enc: np.ndarray, trailing_s: np.ndarray) -> np.ndarray:
        """enc (T, J) projected encoder frames, trailing_s (T,) → probabilities (T,)."""
        x = np.concatenate(
            [np.asarray(enc, np.float32), np.asarray(trailing_s, np.float32)[:, None]], axis=1
        )
        return self._session.run(None, {"x": x})[0].reshape(-1)
