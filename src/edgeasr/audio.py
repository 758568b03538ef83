"""Audio loading, validation and log-mel features.

Everything that turns a file or a sample buffer into model input goes through here, on the
training side and on the device alike, so the two can never disagree about features. Only numpy,
soundfile, scipy and kaldi-native-fbank are used: no torch, so the device runtime can import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
NUM_MEL_BINS = 80


class AudioError(ValueError):
    """Raised for input the recogniser cannot use; the message names the file and the problem."""


def validate_samples(samples: np.ndarray, sample_rate: int, name: str = "<samples>") -> np.ndarray:
    """Check that ``samples`` is usable speech input and return it as float32 mono.

    Rejecting instead of silently fixing keeps users from getting nonsense transcripts:
    a wrong sample rate or a stereo file is a caller bug we want to surface, not hide.
    """
    if sample_rate != SAMPLE_RATE:
        raise AudioError(f"{name}: sample rate is {sample_rate} Hz, expected {SAMPLE_RATE} Hz")
    arr = np.asarray(samples)
    if arr.ndim == 2:
        if arr.shape[1] == 1:
            arr = arr[:, 0]
        else:
            raise AudioError(f"{name}: has {arr.shape[1]} channels, expected mono")
    if arr.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D array of samples, got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError(f"{name}: contains no samples")
    if not np.issubdtype(arr.dtype, np.floating):
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
        else:
            raise AudioError(f"{name}: unsupported sample type {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise AudioError(f"{name}: contains NaN or infinite samples")
    if arr.size < SAMPLE_RATE // 100:
        raise AudioError(f"{name}: shorter than 10 ms ({arr.size} samples)")
    return arr


def load_audio(path: str | Path, resample: bool = False) -> np.ndarray:
    """Read an audio file as float32 mono at 16 kHz, validating it.

    ``resample=True`` is for evaluation data recorded at another rate (e.g. 8 kHz digits);
    user-facing commands keep it off so a wrong rate is reported rather than guessed around.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt input
        raise AudioError(f"{p}: not a readable audio file ({exc.__class__.__name__})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{p}: contains no samples")
    if data.shape[1] > 1:
        raise AudioError(f"{p}: has {data.shape[1]} channels, expected mono")
    samples = data[:, 0]
    if resample and sr != SAMPLE_RATE:
        samples = resample_audio(samples, sr, SAMPLE_RATE)
        sr = SAMPLE_RATE
    return validate_samples(samples, sr, str(p))


def resample_audio(samples: np.ndarray, src_rate: int, dst_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy), exact for rational rate ratios such as 22050 → 16000."""
    if src_rate == dst_rate:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(src_rate), int(dst_rate))
    out = resample_poly(samples.astype(np.float64), dst_rate // g, src_rate // g)
    return out.astype(np.float32)


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
