"""Thin wrappers around the Debian TTS engines: espeak-ng, flite and festival.

Each engine is run as a subprocess, one call per text, and its output is resampled to 16 kHz
mono float32 with :func:`edgeasr.audio.resample_audio`. Voices are discovered at runtime from the
engines themselves (``espeak-ng --voices``, ``flite -lv``, festival's ``voice.list``), so the
corpus uses whatever this machine has and never names a voice that is not installed.

Rate and pitch are engine-neutral: ``rate`` is a speed factor (1.0 = the engine's default,
1.2 = 20 % faster) and ``pitch`` a shift in semitones; each engine maps them onto its own
controls. Where an engine voice has no pitch control (flite's clustergen ``rms``, for example)
the pitch is silently left at the voice's default — the manifest still records the request.
"""

from __future__ import annotations

import functools
import io
import logging
import random
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import soundfile as sf

from edgeasr.audio import SAMPLE_RATE, resample_audio

log = logging.getLogger(__name__)

ENGINES = ("espeak", "flite", "festival")
# Engines that honour a timed SSML <break> inside one utterance. flite's -ssml mode inserts a
# phrase break of its own length whatever the time asked (0.1-0.2 s); festival's SABLE BREAK
# takes no duration.
SSML_ENGINES = frozenset({"espeak"})
WHISPER_VARIANTS = frozenset({"whisper", "whisperf"})
_TIMEOUT_S = 60.0

# Mean F0 (Hz) of flite / festival voices whose intonation takes an absolute target; the
# semitone shift is applied relative to these.
_FLITE_F0 = {"kal": 105.0, "kal16": 105.0, "slt": 170.0, "awb": 115.0}
_FESTIVAL_KAL_F0 = 105.0


class TTSError(RuntimeError):
    """A TTS engine failed or is missing; the message names the engine, voice and cause."""


@dataclass(frozen=True)
class Voice:
    """One usable voice: ``engine`` ("espeak", "flite", "festival"), engine-level ``name``.

    ``params`` holds engine details that are not part of the name (espeak language and variant,
    whether the voice is a whisper). Frozen and hashable so voices can key dicts and sets.
    """

    engine: str
    name: str
    params: tuple[tuple[str, str], ...] = field(default=())

    @property
    def id(self) -> str:
        """Stable speaker id used in manifests, e.g. ``espeak:en-us+f3``."""
        return f"{self.engine}:{self.name}"

    def param(self, key: str, default: str = "") -> str:
        return dict(self.params).get(key, default)

    @classmethod
    def from_id(cls, voice_id: str) -> Voice:
        """Inverse of :attr:`id` (params re-derived), for reading voices back from manifests."""
        engine, _, name = voice_id.partition(":")
        if engine not in ENGINES or not name:
            raise ValueError(f"not a voice id: {voice_id!r}")
        if engine == "espeak":
            lang, _, variant = name.partition("+")
            return cls(engine, name, (("language", lang), ("variant", variant)))
        return cls(engine, name)


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def _run(cmd: list[str], text_in: str | None = None, timeout: float = _TIMEOUT_S) -> bytes:
    try:
        proc = subprocess.run(
            cmd,
            input=None if text_in is None else text_in.encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise TTSError(f"{cmd[0]}: not installed (command not found)") from None
    except subprocess.TimeoutExpired:
        raise TTSError(f"{cmd[0]}: timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TTSError(f"{cmd[0]}: exit status {proc.returncode}: {' | '.join(err[-3:])}")
    return proc.stdout


@functools.cache
def mbrola_available() -> bool:
    """True when espeak-ng can actually speak with an mbrola voice (binary and voice data)."""
    if shutil.which("espeak-ng") is None or shutil.which("mbrola") is None:
        return False
    try:
        out = _run(["espeak-ng", "-v", "mb-us1", "--stdout", "test"], timeout=10)
    except TTSError:
        return False
    return len(out) > 1000


@functools.cache
def _espeak_languages() -> tuple[str, ...]:
    """English espeak-ng voices: the language codes of gmw voices plus working mbrola ones."""
    out = _run(["espeak-ng", "--voices=en"]).decode(errors="replace")
    langs: list[str] = []
    use_mbrola = None
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5:
            continue
        lang, file_ = cols[1], cols[4]
        if file_.startswith("!v/"):
            continue  # a variant that advertises English, handled with the variants
        if file_.startswith("mb/"):
            if use_mbrola is None:
                use_mbrola = mbrola_available()
            # Only the native English mbrola voices; mb-de1-en etc. are accented and odd.
            name = file_.split("/", 1)[1]
            if use_mbrola and name in ("mb-us1", "mb-us2", "mb-us3", "mb-en1"):
                langs.append(name)
            continue
        if lang not in langs:
            langs.append(lang)
    return tuple(langs)


@functools.cache
def _espeak_variants() -> tuple[str, ...]:
    """Variant file names (``f3``, ``klatt``, ``whisper`` ...) usable after ``+``."""
    out = _run(["espeak-ng", "--voices=variant"]).decode(errors="replace")
    names: list[str] = []
    for line in out.splitlines()[1:]:
        cols = line.split()
        idx = next((i for i, c in enumerate(cols) if c.startswith("!v/")), None)
        if idx is None:
            continue
        if idx + 1 < len(cols) and not cols[idx + 1].startswith("("):
            continue  # file name with a space ("Mr serious"): cannot be passed after '+'
        name = cols[idx][3:]
        if name and name not in names:
            names.append(name)
    return tuple(names)


@functools.cache
def _flite_voices() -> tuple[str, ...]:
    if shutil.which("flite") is None:
        return ()
    out = _run(["flite", "-lv"]).decode(errors="replace")
    names = out.split(":", 1)[-1].split()
    # awb_time is a limited-domain voice that can only say clock times.
    return tuple(n for n in names if not n.endswith("_time"))


@functools.cache
def _festival_voices() -> tuple[str, ...]:
    if shutil.which("festival") is None or shutil.which("text2wave") is None:
        return ()
    out = _run(["festival", "--pipe"], text_in="(print (voice.list))\n").decode(errors="replace")
    line = next((ln for ln in out.splitlines() if ln.startswith("(")), "()")
    return tuple(line.strip("()\n ").split())


def list_voices(include_whisper: bool = False, engines: tuple[str, ...] = ENGINES) -> list[Voice]:
    """Every installed voice usable for English, in a stable order.

    espeak-ng contributes language × variant combinations (plus each language's default voice);
    whisper variants are left out unless ``include_whisper`` — unvoiced speech is not what the
    recogniser should learn from, but a whisper-detection task needs it. An engine that is not
    installed simply contributes nothing (logged), so callers check what they got.
    """
    voices: list[Voice] = []
    for engine in engines:
        try:
            if engine == "espeak":
                variants = [
                    v for v in _espeak_variants() if include_whisper or v not in WHISPER_VARIANTS
                ]
                for lang in _espeak_languages():
                    if lang.startswith("mb-"):  # mbrola voices ignore espeak variants
                        voices.append(Voice("espeak", lang, (("language", lang), ("variant", ""))))
                        continue
                    voices.append(Voice("espeak", lang, (("language", lang), ("variant", ""))))
                    for var in variants:
                        params = (("language", lang), ("variant", var))
                        if var in WHISPER_VARIANTS:
                            params += (("whisper", "1"),)
                        voices.append(Voice("espeak", f"{lang}+{var}", params))
            elif engine == "flite":
                voices.extend(Voice("flite", n) for n in _flite_voices())
            elif engine == "festival":
                voices.extend(Voice("festival", n) for n in _festival_voices())
            else:
                raise ValueError(f"unknown TTS engine {engine!r}; expected one of {ENGINES}")
        except TTSError as exc:
            log.warning("TTS engine %s unavailable: %s", engine, exc)
    return voices


# --------------------------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------------------------


def _decode_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """Decode WAV bytes, including espeak's streamed header whose sizes are placeholders."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TTSError(f"{what}: produced no WAV audio ({len(data)} bytes)")
    pos = 12
    rate = channels = bits = 0
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[pos + 8 : pos + 24])
        elif cid == b"data":
            pcm = data[pos + 8 : pos + 8 + min(size, len(data) - pos - 8)]
            if bits != 16 or channels != 1:
                break
            pcm = pcm[: len(pcm) // 2 * 2]
            return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, rate
        pos += 8 + size + (size & 1)
    # Unusual layout: let libsndfile try.
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples[:, 0], rate


def _espeak_cmd(voice: Voice, rate: float, pitch: float) -> list[str]:
    wpm = int(round(175 * rate))
    p = int(round(min(99, max(0, 50 + 6 * pitch))))
    return ["espeak-ng", "-v", voice.name, "-s", str(wpm), "-p", str(p), "--stdout"]


def _flite_args(voice: Voice, rate: float, pitch: float) -> list[str]:
    args = ["--setf", f"duration_stretch={1.0 / rate:.4f}"]
    if voice.name in _FLITE_F0:
        f0 = _FLITE_F0[voice.name] * 2.0 ** (pitch / 12.0)
        args += ["--setf", f"int_f0_target_mean={f0:.1f}"]
    return args


def _festival_eval(voice: Voice, rate: float, pitch: float) -> list[str]:
    evals = [f"(voice_{voice.name})"]
    if voice.name.endswith("_hts"):
        # hts_engine takes its own options: -r speed factor, -fm additive half-tones.
        evals.append(
            "(set! hts_engine_params (append hts_engine_params "
            f'(list (list "-r" {rate:.4f}) (list "-fm" {pitch:.3f}))))'
        )
    else:
        evals.append(f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})")
        if voice.name == "kal_diphone":
            f0 = _FESTIVAL_KAL_F0 * 2.0 ** (pitch / 12.0)
            evals.append(
                f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std 14) "
                "(model_f0_mean 170) (model_f0_std 34)))"
            )
    return evals


def _check_installed(voice: Voice) -> None:
    """Engines fall back to a default voice on unknown names; we would rather know."""
    if voice.engine == "espeak":
        lang, _, variant = voice.name.partition("+")
        ok = lang in _espeak_languages() and (not variant or variant in _espeak_variants())
    elif voice.engine == "flite":
        ok = voice.name in _flite_voices()
    elif voice.engine == "festival":
        ok = voice.name in _festival_voices()
    else:
        raise TTSError(f"unknown TTS engine {voice.engine!r}; expected one of {ENGINES}")
    if not ok:
        raise TTSError(f"{voice.id}: voice not installed")


def ssml_with_breaks(segments: Sequence[str], pauses_s: Sequence[float]) -> str:
    """One SSML document speaking ``segments`` with a timed ``<break>`` of ``pauses_s[i]``
    between segment ``i`` and ``i + 1``: one clause with a silence inside, not one sentence per
    segment, so the voice does not fall to sentence-final intonation at the pause."""
    if len(pauses_s) != len(segments) - 1:
        raise ValueError(f"{len(segments)} segments need {len(segments) - 1} pauses")
    parts = [xml_escape(segments[0])]
    for seg, pause in zip(segments[1:], pauses_s, strict=True):
        parts.append(f'<break time="{round(1000 * pause)}ms"/>')
        parts.append(xml_escape(seg))
    return "<speak>" + " ".join(parts) + "</speak>"


def synthesize(
    voice: Voice,
    text: str,
    rate: float = 1.0,
    pitch: float = 0.0,
    rng: random.Random | None = None,
    ssml: bool = False,
) -> np.ndarray:
    """Speak ``text`` with ``voice``; return float32 mono samples at 16 kHz.

    ``rate`` is a speed factor, ``pitch`` a shift in semitones (see module docstring). ``rng`` is
    accepted for engines that need randomness; none of the current ones do, so synthesis is a
    pure function of its arguments (what makes corpus runs reproducible). ``ssml``: ``text`` is
    an SSML document (:func:`ssml_with_breaks`), for the engines in :data:`SSML_ENGINES`. Raises
    :class:`TTSError` with the engine's own message when anything goes wrong.
    """
    del rng  # engines here are deterministic
    if not text.strip():
        raise TTSError(f"{voice.id}: empty text")
    if not 0.3 <= rate <= 3.0:
        raise ValueError(f"rate {rate} outside 0.3..3.0")
    if ssml and voice.engine not in SSML_ENGINES:
        raise TTSError(f"{voice.id}: {voice.engine} does not take timed SSML breaks")
    what = f"{voice.id} ({text[:40]!r})"
    _check_installed(voice)
    if voice.engine == "espeak":
        data = _run(_espeak_cmd(voice, rate, pitch) + (["-m"] if ssml else []) + ["--", text])
        samples, sr = _decode_wav(data, what)
    elif voice.engine in ("flite", "festival"):
        with tempfile.TemporaryDirectory(prefix="edgeasr-tts-") as tmp:
            wav = Path(tmp) / "out.wav"
            if voice.engine == "flite":
                cmd = [
                    "flite",
                    "-voice",
                    voice.name,
                    *_flite_args(voice, rate, pitch),
                    "-t",
                    text,
                    "-o",
                    str(wav),
                ]
                _run(cmd)
            else:
                cmd = ["text2wave", "-o", str(wav)]
                for expr in _festival_eval(voice, rate, pitch):
                    cmd += ["-eval", expr]
                _run(cmd, text_in=text + "\n")
            if not wav.exists():
                raise TTSError(f"{what}: engine wrote no output file")
            samples, sr = _decode_wav(wav.read_bytes(), what)
    else:  # unreachable: _check_installed rejects other engines
        raise TTSError(f"unknown TTS engine {voice.engine!r}")
    if samples.size < SAMPLE_RATE // 50 or not np.any(np.abs(samples) > 1e-3):
        raise TTSError(f"{what}: produced silence or almost no audio ({samples.size} samples)")
    return resample_audio(samples, sr, SAMPLE_RATE)
