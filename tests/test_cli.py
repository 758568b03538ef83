"""`edgeasr transcribe` on good and bad input: one clear line per bad file, the rest still run."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import make_untrained_package

from edgeasr.audio import AudioError, load_audio, validate_samples


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg")
    return make_untrained_package(d, ["turn on the lights", "call mom", "play music"])


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    good = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    sf.write(d / "good.wav", good, 16000)
    sf.write(d / "good2.flac", good[:8000], 16000)
    sf.write(d / "rate8k.wav", good[:8000], 8000)
    sf.write(d / "stereo.wav", np.stack([good, good], 1), 16000)
    nan = good.copy()
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is not audio at all\n" * 10)
    sf.write(d / "silent0.wav", np.zeros(0, np.float32), 16000)
    return d


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.wav", "no such file"),
        ("rate8k.wav", "sample rate is 8000 Hz"),
        ("stereo.wav", "2 channels"),
        ("nan.wav", "NaN"),
        ("empty.wav", "not a readable audio file"),
        ("text.wav", "not a readable audio file"),
        ("silent0.wav", "no samples"),
    ],
)
def test_load_audio_rejects_bad_input(audio_files, name, message):
    with pytest.raises(AudioError, match=message) as exc:
        load_audio(audio_files / name)
    assert name in str(exc.value)


def test_validate_samples_accepts_int16_and_column_vectors():
    x = (np.arange(1600, dtype=np.int16) - 800).reshape(-1, 1)
    y = validate_samples(x, 16000)
    assert y.dtype == np.float32 and y.ndim == 1 and np.abs(y).max() <= 1.0


def test_transcribe_cli_reports_bad_files_and_continues(audio_files, tiny_package):
    files = [
        "good.wav",
        "missing.wav",
        "stereo.wav",
        "nan.wav",
        "text.wav",
        "good2.flac",
        "rate8k.wav",
        "empty.wav",
    ]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeasr.cli",
            "transcribe",
            "--model",
            str(tiny_package),
            *[str(audio_files / f) for f in files],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1  # some files failed
    out_lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(out_lines) == 2
    assert out_lines[0].startswith(str(audio_files / "good.wav"))
    assert out_lines[1].startswith(str(audio_files / "good2.flac"))
    err_lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(err_lines) == 6
    for name in ("missing.wav", "stereo.wav", "nan.wav", "text.wav", "rate8k.wav", "empty.wav"):
        assert sum(name in x for x in err_lines) == 1


def test_transcribe_cli_bad_model_dir(tmp_path, audio_files):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeasr.cli",
            "transcribe",
            "--model",
            str(tmp_path),
            str(audio_files / "good.wav"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "not a model package" in r.stderr
