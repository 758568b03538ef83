"""scripts/probe_weight_drift.py: the weight-noise and checkpoint-average probes of issue 6."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
probe = importlib.import_module("probe_weight_drift")


def test_noise_is_seeded_relative_and_spares_normalisation():
    w = {"feat_mean": torch.ones(4), "w": torch.linspace(-1, 1, 1000), "n": torch.tensor(2.0)}
    a, b = probe.noisy(w, 0.05, 1), probe.noisy(w, 0.05, 1)
    assert torch.equal(a["w"], b["w"]) and not torch.equal(a["w"], probe.noisy(w, 0.05, 2)["w"])
    assert torch.equal(a["feat_mean"], w["feat_mean"]) and torch.equal(a["n"], w["n"])
    spread = (a["w"] - w["w"]).std() / w["w"].std()
    assert 0.04 < spread < 0.06
    assert torch.equal(probe.noisy(w, 0.0, 1)["w"], w["w"])


def test_checkpoint_average_replaces_only_the_averaged_tensors(tmp_path):
    ck = tmp_path / "ckpt"
    ck.mkdir()
    last = {"a": torch.zeros(2), "frozen": torch.ones(2)}
    save_file(last, str(ck / "last.safetensors"))
    assert list(probe.checkpoint_weights(tmp_path)) == ["last step"]
    save_file(
        {"mean.model.a": torch.full((2,), 3.0), "count": torch.tensor(7)},
        str(ck / "last.average.safetensors"),
    )
    got = probe.checkpoint_weights(tmp_path)
    avg = got["average of 7 steps"]
    assert torch.equal(avg["a"], torch.full((2,), 3.0))
    assert torch.equal(avg["frozen"], last["frozen"])
    assert torch.equal(got["last step"]["a"], last["a"])
