"""Lattice distillation between transducers: the per-node KL against a direct computation from
the full distributions, its masking and gradient, and distillation in training."""

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml

from edgeasr.losses.distill import lattice_kd_loss
from edgeasr.losses.rnnt import _gather_logprobs, joint_logprobs


def direct_kd(s_logits, t_logits, frame_lens, label_lens) -> list[float]:
    """The same quantity node by node, in float64."""
    out = []
    for b in range(s_logits.shape[0]):
        T, U = int(frame_lens[b]), int(label_lens[b])
        total = 0.0
        for t in range(T):
            for u in range(U + 1):
                ps = torch.softmax(s_logits[b, t, u].double(), -1).tolist()
                pt = torch.softmax(t_logits[b, t, u].double(), -1).tolist()
                total += sum(a * (math.log(a) - math.log(c)) for a, c in zip(pt, ps, strict=True))
        out.append(total / (U + 1))
    return out


def kd(s_logits, t_logits, targets, frame_lens, label_lens):
    return lattice_kd_loss(
        _gather_logprobs(s_logits, targets, 0, t_logits).kl, frame_lens, label_lens
    )


def test_kd_matches_direct_computation_and_ignores_padding():
    torch.manual_seed(0)
    B, T, U, V = 3, 5, 3, 7
    targets = torch.randint(1, V, (B, U))
    frame_lens = torch.tensor([5, 3, 4])
    label_lens = torch.tensor([3, 1, 0])
    s_logits = torch.randn(B, T, U + 1, V)
    t_logits = torch.randn(B, T, U + 1, V)
    got = kd(s_logits, t_logits, targets, frame_lens, label_lens)
    want = direct_kd(s_logits, t_logits, frame_lens, label_lens)
    assert got.tolist() == pytest.approx(want, rel=1e-4)
    # whatever lies outside each utterance's lattice changes nothing
    s2, t2 = s_logits.clone(), t_logits.clone()
    s2[1, 3:], t2[1, :, 2:] = 50.0, -50.0
    again = kd(s2, t2, targets, frame_lens, label_lens)
    assert again[1].item() == pytest.approx(got[1].item(), rel=1e-5)
    # a student that is the teacher has nothing to learn
    assert kd(t_logits, t_logits, targets, frame_lens, label_lens).abs().max().item() < 1e-5


def test_chunked_teacher_lattice_matches_whole_batch():
    """The KL made a sub-batch at a time under checkpointing = the whole lattice at once."""
    torch.manual_seed(4)
    B, T, U, J, V = 4, 6, 2, 5, 8
    joiner, t_joiner = (torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(J, V)) for _ in "st")
    enc, dec = torch.randn(B, T, J, requires_grad=True), torch.randn(B, U + 1, J)
    teacher = (lambda e, d: t_joiner(e + d), torch.randn(B, T, J), torch.randn(B, U + 1, J))
    targets = torch.randint(1, V, (B, U))
    runs = []
    for max_elements in (1 << 30, T * (U + 1) * V):  # whole batch vs one utterance a piece
        enc.grad = None
        lat = joint_logprobs(
            lambda e, d: joiner(e + d), enc, dec, targets, V, 0, max_elements, teacher
        )
        lat.kl.sum().backward()
        runs.append((lat.kl.detach(), enc.grad.clone()))
    assert torch.allclose(runs[0][0], runs[1][0], atol=1e-6)
    assert torch.allclose(runs[0][1], runs[1][1], atol=1e-6)
    assert not any(p.grad is not None for p in t_joiner.parameters())


def test_kd_gradient_moves_the_student_to_the_teacher():
    torch.manual_seed(1)
    B, T, U, V = 2, 4, 2, 5
    targets = torch.randint(1, V, (B, U))
    lens = (torch.tensor([4, 3]), torch.tensor([2, 1]))
    teacher = torch.randn(B, T, U + 1, V, dtype=torch.float64)
    logits = torch.randn(B, T, U + 1, V, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: kd(x, teacher, targets, *lens), (logits,))
    start = kd(logits, teacher, targets, *lens).sum()
    opt = torch.optim.SGD([logits], lr=1.0)
    for _ in range(200):
        opt.zero_grad()
        kd(logits, teacher, targets, *lens).sum().backward()
        opt.step()
    end = kd(logits, teacher, targets, *lens).sum()
    assert end.item() < 0.05 * start.item()


def test_transducer_adds_the_weighted_distillation_term(tiny_base):
    """A teacher identical to the student adds nothing; a different one adds weight × KL; a
    teacher with another frame rate is refused."""
    from edgeasr.model.checkpoint import load_package

    model, tok, _ = load_package(tiny_base)
    model.eval()
    torch.manual_seed(2)
    feats = torch.randn(2, 120, model.cfg.num_mel_bins)
    feat_lens = torch.tensor([120, 90])
    ids = [tok.encode("turn on the light"), tok.encode("call anna")]
    targets = torch.zeros(2, max(map(len, ids)), dtype=torch.long)
    for i, seq in enumerate(ids):
        targets[i, : len(seq)] = torch.tensor(seq)
    target_lens = torch.tensor([len(s) for s in ids])
    args = (feats, feat_lens, targets, target_lens)
    plain = model(*args).item()
    twin = copy.deepcopy(model)
    assert model(*args, teacher=twin, distill_weight=3.0).item() == pytest.approx(plain, abs=1e-4)
    with torch.no_grad():
        for p in twin.joiner.parameters():
            p.add_(0.5 * torch.randn_like(p))
    one = model(*args, teacher=twin, distill_weight=1.0).item() - plain
    three = model(*args, teacher=twin, distill_weight=3.0).item() - plain
    assert one > 1e-3 and three == pytest.approx(3 * one, rel=1e-3)
    # utterances outside the mask add nothing; the mean still runs over the whole batch
    none = torch.tensor([False, False])
    assert model(*args, teacher=twin, distill_weight=1.0, distill_mask=none).item() == plain
    only_first = torch.tensor([True, False])
    first = model(*args, teacher=twin, distill_weight=1.0, distill_mask=only_first).item() - plain
    assert 0 < first < one
    coarser = copy.deepcopy(model)  # as if it ran at half the frame rate
    coarser.encode = lambda *a: tuple(x[:, ::2] if i == 0 else x for i, x in enumerate(
        twin.encode(*a)))  # fmt: skip
    with pytest.raises(ValueError, match="teacher encoder output"):
        model(*args, teacher=coarser, distill_weight=1.0)
    # label_weight scales the losses on the transcript (RNN-T and CTC) and leaves the KL alone
    both = model(*args, teacher=twin, distill_weight=1.0).item()
    kd_only = model(*args, teacher=twin, distill_weight=1.0, label_weight=0.0).item()
    assert kd_only == pytest.approx(one, rel=1e-4)
    half = model(*args, teacher=twin, distill_weight=1.0, label_weight=0.5).item()
    assert half == pytest.approx(kd_only + 0.5 * plain, rel=1e-4)
    assert both == pytest.approx(kd_only + plain, rel=1e-4)


def test_update_distils_from_the_model_it_updates(tiny_corpus, tiny_base, tmp_path):
    """distill_weight in an update config makes the base model the teacher; the trainer refuses
    a teacher with another tokenizer and a weight without a teacher."""
    from conftest import make_untrained_package

    from edgeasr.compress.training import compression_experiment, diff_experiment
    from edgeasr.train.config import TrainConfig
    from edgeasr.train.data import collate
    from edgeasr.train.trainer import Trainer

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    assert diff_experiment(tiny, tiny_base, "sparse", 0.1).train.distill_from == ""  # off
    d = yaml.safe_load(tiny.read_text())
    d["train"]["distill_weight"] = 0.5
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(d))
    cfg = diff_experiment(tmp_path / "kd.yaml", tiny_base, "sparse", 0.1)
    assert cfg.train.distill_from == str(tiny_base)
    # a compression fine-tune distils from the model it compresses
    comp = compression_experiment(tmp_path / "kd.yaml", tiny_base, 8, 0.5, (8, 1))
    assert comp.train.distill_from == str(tiny_base)
    assert compression_experiment(tiny, tiny_base, 8, 0.5).train.distill_from == ""
    cfg.train.epochs, cfg.train.max_steps, cfg.train.ctc_warmup_steps = 1, 2, 0
    trainer = Trainer(cfg, tiny_corpus, tmp_path / "kd")
    trainer.fit()
    assert trainer.teacher is not None
    assert not any(p.requires_grad for p in trainer.teacher.parameters())

    # distill_on: replay distils exactly the utterances rehearsed from the replay corpus
    cfg.train.distill_on, cfg.train.replay_utts = "replay", 3
    cfg.train.replay_corpus = str(tiny_corpus)
    trainer = Trainer(cfg, tiny_corpus, tmp_path / "kd-replay")
    trainer.fit()
    epoch_set = trainer._epoch_set(0)
    batch = collate(epoch_set, list(range(len(epoch_set))), trainer._encode_text)
    mask = trainer._distill_mask(epoch_set, batch).tolist()
    assert mask == [i >= len(trainer.train_set.utts) for i in range(len(epoch_set))]
    assert sum(mask) == 3
    cfg.train.distill_on = "all"

    other = make_untrained_package(tmp_path / "other", ["a quite different vocabulary here"])
    cfg.train.distill_from = str(other)
    with pytest.raises(ValueError, match="another tokenizer"):
        Trainer(cfg, tiny_corpus, tmp_path / "kd-other").fit()
    cfg.train.distill_from = ""
    with pytest.raises(ValueError, match="distill_from names no model"):
        Trainer(cfg, tiny_corpus, tmp_path / "kd-none").fit()
    for bad in (-1.0, float("inf")):
        with pytest.raises(ValueError, match="distill_weight must be"):
            TrainConfig(distill_weight=bad)
    with pytest.raises(ValueError, match="distill_on must be"):
        TrainConfig(distill_on="new")
    with pytest.raises(ValueError, match="needs a replay sample"):
        TrainConfig(distill_weight=1.0, distill_on="replay")
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="label_weight must be"):
            TrainConfig(label_weight=bad)
    with pytest.raises(ValueError, match="nothing would be learnt"):
        TrainConfig(label_weight=0.0)
    with pytest.raises(ValueError, match="some utterances teach nothing"):
        TrainConfig(label_weight=0.0, distill_weight=1.0, distill_on="replay", replay_utts=3)
    assert TrainConfig(label_weight=0.0, distill_weight=1.0).label_weight == 0.0


def test_every_shipped_config_loads():
    """A misspelt key (distill_weigth) or a bad value in any configs/ file fails here, not an
    hour into a run."""
    from edgeasr.train.config import load_experiment

    root = Path(__file__).resolve().parents[1] / "configs"
    configs = sorted(root.rglob("*.yaml"))
    assert len(configs) > 10
    for path in configs:
        load_experiment(path)
    assert load_experiment(root / "update-distill.yaml").train.distill_on == "replay"
