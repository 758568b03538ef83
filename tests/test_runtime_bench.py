"""Runtime benchmark: the bar logic on made-up numbers, and a tiny end-to-end run on two bundled
samples (real worker processes, the bundled model exported on the fly) so the script cannot rot."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
rt = importlib.import_module("runtime")

SAMPLES = REPO / "samples"
HAVE_SPHINX = importlib.util.find_spec("pocketsphinx") is not None


def _result(uid: str, split: str, ref: str, hyps: dict[str, str], secs: float):
    item = rt.Item(uid, split, "espeak", ref, num_samples=2 * rt.SAMPLE_RATE)
    r = rt.UttResult(item)
    for s, h in hyps.items():
        r.hyp[s], r.secs[s] = h, secs * (10 if s == rt.POCKETSPHINX else 1)
        if s != rt.POCKETSPHINX:
            r.chunks_ms[s] = [1.0, 2.0, 3.0]
            r.checks[s] = {"offline": h, "greedy": ref}
        r.final_ms[s] = 0.5
    return r


def test_summary_and_bars_on_made_up_results() -> None:
    systems = list(rt.SYSTEMS)
    results = [
        _result("a", "test", "call mom", dict.fromkeys(systems, "call mom"), 0.02),
        _result(
            "b",
            "test",
            "turn on the lights",
            {**dict.fromkeys(systems, "turn on the lights"), rt.INT8: "turn on the light"},
            0.02,
        ),
    ]
    results[1].checks[rt.INT8]["offline"] = "turn on the lights"  # int8 chunked ≠ whole buffer
    data = {"overall": rt.summarize(results, systems)}
    data["splits"] = {"test": data["overall"]}
    data["consistency"] = rt.consistency(results, systems)
    o = data["overall"]
    assert o[rt.TORCH]["rtf"] == pytest.approx(0.01) and o[rt.POCKETSPHINX]["rtf"] == 0.1
    assert o[rt.INT8]["speed_vs_pocketsphinx"] == pytest.approx(10.0)
    assert o[rt.INT8]["chunk_ms"]["p50"] == 2.0 and o[rt.INT8]["chunk_ms"]["n"] == 6
    assert o[rt.FP32]["wer"] == 0 and o[rt.INT8]["wer"] == pytest.approx(1 / 6)
    assert o["int8_wer_rel_diff"] is None  # relative to zero: undefined, but the bar still fails
    verdicts = {b["bar"]: b["pass"] for b in rt.bars(data, systems, threads=1)}
    assert verdicts["Streaming and offline decoding give the same transcript (onnx-fp32)"]
    assert not verdicts["Streaming and offline decoding give the same transcript (onnx-int8)"]
    assert verdicts["int8 WER within 5% relative of fp32 (test)"] is False
    assert verdicts["int8 RTF ≤ 0.05 on one thread of this machine"]
    assert verdicts["int8 faster than pocketsphinx on the same audio"]
    assert verdicts["Export parity: identical greedy transcripts torch vs onnx fp32 (test split)"]
    multi = {b["bar"]: b["pass"] for b in rt.bars(data, systems, threads=2)}
    assert multi["int8 RTF ≤ 0.05 on one thread of this machine"] is None  # not measured


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    wavs = [str(p) for p in sorted(SAMPLES.glob("*.wav"))[:1]]
    argv = ["--wavs", *wavs, "--refs", str(SAMPLES / "references.tsv")]
    assert rt.main([*argv, "--model", str(tmp_path / "nope"), "--out-dir", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        rt.parse_args(["--wavs", *wavs])  # --wavs without --refs


def test_runtime_script_end_to_end(tmp_path: Path) -> None:
    """Two bundled samples through all systems: page, JSON and PNG with every system and bar."""
    out = tmp_path / "results"
    wavs = [str(p) for p in sorted(SAMPLES.glob("*.wav"))]
    rc = rt.main(
        [
            "--wavs",
            *wavs,
            "--refs",
            str(SAMPLES / "references.tsv"),
            "--max-utts",
            "2",
            "--out-dir",
            str(out),
            "--name",
            "rt",
        ]
    )
    assert rc == 0
    expected = [rt.TORCH, rt.FP32, rt.INT8] + ([rt.POCKETSPHINX] if HAVE_SPHINX else [])
    data = json.loads((out / "rt.json").read_text())["data"]
    assert data["systems"] == expected
    o = data["overall"]
    assert o["num_utts"] == 2 and set(data["splits"]) == {"wavs"}
    for s in expected:
        assert o[s]["rtf"] > 0 and data["memory"][s]["peak_rss_mb"] > 0
    for s in (rt.TORCH, rt.FP32, rt.INT8):
        assert o[s]["chunk_ms"]["n"] > 10 and o[s]["chunk_ms"]["p99"] > 0
    checks = data["consistency"]
    assert checks["streaming_vs_offline"][rt.FP32] == {"identical": 2, "total": 2, "examples": []}
    assert checks["greedy_torch_vs_onnx_fp32"]["all"]["identical"] == 2
    md = (out / "rt.md").read_text()
    assert "benchmarks/runtime.py --wavs" in md
    for line in (
        "Streaming and offline decoding give the same transcript (onnx-fp32)",
        "int8 WER within 5% relative of fp32",
        "int8 RTF ≤ 0.05 on one thread",
        "Export parity: identical greedy transcripts",
    ):
        assert line in md
    assert "**PASS** Export parity" in md
    for s in expected:
        assert rt.LABELS[s] in md
    assert (out / "rt.png").stat().st_size > 1000


def test_pages_name_a_tuned_second_pass(tmp_path: Path) -> None:
    common = importlib.import_module("_common")
    assert common.second_pass_note(tmp_path / "missing") == ""
    (tmp_path / "manifest.json").write_text(json.dumps({"decoding": {"blank_penalty": 1.0}}))
    assert common.second_pass_note(tmp_path) == ""
    decoding = {"blank_penalty": 1.0, "ctc_weight": 0.5, "word_bonus": 3.0}
    (tmp_path / "manifest.json").write_text(json.dumps({"decoding": decoding}))
    note = common.second_pass_note(tmp_path)
    assert "CTC head (weight 0.5)" in note and "word bonus of 3.0" in note
    assert "turned off" in common.second_pass_note(tmp_path, one_pass=True)
    assert common.decoding_overrides(False) == {}
    assert not common.decoding_overrides(True)["rescorer"].enabled


def test_system_pages_default_to_the_package_beam(tmp_path: Path) -> None:
    """The pages that measure the package as it ships decode at its tuned beam unless told;
    the others keep their fixed beam."""
    common = importlib.import_module("_common")
    (tmp_path / "manifest.json").write_text(json.dumps({"decoding": {"beam": 16}}))
    assert common.package_beam(tmp_path, None) == 16
    assert common.package_beam(tmp_path, 8) == 8
    assert common.package_beam(tmp_path / "missing", None) == 4
    shipped = common.benchmark_parser("doc", "x", package_beam=True).parse_args([])
    assert shipped.beam is None and not shipped.one_pass
    assert common.benchmark_parser("doc", "x").parse_args([]).beam == 4
