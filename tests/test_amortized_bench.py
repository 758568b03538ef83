"""A tiny end-to-end run of benchmarks/amortized.py (tiny models, a few steps, a few
utterances) so the script cannot rot unnoticed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
bench = importlib.import_module("amortized")


def _configs(out: Path) -> Path:
    out.mkdir()
    base = yaml.safe_load((REPO / "configs" / "tiny-amortized.yaml").read_text())
    base["train"].update(epochs=1, max_steps=2)
    full = json.loads(json.dumps(base))
    full["model"]["branches"] = full["model"]["branches"][:1]
    full["model"].update(compute_weight=0.0, amortization_weight=0.0)
    noam = json.loads(json.dumps(base))
    noam["model"]["amortization_weight"] = 0.0
    for name, cfg in (("full", full), ("amnet", base), ("amnet-noam", noam)):
        (out / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return out


def test_tiny_run_writes_page(tiny_corpus, tmp_path):
    argv = [
        "--corpus", str(tiny_corpus), "--configs", str(_configs(tmp_path / "configs")),
        "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), "--max-utts", "3",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "out" / "amortized.json").read_text())["data"]
    res = data["results"]
    assert set(res) == {"full", "amnet", "amnet-noam", "lowrank", "sparse"}
    full = res["full"]["test"]["mean_macs_per_frame"]
    target = res["amnet"]["test"]["mean_macs_per_frame"]
    for name in ("lowrank", "sparse"):  # matched to the branched model's average cost
        assert abs(res[name]["test"]["mean_macs_per_frame"] - target) < 0.2 * full
    assert res["full"]["test"]["fast_share"] == 0.0
    assert len(data["routing"]["amnet"]) == 1
    assert (tmp_path / "out" / "amortized.png").stat().st_size > 1000
    assert "## Bars (issue 5)" in (tmp_path / "out" / "amortized.md").read_text()
    # a second run reuses every trained model and measurement
    assert bench.main(argv) == 0
