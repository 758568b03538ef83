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


# End-pointers that never fire: one utterance per stream however long it pauses (benchmarks that
# score whole utterances, and recording frames for end-pointer training). A shipped classifier
# still runs on every frame; it just cannot end anything.
NEVER = EndpointConfig(
    speculative_s=1e9,
    final_s=1e9,
    speculative_min_s=1e9,
    final_min_s=1e9,
    max_utterance_s=1e9,
    use_classifier=False,
)


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


class Endpointer:
    """The end-pointer state of one utterance, frame by frame.

    Kept apart from the stream so that tuning can replay recorded frames through exactly the
    logic the device runs.
    """

    def __init__(self, cfg: EndpointConfig) -> None:
        self.cfg = cfg
        self.best_text = ""
        self.speculated_text: str | None = None

    def step(
        self,
        text: str,
        trailing_s: float,
        utterance_s: float,
        has_speech: bool,
        p_end: float | None,
    ) -> list[str]:
        """Event kinds for one encoder frame, in order (``final_end`` closes the utterance)."""
        kinds = []
        if text != self.best_text:
            self.best_text = text
            kinds.append("partial")
        if self.speculated_text is not None and text != self.speculated_text:
            self.speculated_text = None
            kinds.append("reset")
        d = decide(self.cfg, trailing_s, utterance_s, has_speech, p_end)
        if d.final:
            kinds += self.finish(text)
        elif d.speculative and self.speculated_text is None:
            self.speculated_text = text
            kinds.append("speculative_end")
        return kinds

    def finish(self, final_text: str) -> list[str]:
        """Close the utterance: a reset first if downstream was handed another transcript."""
        kinds = []
        if self.speculated_text is not None and final_text != self.speculated_text:
            kinds.append("reset")
        self.speculated_text = None
        return kinds + ["final_end"]


def classifier_input(enc: np.ndarray, dec: np.ndarray, trailing_s: np.ndarray) -> np.ndarray:
    """[encoder frame, decoder output of the best hypothesis, trailing seconds] per row.

    The encoder output says what was heard lately (silence, a trailing-off word), the decoder
    output what was said last ("to" rarely ends a request), the trailing time how long ago.
    """
    return np.concatenate(
        [
            np.asarray(enc, np.float32),
            np.asarray(dec, np.float32),
            np.asarray(trailing_s, np.float32)[:, None],
        ],
        axis=1,
    )


class EndOfQueryClassifier:
    """p(the speaker has finished) per encoder frame, from ``endpoint.onnx`` (a tiny MLP)."""

    def __init__(self, session) -> None:
        self._session = session

    def __call__(self, enc: np.ndarray, dec: np.ndarray, trailing_s: np.ndarray) -> np.ndarray:
        """enc (T, J), dec (T, J), trailing_s (T,) → probabilities (T,)."""
        x = classifier_input(enc, dec, trailing_s)
        return self._session.run(None, {"x": x})[0].reshape(-1)
