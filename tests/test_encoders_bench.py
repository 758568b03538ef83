"""A tiny end-to-end run of benchmarks/encoders.py (tiny LSTM and Conformer, a few steps) so the
script cannot rot unnoticed, and the rule that picks the encoder."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
bench = importlib.import_module("encoders")


def _arm(dev: float, int8: float) -> dict:
    return {"wer_dev": dev, "rtf": {"int8": int8}}


def test_choice_follows_dev_wer_and_speed_breaks_near_ties():
    assert bench.choose({"a": _arm(0.20, 0.01), "b": _arm(0.15, 0.05)})[0] == "b"
    assert bench.choose({"a": _arm(0.200, 0.01), "b": _arm(0.198, 0.05)})[0] == "a"
    with pytest.raises(SystemExit, match="NAME=CONFIG"):
        bench.parse_arms("LSTM=configs/tiny.yaml,configs/tiny-conformer.yaml")


def test_tiny_run_trains_both_arms_times_them_and_writes_page(tiny_corpus, tmp_path):
    # the tiny LSTM without a projection: the ONNX exporter cannot write projected LSTMs
    lstm = tmp_path / "tiny-lstm.yaml"
    lstm.write_text(
        (REPO / "configs" / "tiny.yaml").read_text().replace("lstm_hidden: 48", "lstm_hidden: 32")
    )
    argv = [
        "--corpus", str(tiny_corpus), "--runs", str(tmp_path / "runs"),
        "--out-dir", str(tmp_path / "out"),
        "--arms", f"LSTM={lstm},Conformer=configs/tiny-conformer.yaml",
        "--max-steps", "2", "--penalties", "0,1", "--dev-utts", "3", "--max-utts", "2",
        "--rtf-utts", "2",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "out" / "encoders.json").read_text())["data"]
    arms = data["arms"]
    assert list(arms) == ["LSTM", "Conformer"] and data["chosen"] in arms
    for r in arms.values():
        assert r["rtf"]["fp32"] > 0 and r["rtf"]["int8"] > 0
        assert r["blank_penalty"] in (0.0, 1.0) and 0 <= r["wer_test"]
        assert r["training"]["steps"] == 2
    assert arms["Conformer"]["config"] == "configs/tiny-conformer.yaml"
    assert (tmp_path / "out" / "encoders.png").stat().st_size > 0
    # a second run reuses the trained models and their evaluation
    before = (tmp_path / "runs" / "conformer" / "bench.json").read_text()
    assert bench.main(argv) == 0
    assert (tmp_path / "runs" / "conformer" / "bench.json").read_text() == before
