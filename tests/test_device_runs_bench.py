"""The device-run benchmark end to end on tiny packages laid out as scripts/device_train.sh
returns them, so the page that reports GPU sessions cannot rot between sessions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from edgeasr.compress.convert import pack_model

REPO = Path(__file__).resolve().parents[1]


def _device_outputs(tiny_base: Path, root: Path) -> Path:
    """train-best/, warp-best/, compress-best/, compress.pack and runs/device/*/metrics.jsonl."""
    runs = root / "device"
    for run, steps in (("train", 7), ("warp", 8), ("compress", 6)):
        shutil.copytree(tiny_base, runs / f"{run}-best")
        metrics = runs / "runs" / "device" / run / "metrics.jsonl"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({"step": steps, "dev_wer": 0.9, "elapsed_s": 12.5}) + "\n")
    pack_model(runs / "compress-best", runs / "compress.pack", bits=8)
    return runs


def _bench(corpus: Path, base: Path, runs: Path, out: Path, *extra: str):
    cmd = [sys.executable, str(REPO / "benchmarks" / "device_runs.py"), "--corpus", str(corpus)]
    cmd += ["--base", str(base), "--runs", str(runs), "--work", str(out / "work")]
    cmd += ["--out-dir", str(out), "--name", "dr", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_device_runs_page_has_a_row_per_run_and_the_bar(tiny_corpus, tiny_base, tmp_path):
    runs = _device_outputs(tiny_base, tmp_path)
    r = _bench(tiny_corpus, tiny_base, runs, tmp_path, "--extra", "warp=fp32 + warp")
    assert r.returncode == 0, r.stderr[-2000:]
    page = (tmp_path / "dr.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith(("| fp32", "| QAT"))]
    assert len(rows) == 4 and rows[-1].startswith("| fp32 + warp |"), rows
    assert "| 8 in 12 s |" in rows[-1]  # the warp run's own metrics, not another run's
    assert "Issue 4's bar" in page
    data = json.loads((tmp_path / "dr.json").read_text())
    assert set(data["data"]["rows"]) >= {"fp32 + warp", "fp32, continued on the GPU"}


def test_device_runs_refuses_an_extra_run_without_its_package(tiny_corpus, tiny_base, tmp_path):
    runs = _device_outputs(tiny_base, tmp_path)
    r = _bench(tiny_corpus, tiny_base, runs, tmp_path, "--extra", "nosuch=label")
    assert r.returncode == 2 and "NAME-best" in r.stderr
    r = _bench(tiny_corpus, tiny_base, runs, tmp_path, "--extra", "warp")
    assert r.returncode == 2 and "NAME=LABEL" in r.stderr
