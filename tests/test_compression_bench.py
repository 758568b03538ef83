"""A tiny end-to-end run of benchmarks/compression.py (tiny model, a few steps, a few
utterances) so the script cannot rot unnoticed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
bench = importlib.import_module("compression")


def test_rows_have_unique_slugs():
    slugs = [r.slug for r in bench.rows()]
    assert len(set(slugs)) == len(slugs)
    assert all(s.replace("-", "").isalnum() for s in slugs)


def test_tiny_run_writes_page(tiny_corpus, tmp_path):
    from edgeasr.train.config import load_experiment
    from edgeasr.train.trainer import Trainer

    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.max_steps = 1, 2
    base = Trainer(cfg, tiny_corpus, tmp_path / "base").fit()
    only = ["fp32", "PTQ 4-bit", "QAT int8 + 50% sparse"]
    argv = [
        "--corpus", str(tiny_corpus), "--model", str(base), "--runs", str(tmp_path / "runs"),
        "--out-dir", str(tmp_path / "out"), "--max-utts", "3",
        "--rtf-utts", "2", "--sweep-repeats", "3", "--only", *only,
    ]  # fmt: skip
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "out" / "compression.json").read_text())["data"]
    assert [r["name"] for r in data["rows"]] == only
    combo = data["rows"][2]
    assert combo["zeros"] > 0.3 and combo["bytes"] < data["rows"][0]["bytes"]
    assert all(r["kernels_agree"] for r in data["rows"])
    assert (tmp_path / "out" / "compression.png").stat().st_size > 1000
    md = (tmp_path / "out" / "compression.md").read_text()
    assert "Where skipping zeros wins" in md
