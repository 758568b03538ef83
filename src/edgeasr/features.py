"""Log-mel filterbank features, whole-utterance and streaming.

Training, decoding and the device runtime all compute features here, so they can never disagree.
Only numpy and kaldi-native-fbank are imported (no torch), which the device runtime relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import kaldi_native_fbank as knf
import numpy as np

from edgeasr.audio import SAMPLE_RATE

NUM_MEL_BINS = 80


@dataclass(frozen=True)
class FbankConfig:
    """Feature settings; stored with every model so the device computes identical features."""

    num_mel_bins: int = NUM_MEL_BINS
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    dither: float = 0.0
    # Log-mel floor: the level of white noise with this standard deviation in 16-bit units
    # (1.0 = one LSB, Kaldi's default dither). Synthetic and padded audio contains exact digital
    # silence, whose log energy (-15.9, log of float epsilon) sits far below any real microphone's
    # noise floor; left alone, those frames (a fifth of our corpus) dominate the global variance
    # and squeeze speech into a narrow normalised range. A floor, unlike random dither, keeps
    # features deterministic and identical between streaming and whole-utterance extraction.
    floor_noise_std: float = 1.0


def _fbank_options(cfg: FbankConfig) -> knf.FbankOptions:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = cfg.dither
    opts.frame_opts.snip_edges = False
    opts.frame_opts.frame_shift_ms = cfg.frame_shift_ms
    opts.frame_opts.frame_length_ms = cfg.frame_length_ms
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.mel_opts.high_freq = -400
    return opts


def _raw_fbank(samples: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    fb = knf.OnlineFbank(_fbank_options(cfg))
    fb.accept_waveform(SAMPLE_RATE, (samples * 32768.0).tolist())
    fb.input_finished()
    n = fb.num_frames_ready
    if n == 0:
        return np.zeros((0, cfg.num_mel_bins), dtype=np.float32)
    return np.stack([fb.get_frame(i) for i in range(n)]).astype(np.float32)


@lru_cache(maxsize=8)
def _floor(cfg: FbankConfig) -> np.ndarray:
    """Per-bin log-mel level of white noise at ``cfg.floor_noise_std`` (fixed seed)."""
    if cfg.floor_noise_std <= 0:
        return np.full(cfg.num_mel_bins, -np.inf, dtype=np.float32)
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2) * cfg.floor_noise_std
    return _raw_fbank((noise / 32768.0).astype(np.float32), cfg).mean(0)


def compute_fbank(samples: np.ndarray, cfg: FbankConfig | None = None) -> np.ndarray:
    """Log-mel filterbank of a whole utterance, shape (frames, num_mel_bins), float32.

    kaldi-native-fbank expects samples scaled like 16-bit integers for its energy floor to
    behave as in Kaldi, hence the 32768 factor. Values are floored (see FbankConfig).
    """
    cfg = cfg or FbankConfig()
    return np.maximum(_raw_fbank(samples, cfg), _floor(cfg))


class StreamingFbank:
    """Incremental fbank for streaming input: accepts pieces of any size, yields new frames.

    Wraps kaldi-native-fbank's online extractor so frames computed piece by piece are identical
    to :func:`compute_fbank` on the whole utterance.
    """

    def __init__(self, cfg: FbankConfig | None = None) -> None:
        self.cfg = cfg or FbankConfig()
        self._fb = knf.OnlineFbank(_fbank_options(self.cfg))
        self._next = 0

    def accept_waveform(self, samples: np.ndarray) -> None:
        self._fb.accept_waveform(SAMPLE_RATE, (np.asarray(samples, np.float32) * 32768.0).tolist())

    def input_finished(self) -> None:
        self._fb.input_finished()

    def pop_frames(self) -> np.ndarray:
        """Return the frames that became ready since the last call."""
        n = self._fb.num_frames_ready
        frames = [self._fb.get_frame(i) for i in range(self._next, n)]
        self._next = n
        if not frames:
            return np.zeros((0, self.cfg.num_mel_bins), dtype=np.float32)
        return np.maximum(np.stack(frames).astype(np.float32), _floor(self.cfg))
