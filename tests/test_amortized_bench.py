"""A tiny end-to-end run of benchmarks/amortized.py (tiny models, a few steps, a few
utterances) so the script cannot rot unnoticed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
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
    # amnet trained elsewhere (here: the first run's): its package and routing are used as they
    # are, named on the page, and nothing is trained for it
    other = argv[:5] + [str(tmp_path / "runs2")] + argv[6:]
    other += ["--name", "other", "--trained", f"amnet={tmp_path / 'runs' / 'amnet'}"]
    assert bench.main(other) == 0
    assert not (tmp_path / "runs2" / "amnet" / "best").exists()
    page = (tmp_path / "out" / "other.md").read_text()
    assert f"amnet = trained outside this command (run `{tmp_path / 'runs' / 'amnet'}`" in page
    again = json.loads((tmp_path / "out" / "other.json").read_text())["data"]["results"]
    assert again["amnet"]["test"] == res["amnet"]["test"]


def test_trained_elsewhere_is_checked(tmp_path):
    with pytest.raises(SystemExit, match="amnet=RUN or amnet-noam=RUN"):
        bench.trained_runs([f"full={tmp_path}"])
    with pytest.raises(SystemExit, match="has no best/manifest.json, metrics.jsonl"):
        bench.trained_runs([f"amnet={tmp_path}"])


def test_full_adopts_a_trained_lstm_package_unchanged(tmp_path):
    """``epochs: 0``: the full model is the source package's encoder in the branched layout."""
    import torch

    from edgeasr.model.checkpoint import load_package, save_package
    from edgeasr.model.config import ModelConfig
    from edgeasr.model.transducer import Transducer
    from edgeasr.tokenizer import train_tokenizer
    from edgeasr.train.config import load_experiment

    tok = train_tokenizer(["call jonathan", "play some jazz", "turn it down"] * 20, 30)
    lstm_cfg = ModelConfig(
        vocab_size=tok.vocab_size, stack=4, encoder_dim=16, lstm_hidden=16, num_layers=2,
        reduce_after=1, predictor_dim=16, joiner_dim=16, ctc_weight=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    source = Transducer(lstm_cfg).eval()
    save_package(source, tok, tmp_path / "lstm")
    model = {
        "stack": 8, "reduce_after": 0, "encoder_dim": 16, "predictor_dim": 16,
        "joiner_dim": 16, "ctc_weight": 0.3, "encoder_type": "amortized",
        "branches": [{"hidden": 16, "layers": 1, "own_input": True, "split": 2, "sub_layers": 1}],
    }  # fmt: skip
    doc = {"name": "full", "model": model, "train": {"epochs": 0}}
    doc["train"]["init_weights_from"] = str(tmp_path / "lstm")
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_experiment(tmp_path / "full.yaml")
    best = bench.train("full", cfg, tmp_path / "no-corpus-needed", tmp_path / "runs")
    adopted = load_package(best)[0].eval()
    x, lens = torch.randn(1, 8 * 9, 80), torch.tensor([8 * 9])
    with torch.no_grad():
        assert torch.allclose(adopted.encode(x, lens)[0], source.encode(x, lens)[0], atol=1e-5)
    # a layout the source cannot fill completely is refused, not half-initialised
    model["branches"].append({"hidden": 8, "layers": 1, "own_input": True})
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="does not fill"):
        bench.train("two", load_experiment(tmp_path / "two.yaml"), tmp_path, tmp_path / "runs")
