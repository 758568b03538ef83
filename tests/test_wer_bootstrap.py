"""scripts/wer_bootstrap.py: the paired bootstrap that says whether a WER change is real."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
wb = importlib.import_module("wer_bootstrap")


def _results(d: Path, hyps: list[str]) -> Path:
    d.mkdir()
    refs = ["call jonathan", "play some music", "turn off the lights", "set a timer"]
    lines = [
        json.dumps({"id": f"u{i}", "ref": r, "hyp": h})
        for i, (r, h) in enumerate(zip(refs, hyps, strict=True))
    ]
    (d / "results.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_paired_bootstrap(tmp_path: Path) -> None:
    from edgeasr.decode import utterance_errors

    hyps_a = ["call jon", "play some music", "turn off the light", "set a timer"]
    a = wb.read_results(_results(tmp_path / "a", hyps_a))
    assert utterance_errors([r for r, _ in a.values()], hyps_a) == [1, 0, 1, 0]
    same = wb.compare(a, a, 200)
    assert same["relative"] == same["ci_low"] == same["ci_high"] == 0.0
    hyps_b = ["call jon", "play sum music", "turn of the light", "set timer"]
    b = wb.read_results(_results(tmp_path / "b", hyps_b))
    r = wb.compare(a, b, 500)
    assert r["wer_a"] == pytest.approx(2 / 12) and r["wer_b"] == pytest.approx(5 / 12)
    assert r["relative"] == pytest.approx(1.5) and r["ci_low"] <= 1.5 <= r["ci_high"]
    assert (r["worse"], r["better"], r["worse_first_word"]) == (3, 0, 0)
    hyps_c = ["call jon", "pay some music", "turn off the light", "set a timer"]
    c = wb.read_results(_results(tmp_path / "c", hyps_c))
    assert wb.compare(a, c, 10)["worse_first_word"] == 1
    assert wb.first_word_losses(a, c) == [("play some music", "play some music", "pay some music")]
    with pytest.raises(ValueError, match="differ in 1 utterance"):
        wb.compare(a, {k: v for k, v in b.items() if k != "u3"}, 10)
    with pytest.raises(ValueError, match="some errors in A"):
        wb.relative_change_ci([0, 0], [1, 0])


def test_bad_result_dirs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="results.jsonl: missing"):
        wb.read_results(tmp_path)
    (tmp_path / "results.jsonl").write_text('{"id": "u0", "ref": "call tom"}\n')
    with pytest.raises(ValueError, match="not an edgeasr decode results file"):
        wb.read_results(tmp_path)
    (tmp_path / "results.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="not an edgeasr decode results file"):
        wb.read_results(tmp_path)
