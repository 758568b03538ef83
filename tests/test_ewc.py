"""Elastic weight consolidation: the Fisher estimate, the penalty, and its use in a fine-tune."""

from pathlib import Path

import pytest
import torch
from torch import nn

from edgeasr.compress.training import diff_experiment
from edgeasr.losses.ewc import EWCPenalty, diagonal_fisher
from edgeasr.train.config import TrainConfig, load_experiment
from edgeasr.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def _toy() -> tuple[nn.Linear, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A linear model whose data only ever uses input 0: the weights of input 1 are free."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1, bias=False)
    x = torch.zeros(16, 2)
    x[:, 0] = torch.randn(16)
    y = torch.randn(16, 1)
    return model, [(x[:8], y[:8]), (x[8:], y[8:])]


def _mse(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def test_fisher_is_normalised_and_zero_where_the_data_does_not_look():
    model, batches = _toy()
    model.train()
    fisher = diagonal_fisher(model, batches, _mse)
    w = fisher["weight"]
    assert w.shape == model.weight.shape
    assert float(w.mean()) == pytest.approx(1.0)
    assert float(w[0, 1]) == 0.0 and float(w[0, 0]) > 0.0
    # the model is left as it was
    assert model.weight.grad is None and model.training
    with pytest.raises(ValueError, match="no batches"):
        diagonal_fisher(model, [], _mse)
    with pytest.raises(ValueError, match="zero"):
        diagonal_fisher(model, [(torch.zeros(4, 2), torch.zeros(4, 1))], _mse)


def test_penalty_prices_important_weights_and_has_the_ewc_gradient():
    model, batches = _toy()
    fisher = diagonal_fisher(model, batches, _mse)
    ewc = EWCPenalty(model, fisher, weight=3.0)
    assert float(ewc(model).detach()) == 0.0  # at the anchor
    with torch.no_grad():
        model.weight[0, 1] += 5.0  # a weight the old data does not use: free
    assert float(ewc(model).detach()) == 0.0
    with torch.no_grad():
        model.weight[0, 0] += 0.5
    pen = ewc(model)
    assert float(pen.detach()) == pytest.approx(0.5 * 3.0 * float(fisher["weight"][0, 0]) * 0.25)
    model.zero_grad()
    pen.backward()
    want = 3.0 * fisher["weight"] * (model.weight.detach() - ewc.anchor["weight"])
    torch.testing.assert_close(model.weight.grad, want)
    with pytest.raises(ValueError, match="> 0"):
        EWCPenalty(model, fisher, weight=0.0)
    with pytest.raises(ValueError, match="no parameters"):
        EWCPenalty(nn.Linear(2, 1), {"other": torch.ones(1)}, weight=1.0)


def test_config_validates_ewc():
    with pytest.raises(ValueError, match="ewc_weight"):
        TrainConfig(ewc_weight=-1.0)
    with pytest.raises(ValueError, match="ewc_weight"):
        TrainConfig(ewc_weight=float("nan"))
    with pytest.raises(ValueError, match="ewc_utts"):
        TrainConfig(ewc_weight=1.0, ewc_utts=0)
    assert load_experiment(REPO / "configs" / "update-ewc.yaml").train.ewc_weight > 0


def test_sparse_update_with_ewc_stays_closer_where_the_base_data_cares(
    tiny_base, tiny_corpus, tiny_updates, tmp_path
):
    """The same sparse-diff fine-tune with and without a strong EWC term: with it, the weights
    the base corpus depends on (Fisher-weighted distance from the base) move far less."""

    def run(ewc_weight: float, name: str) -> Trainer:
        cfg = diff_experiment(REPO / "configs" / "update.yaml", tiny_base, "sparse", 0.5)
        cfg.train.epochs, cfg.train.max_steps, cfg.train.ewc_utts = 5, 5, 6
        cfg.train.replay_corpus, cfg.train.ewc_weight = str(tiny_corpus), ewc_weight
        trainer = Trainer(cfg, tiny_updates / "v1", tmp_path / name)
        trainer.fit()
        return trainer

    plain, ewc = run(0.0, "plain"), run(1e3, "ewc")
    assert plain.ewc is None and ewc.ewc is not None
    assert len(plain.train_set) == len(ewc.train_set)  # EWC alone adds no replay to the epochs
    assert len(ewc._epoch_set(0)) == len(ewc.train_set)
    # the same Fisher-weighted distance from the base for both models
    moved_plain = float(ewc.ewc(plain.model).detach())
    moved_ewc = float(ewc.ewc(ewc.model).detach())
    assert 0.0 < moved_ewc < 0.5 * moved_plain
    cfg = diff_experiment(REPO / "configs" / "update.yaml", tiny_base, "sparse", 0.5)
    cfg.train.replay_corpus, cfg.train.ewc_weight = str(tmp_path / "nowhere"), 1.0
    with pytest.raises(ValueError, match="has no train split"):
        Trainer(cfg, tiny_updates / "v1", tmp_path / "bad").fit()


def test_ewc_anchor_is_another_package(tiny_base, tiny_corpus, tiny_updates, tmp_path):
    """``ewc_anchor`` prices the distance from that package's weights (a chain of updates
    anchored at the original model), not from the starting model; its tokenizer must match."""
    from conftest import make_untrained_package

    from edgeasr.model.checkpoint import load_package, save_package

    model, tok, _ = load_package(tiny_base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    save_package(model, tok, tmp_path / "elsewhere")

    def trainer(anchor: str, name: str) -> Trainer:
        cfg = diff_experiment(REPO / "configs" / "update.yaml", tiny_base, "sparse", 0.5)
        cfg.train.epochs, cfg.train.max_steps, cfg.train.ewc_utts = 1, 1, 6
        cfg.train.replay_corpus, cfg.train.ewc_weight = str(tiny_corpus), 1.0
        cfg.train.ewc_anchor = anchor
        return Trainer(cfg, tiny_updates / "v1", tmp_path / name)

    own, far = trainer("", "own"), trainer(str(tmp_path / "elsewhere"), "far")
    own.fit()
    far.fit()
    start = load_package(tiny_base)[0]
    assert float(own.ewc(start).detach()) == 0.0  # anchored where the update started
    assert float(far.ewc(start).detach()) > 0.0  # anchored at the other package
    assert float(far.ewc(model).detach()) == 0.0
    bad = make_untrained_package(tmp_path / "other-tok", ["call anna", "play jazz"])
    with pytest.raises(ValueError, match="another tokenizer"):
        trainer(str(bad), "bad").fit()
