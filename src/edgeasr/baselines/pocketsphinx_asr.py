"""pocketsphinx's bundled US-English model as a peer recogniser on the same audio.

pocketsphinx (PyPI, 5.x) ships a continuous-density acoustic model, a general English trigram LM
and CMUdict; we use exactly those defaults so the comparison is against the model a user gets
from ``pip install pocketsphinx``, not one we tuned. Decoding is whole-utterance
(``full_utt=True``, which also normalises cepstra over the whole utterance), matching how
edgeasr's offline :class:`~edgeasr.decode.Transcriber` sees the audio.

The pocketsphinx decoder is a single-threaded C library with no thread options, so one instance
in one Python thread is an honest single-core measurement next to ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeasr.audio import SAMPLE_RATE, validate_samples
from edgeasr.corpus.text import normalize_text

# "<s>", "</s>", "<sil>", "<unk>", "[noise]", "++garbage++" etc. are not words a user said.
_FILLER = re.compile(r"^(<[^>]*>|\[[^\]]*\]|\+\+.*\+\+)$")
# Pronunciation alternates in the dictionary are spelled "word(2)".
_ALTERNATE = re.compile(r"\(\d+\)$")


def clean_hypothesis(hyp: str) -> str:
    """Lowercase words of a pocketsphinx hypothesis: fillers and ``(N)`` alternates removed."""
    words = []
    for w in hyp.split():
        if _FILLER.match(w):
            continue
        words.append(_ALTERNATE.sub("", w))
    return normalize_text(" ".join(words))


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """16 kHz float32 in [-1, 1] → little-endian int16 bytes, clipped (what pocketsphinx reads)."""
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (np.round(x * 32767.0)).astype("<i2").tobytes()


class PocketSphinxASR:
    """Full-utterance pocketsphinx recogniser with its bundled English model.

    Create once (loading the model takes ~0.3 s) and call :meth:`transcribe` per utterance.
    ``model_overrides`` are passed to ``pocketsphinx.Decoder`` (e.g. ``hmm``, ``lm``, ``dict``) for
    experiments; the benchmark uses none.
    """

    name = "pocketsphinx"

    def __init__(self, **model_overrides: str | float | int | bool) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:  # optional dependency
            raise ImportError(
                "pocketsphinx is not installed; install the dev extras: pip install -e '.[dev]'"
            ) from exc
        params: dict[str, str | float | int | bool] = {"loglevel": "FATAL"}
        params.update(model_overrides)
        self._decoder = Decoder(**params)
        rate = int(self._decoder.config["samprate"])
        if rate != SAMPLE_RATE:
            raise ValueError(f"pocketsphinx model expects {rate} Hz, edgeasr feeds {SAMPLE_RATE}")

    @property
    def model_files(self) -> dict[str, str]:
        """Paths of the acoustic model, LM and dictionary actually loaded (for results pages)."""
        cfg = self._decoder.config
        return {k: str(Path(cfg[k])) for k in ("hmm", "lm", "dict") if cfg[k]}

    def transcribe(self, samples: np.ndarray) -> str:
        """Decode one utterance (float32 mono 16 kHz) and return its normalised words."""
        x = validate_samples(samples, SAMPLE_RATE)
        dec = self._decoder
        dec.start_utt()
        dec.process_raw(float_to_pcm16(x), no_search=False, full_utt=True)
        dec.end_utt()
        hyp = dec.hyp()
        return clean_hypothesis(hyp.hypstr) if hyp is not None else ""
