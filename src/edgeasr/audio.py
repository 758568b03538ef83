"""Audio loading and validation: files and sample buffers in, checked 16 kHz float32 mono out.

The training side and the device runtime both validate input here, so a bad buffer gets the same
clear error everywhere. Importing this module needs only numpy (soundfile and scipy are imported
where files are read or resampled), so the torch-free runtime can use it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


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
    import soundfile as sf

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
