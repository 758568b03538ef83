"""Signal-level helpers for the synthetic corpus: speech bounds, noise, reverberation, gain.

TTS output is studio-clean; real device audio is not. These functions add the cheapest
realistic degradations (coloured noise at a chosen SNR, an exponentially decaying noise impulse
response for a room) and find where speech starts and ends in the *clean* signal, which is what
end-of-speech latency is measured from later. All randomness comes from a caller-provided
``numpy.random.Generator`` so a corpus is reproducible.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from edgeasr.audio import SAMPLE_RATE

FRAME = SAMPLE_RATE // 100  # 10 ms
NOISE_KINDS = ("white", "pink", "brown")


def speech_bounds(
    samples: np.ndarray, rel_db: float = -40.0, floor: float = 1e-4
) -> tuple[int, int]:
    """Return ``(start, end)`` sample indices of the speech in a clean signal (10 ms resolution).

    A frame is speech when its RMS is within ``rel_db`` of the loudest frame (and above an
    absolute ``floor``). Works on TTS output, where the silence is (near) digital zero; it is not
    a VAD for noisy audio. Raises ValueError when nothing qualifies.
    """
    n = samples.size // FRAME
    if n == 0:
        raise ValueError("signal shorter than one 10 ms frame")
    frames = samples[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    thr = max(rms.max() * 10.0 ** (rel_db / 20.0), floor)
    active = np.flatnonzero(rms > thr)
    if active.size == 0:
        raise ValueError("no frame above the speech threshold")
    return int(active[0] * FRAME), int(min(samples.size, (active[-1] + 1) * FRAME))


def trim(samples: np.ndarray, margin_s: float = 0.03) -> np.ndarray:
    """Cut leading/trailing engine silence down to ``margin_s``, so padding is ours to control."""
    start, end = speech_bounds(samples)
    m = int(margin_s * SAMPLE_RATE)
    return samples[max(0, start - m) : min(samples.size, end + m)]


def coloured_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f^alpha power spectrum: white (0), pink (1), brown (2)."""
    alpha = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
    white = rng.standard_normal(n)
    if alpha > 0:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
        f[0] = f[1] if n > 1 else 1.0
        f = np.maximum(f, 20.0)  # no sub-20 Hz rumble dominating brown noise
        spec *= f ** (-alpha / 2.0)
        white = np.fft.irfft(spec, n)
    rms = np.sqrt(np.mean(white**2)) or 1.0
    return (white / rms).astype(np.float32)


def add_noise(
    samples: np.ndarray, snr_db: float, kind: str, speech: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Add noise so that speech power (measured over the speech region only) / noise = SNR."""
    s, e = speech
    p_speech = float(np.mean(samples[s:e].astype(np.float64) ** 2)) or 1e-10
    scale = np.sqrt(p_speech / 10.0 ** (snr_db / 10.0))
    return (samples + scale * coloured_noise(samples.size, kind, rng)).astype(np.float32)


def room_impulse_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Synthetic RIR: a direct path followed by exponentially decaying noise (-60 dB at rt60)."""
    n = max(1, int(rt60 * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    pre_delay = int(0.005 * SAMPLE_RATE)  # first reflections arrive a few ms after the direct path
    tail[:pre_delay] = 0.0
    tail *= 0.3 / (np.sqrt(np.sum(tail**2)) or 1.0) * np.sqrt(rt60 / 0.3)
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(samples: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic RIR, keeping length and peak level (the tail is cut at the end)."""
    out = fftconvolve(samples, room_impulse_response(rt60, rng))[: samples.size]
    peak_in, peak_out = float(np.abs(samples).max()), float(np.abs(out).max())
    if peak_out > 0:
        out *= peak_in / peak_out
    return out.astype(np.float32)


def set_peak(samples: np.ndarray, peak_dbfs: float) -> np.ndarray:
    """Scale to a given peak level: random gain that never clips."""
    peak = float(np.abs(samples).max())
    if peak == 0:
        return samples
    return (samples * (10.0 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)
