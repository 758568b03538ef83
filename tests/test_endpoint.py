"""End-pointers: the state machine, the learned classifier's plumbing, and that tuning replays
recorded frames exactly as the device stream would fire."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeasr.audio import load_audio
from edgeasr.decode import DEFAULT_MODEL_DIR
from edgeasr.export import export_model_dir
from edgeasr.runtime import EndpointConfig, Recognizer
from edgeasr.runtime.endpoint import Endpointer, decide
from edgeasr.runtime.recognizer import FrameInfo
from edgeasr.train.endpoint import (
    CLASSIFIER_FILE,
    NEVER,
    Trace,
    predict,
    record_trace,
    replay,
    replay_events,
    save_classifier,
    train_classifier,
    training_frames,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
WAVS = sorted(SAMPLES.glob("*.wav"))
RULE = EndpointConfig(speculative_s=0.24, final_s=0.48, use_classifier=False)


def test_decide_rule_and_classifier():
    cfg = EndpointConfig(speculative_s=0.32, final_s=0.8, speculative_min_s=0.08, final_min_s=0.24)
    assert decide(cfg, 1.0, 2.0, has_speech=False, p_end=None).final is False
    assert decide(cfg, 0.32, 2.0, True, None).speculative
    assert not decide(cfg, 0.32, 2.0, True, None).final
    assert decide(cfg, 0.8, 2.0, True, None).final  # the rule's safety net
    assert decide(cfg, 0.24, 2.0, True, 0.99).final  # confident classifier, early
    assert not decide(cfg, 0.24, 2.0, True, 0.1).speculative
    assert decide(cfg, 0.08, 2.0, True, 0.6).speculative
    assert decide(cfg, 0.0, cfg.max_utterance_s, True, None).final
    with pytest.raises(ValueError):
        EndpointConfig(speculative_s=0.5, final_s=0.3)


def test_endpointer_sequence_with_reset():
    ep = Endpointer(RULE)
    assert ep.step("call", 0.0, 0.5, True, None) == ["partial"]
    assert ep.step("call", 0.24, 0.8, True, None) == ["speculative_end"]
    # speech resumes: the transcript grows, downstream must drop its speculative work
    assert ep.step("call jonathan", 0.0, 1.2, True, None) == ["partial", "reset"]
    assert ep.step("call jonathan", 0.24, 1.5, True, None) == ["speculative_end"]
    assert ep.step("call jonathan", 0.48, 1.7, True, None) == ["final_end"]
    ep = Endpointer(RULE)
    ep.step("call", 0.24, 0.8, True, None)
    assert ep.finish("call john") == ["reset", "final_end"]


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return export_model_dir(DEFAULT_MODEL_DIR, tmp_path_factory.mktemp("rt"), int8=False)


def _trace(package: Path, wav: Path) -> tuple[Trace, np.ndarray]:
    audio = np.concatenate([load_audio(wav), np.zeros(16000, np.float32)])
    never = Recognizer(package, endpoint=NEVER)
    return record_trace(never, wav.stem, audio, speech_end_s=len(audio) / 16000 - 1.0), audio


@pytest.mark.parametrize("wav", WAVS[:3], ids=lambda p: p.name)
def test_replayed_trace_fires_exactly_like_the_stream(package, wav):
    """Thresholds are tuned by replaying recorded frames; that is only valid if the replay
    reproduces the events of a real stream, frame for frame."""
    trace, audio = _trace(package, wav)
    rec = Recognizer(package, endpoint=RULE)
    st = rec.create_stream()
    events = []
    for start in range(0, len(audio), 2560):
        events += st.accept_waveform(audio[start : start + 2560])
    events += st.input_finished()
    got = replay_events(events)
    want = replay(trace, RULE, [f.p_end for f in trace.frames])
    assert got == want
    assert got.final_s is not None and got.final_text


def _frame(frame: int, trailing: float) -> FrameInfo:
    return FrameInfo(frame, "x", trailing, frame * 0.08, True, np.ones(4), np.zeros(4), None)


def test_training_frames_labels_after_true_end():
    frames = [_frame(i, 0.08 * max(0, i - 5)) for i in range(1, 15)]
    tr = Trace("u", speech_end_s=0.6, has_pause=False, frames=frames, frame_shift_s=0.08, text="x")
    x, y = training_frames([tr])
    times = [f.frame * 0.08 for f in frames if f.trailing_s >= 0.08]
    assert x.shape == (len(times), 9)
    assert y.tolist() == [float(t > 0.6) for t in times]


def test_classifier_learns_separable_frames_and_ships_in_the_package(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(2000) > 0.5).astype(np.float32)
    x = rng.standard_normal((2000, 513)).astype(np.float32)
    x[:, 0] += 3 * (2 * y - 1)  # one informative feature among noise
    clf = train_classifier(x, y, epochs=60, hidden=16)
    with torch.inference_mode():
        acc = float(((clf(torch.from_numpy(x)).squeeze(1) > 0.5).numpy() == (y > 0.5)).mean())
    assert acc > 0.95
    pkg = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, pkg, ignore=shutil.ignore_patterns("onnx"))
    for name in (CLASSIFIER_FILE,):
        (pkg / name).unlink(missing_ok=True)
    cfg = EndpointConfig(speculative_min_s=0.08, final_min_s=0.24, final_threshold=0.9)
    save_classifier(pkg, clf, cfg, {"note": "test"})
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["endpoint"]["config"] == asdict(cfg)
    rt = export_model_dir(pkg, tmp_path / "rt", int8=False)
    rec = Recognizer(rt)
    assert rec.classifier is not None and rec.endpoint == cfg
    # the ONNX classifier inside the runtime computes what the torch one does
    trace, _ = _trace(rt, WAVS[0])
    speech = [f for f in trace.frames if f.has_speech]
    want = predict(clf, speech)
    got = [f.p_end for f in speech]
    np.testing.assert_allclose(got, want, atol=1e-5)
