"""scripts/branch_tensors.py: a branched package travels as its own tensors and comes back whole."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
bt = importlib.import_module("branch_tensors")


def test_save_and_rebuild_give_the_same_tensors(tmp_path):
    from edgeasr.model.amortized import start_weights, transplant
    from edgeasr.model.checkpoint import load_package, save_package
    from edgeasr.model.transducer import Transducer
    from edgeasr.tokenizer import train_tokenizer
    from edgeasr.train.config import load_experiment

    tok = train_tokenizer(["call jonathan", "play some jazz", "turn it down"] * 20, 30)
    doc = yaml.safe_load((REPO / "configs" / "tiny-amortized.yaml").read_text())
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(doc))
    doc["model"]["branches"] = doc["model"]["branches"][:1]
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(doc))
    torch.manual_seed(0)
    one = load_experiment(tmp_path / "one.yaml").model
    one.vocab_size = tok.vocab_size
    save_package(Transducer(one), tok, tmp_path / "base")
    two = load_experiment(tmp_path / "two.yaml").model
    two.vocab_size = tok.vocab_size
    model = Transducer(two)
    transplant(model, start_weights(model, load_package(tmp_path / "base")[0]))
    save_package(model, tok, tmp_path / "trained")
    bt.main(["save", "--package", str(tmp_path / "trained"), "--out", str(tmp_path / "t.st")])
    args = ["--base", str(tmp_path / "base"), "--config", str(tmp_path / "two.yaml")]
    bt.main(["rebuild", *args, "--tensors", str(tmp_path / "t.st"), "--out", str(tmp_path / "r")])
    a = load_package(tmp_path / "trained")[0].state_dict()
    b = load_package(tmp_path / "r")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # tensors that do not fill what the base leaves fresh are refused
    bt.main(["save", "--package", str(tmp_path / "trained"), "--out", str(tmp_path / "x.st"),
             "--prefix", "encoder.arbitrator."])  # fmt: skip
    with pytest.raises(SystemExit, match="does not fill"):
        bt.main(
            ["rebuild", *args, "--tensors", str(tmp_path / "x.st"), "--out", str(tmp_path / "q")]
        )
