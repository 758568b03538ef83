"""Trainer end to end on a tiny synthetic corpus: train, resume, DDP, decode, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from edgeasr.model.checkpoint import load_package
from edgeasr.train.config import TrainConfig, load_experiment
from edgeasr.train.data import make_batches
from edgeasr.train.trainer import Trainer, lr_factor

REPO = Path(__file__).resolve().parents[1]


def test_lr_schedule_warms_up_and_decays():
    f = [lr_factor(s, 10, 100, 0.1) for s in range(100)]
    assert f[0] < f[5] < f[9] == 1.0
    assert f[50] < 1.0 and abs(f[99] - 0.1) < 0.01


def test_lr_schedule_follows_a_time_budget():
    """Halfway through the time budget the LR is at the cosine midpoint whatever the step."""
    mid = lr_factor(20, 10, 10_000, 0.0, time_progress=0.5)
    assert abs(mid - 0.5) < 1e-6
    assert lr_factor(20, 10, 10_000, 0.0, time_progress=1.0) < 1e-6
    # warm-up is by steps, and the step count still wins when it is further along
    assert lr_factor(5, 10, 100, 0.0, time_progress=0.9) == 0.6
    assert lr_factor(99, 10, 100, 0.1, time_progress=0.1) < 0.11


def test_time_budget_stops_training_and_still_ships_a_model(tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs = 50
    cfg.train.time_budget_s = 1e-3
    run = tmp_path / "run"
    best = Trainer(cfg, tiny_corpus, run).fit()
    assert (best / "manifest.json").exists()
    state = json.loads((run / "ckpt" / "last.json").read_text())
    assert state["step"] == 1 and state["elapsed_s"] >= 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if "dev_wer" in r] == [1]


def test_eval_every_evaluates_every_n_epochs_and_after_the_last(tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.eval_every, cfg.train.max_train_utts = 5, 2, 8
    run = tmp_path / "run"
    Trainer(cfg, tiny_corpus, run).fit()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if "dev_wer" in r] == [2, 4, 5]
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every=0)


def test_pruning_under_a_time_budget_reaches_its_target(tiny_corpus, tmp_path, monkeypatch):
    """With a wall-clock budget the pruning schedule follows the clock, like the LR: a run
    that has far more epochs than the budget allows still ends at the target sparsity."""
    from edgeasr.compress.training import CompressionConfig

    base = tmp_path / "base"
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.max_steps = 1, 2
    best = Trainer(cfg, tiny_corpus, base).fit()
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.ctc_warmup_steps, cfg.train.time_budget_s = 1000, 0, 100.0
    cfg.train.compression = CompressionConfig.from_dict(
        {"init_from": str(best), "prune": {"target": 0.5, "end_frac": 0.6, "every": 5}}
    )
    clock = iter(range(0, 10_000, 9))  # every step "takes" 9 s: the budget ends at step ~11
    monkeypatch.setattr(Trainer, "_elapsed", lambda self: float(next(clock)))
    run = tmp_path / "pruned"
    out = Trainer(cfg, tiny_corpus, run).fit()
    _, _, manifest = load_package(out)
    assert manifest["info"]["compression"]["sparsity"] == pytest.approx(0.5, abs=0.03)
    assert json.loads((run / "ckpt" / "last.json").read_text())["step"] < 20


def test_batches_are_deterministic_and_cover_everything(tiny_corpus):
    from edgeasr.train.data import FeatureCache, cuts_path

    cache = FeatureCache.build(cuts_path(tiny_corpus, "train"), tiny_corpus / "feats")
    a = make_batches(cache.utts, 3000, seed=1, epoch=0)
    b = make_batches(cache.utts, 3000, seed=1, epoch=0)
    c = make_batches(cache.utts, 3000, seed=1, epoch=1)
    assert a == b and a != c
    assert sorted(i for batch in a for i in batch) == list(range(len(cache)))
    for batch in a:
        longest = max(cache.utts[i].num_frames for i in batch)
        assert len(batch) == 1 or longest * len(batch) <= 3000


def test_train_writes_run_dir_and_resume_continues(tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs = 1
    cfg.train.max_steps = 3
    run = tmp_path / "run"
    best = Trainer(cfg, tiny_corpus, run).fit()
    assert (best / "manifest.json").exists()
    state = json.loads((run / "ckpt" / "last.json").read_text())
    assert state["step"] == 3
    before = load_file(str(run / "ckpt" / "last.safetensors"))
    # resume: a second fit with more steps starts from step 3, not from scratch
    cfg2 = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg2.train.epochs = 2
    cfg2.train.max_steps = 5
    Trainer(cfg2, tiny_corpus, run).fit()
    state2 = json.loads((run / "ckpt" / "last.json").read_text())
    assert state2["step"] == 5
    after = load_file(str(run / "ckpt" / "last.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("dev_wer" in r for r in lines)
    assert (run / "config.yaml").exists() and (run / "git_commit").exists()


def test_ddp_two_cpu_processes(tiny_corpus, tmp_path):
    """torchrun with 2 gloo processes trains a few steps and writes one checkpoint."""
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "edgeasr.cli",
        "train",
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--corpus",
        str(tiny_corpus),
        "--out",
        str(run),
        "--max-steps",
        "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((run / "ckpt" / "last.json").read_text())
    assert state["step"] == 2
    assert (run / "best" / "manifest.json").exists()


@pytest.mark.slow
def test_decode_and_transcribe_cli(tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.max_steps = 2
    best = Trainer(cfg, tiny_corpus, tmp_path / "run").fit()
    out = tmp_path / "dec"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeasr.cli",
            "decode",
            "--corpus",
            str(tiny_corpus),
            "--split",
            "test",
            "--model",
            str(best),
            "--out",
            str(out),
            "--beam",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_utts"] > 0 and 0.0 <= summary["wer"]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == summary["num_utts"] and all("nbest" in x for x in rows)


def test_tune_decoding_writes_manifest_and_refuses_test_split(tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.max_steps = 2
    best = Trainer(cfg, tiny_corpus, tmp_path / "run").fit()
    base = [
        sys.executable,
        "-m",
        "edgeasr.cli",
        "tune-decoding",
        "--corpus",
        str(tiny_corpus),
        "--model",
        str(best),
        "--penalties",
        "0,1.5",
        "--beam",
        "2",
    ]
    r = subprocess.run([*base, "--split", "test"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "not on a test split" in r.stderr
    r = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    decoding = json.loads((best / "manifest.json").read_text())["decoding"]
    assert decoding["blank_penalty"] in (0.0, 1.5) and decoding["tuned_on"] == "dev"
    from edgeasr.decode import Transcriber

    assert Transcriber.from_dir(best).blank_penalty == decoding["blank_penalty"]
    assert Transcriber.from_dir(best, blank_penalty=0.25).blank_penalty == 0.25
    assert "ctc_weight" not in decoding and not Transcriber.from_dir(best).rescorer.enabled

    # the second pass: CTC weight x word bonus over one first pass, recorded beside the penalty
    second = ["--ctc-weights", "0,0.5", "--word-bonuses", "0,1", "--rescore-beam", "3"]
    r = subprocess.run(base + second, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    decoding = json.loads((best / "manifest.json").read_text())["decoding"]
    assert decoding["ctc_weight"] in (0.0, 0.5) and decoding["word_bonus"] in (0.0, 1.0)
    assert decoding["rescoring"]["beam"] == 3 and len(decoding["rescoring"]["sweep"]) == 4
    tr = Transcriber.from_dir(best)
    assert decoding["beam"] == 3 and tr.beam == 3  # decoding defaults to the tuned beam
    assert Transcriber.from_dir(best, beam=5).beam == 5
    assert (tr.rescorer.ctc_weight, tr.rescorer.word_bonus) == (
        decoding["ctc_weight"],
        decoding["word_bonus"],
    )
    r = subprocess.run([*base, "--ctc-weights", "0,x"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "comma-separated" in r.stderr


def test_mixed_cache_finds_features_even_when_ids_collide():
    import numpy as np

    from edgeasr.train.data import FeatureCache, MixedCache, Utterance

    a = FeatureCache(np.arange(10 * 2, dtype=np.float16).reshape(10, 2), [])
    b = FeatureCache(-np.arange(6 * 2, dtype=np.float16).reshape(6, 2), [])
    a.utts = [Utterance("x", 0, 4, "a", "s"), Utterance("y", 4, 6, "a", "s")]
    b.utts = [Utterance("x", 2, 4, "b", "s")]  # same id as in a, other audio
    mixed = MixedCache([(a, a.utts), (b, b.utts)])
    assert [u.id for u in mixed.utts] == ["x", "y", "x"]
    for u, (cache, orig) in zip(
        mixed.utts, [(a, a.utts[0]), (a, a.utts[1]), (b, b.utts[0])], strict=True
    ):
        np.testing.assert_array_equal(mixed.features(u), cache.features(orig))


def test_fresh_replay_draws_a_new_sample_each_epoch(tiny_updates, tiny_corpus, tmp_path):
    """An update fine-tune rehearses a different sample of the base corpus every epoch; the
    sample depends only on (seed, epoch), so a resumed run sees the same one."""
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.max_steps = 2, 3
    cfg.train.replay_corpus, cfg.train.replay_utts = str(tiny_corpus), 5
    trainer = Trainer(cfg, tiny_updates / "v1", tmp_path / "run")
    trainer.fit()
    own = {u.id for u in trainer.train_set.utts}
    base_ids = {u.id for u in trainer.replay_set.utts}
    e0, e1 = trainer._epoch_set(0), trainer._epoch_set(1)
    assert len(e0) == len(e1) == len(own) + 5
    r0, r1 = [u.id for u in e0.utts[len(own) :]], [u.id for u in e1.utts[len(own) :]]
    assert set(r0) <= base_ids and set(r1) <= base_ids and r0 != r1
    assert [u.id for u in trainer._epoch_set(1).utts] == [u.id for u in e1.utts]
    cfg.train.replay_corpus = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="has no train split"):
        Trainer(cfg, tiny_updates / "v1", tmp_path / "run2").fit()


def test_weight_average_is_the_running_mean_and_swaps_back():
    from edgeasr.train.averaging import WeightAverage

    w = torch.nn.Parameter(torch.zeros(3))
    avg = WeightAverage({"w": w})
    with avg.swapped_in():  # nothing averaged yet: the weights stay
        assert torch.equal(w.detach(), torch.zeros(3))
    for v in (1.0, 2.0, 6.0):
        with torch.no_grad():
            w.fill_(v)
        avg.update()
    with avg.swapped_in():
        assert torch.allclose(w.detach(), torch.full((3,), 3.0))
    assert torch.equal(w.detach(), torch.full((3,), 6.0))  # training goes on from its own
    again = WeightAverage({"w": torch.nn.Parameter(torch.zeros(3))})
    again.load_state_dict(avg.state_dict())
    assert again.count == 3 and torch.allclose(again.mean["w"], avg.mean["w"])
    with pytest.raises(ValueError, match="does not match"):
        WeightAverage({"v": w}).load_state_dict(avg.state_dict())


def test_average_last_epochs_ships_the_mean_of_the_last_epochs_steps(
    tiny_corpus, tmp_path, monkeypatch
):
    """The package is the mean of the weights after every step of the last epoch (not the
    last step's weights), and a run interrupted inside that epoch resumes the same mean."""
    from edgeasr.train import averaging

    seen: list[dict[str, torch.Tensor]] = []
    update = averaging.WeightAverage.update

    def recording_update(self):
        seen.append({n: t.detach().clone() for n, t in self.tensors.items()})
        update(self)

    monkeypatch.setattr(averaging.WeightAverage, "update", recording_update)
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.average_last_epochs, cfg.train.max_train_utts = 2, 1, 8
    cfg.train.max_frames = 600  # a few batches per epoch
    run = tmp_path / "run"
    best = Trainer(cfg, tiny_corpus, run).fit()
    steps = json.loads((run / "ckpt" / "last.json").read_text())["step"]
    manifest = json.loads((best / "manifest.json").read_text())
    assert manifest["info"]["averaged_steps"] == len(seen) == steps // 2 > 1
    shipped = load_file(str(best / "model.safetensors"))
    last = load_file(str(run / "ckpt" / "last.safetensors"))
    for key in seen[0]:
        name = key.removeprefix("model.")
        mean = torch.stack([s[key] for s in seen]).mean(0)
        assert torch.allclose(shipped[name], mean, atol=1e-6), name
    assert not torch.allclose(shipped["joiner.out.weight"], last["joiner.out.weight"])
    # killed inside the averaged epoch (checkpoints every step), then resumed: the mean
    # carries on from the checkpoint instead of restarting
    calls = []

    def dying_update(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        update(self)

    monkeypatch.setattr(averaging.WeightAverage, "update", dying_update)
    cfg.train.checkpoint_every = 1
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tiny_corpus, tmp_path / "cut").fit()
    resumed = Trainer(cfg, tiny_corpus, tmp_path / "cut").fit()
    info = json.loads((resumed / "manifest.json").read_text())["info"]
    assert info["averaged_steps"] == steps // 2
    with pytest.raises(ValueError, match="average_last_epochs"):
        TrainConfig(epochs=2, average_last_epochs=3)
    cfg.train.epochs = 0  # an override after loading (the CLI's --epochs) is checked too
    with pytest.raises(ValueError, match="average_last_epochs"):
        Trainer(cfg, tiny_corpus, tmp_path / "short").fit()
    assert not (tmp_path / "short").exists()
    with pytest.raises(ValueError, match="fixed number of epochs"):
        TrainConfig(average_last_epochs=1, time_budget_s=10.0)


def test_an_averaged_sparse_diff_is_as_sparse_as_the_plain_one(tiny_base, tiny_updates, tmp_path):
    """Averaging a sparse diff's weights ships them through the compressor's export, so the
    change from the base keeps the diff's density even where the mask moved while averaging."""
    from edgeasr.compress.sparsity import compressible_weights
    from edgeasr.compress.training import diff_experiment

    cfg = diff_experiment(REPO / "configs" / "update.yaml", tiny_base, "sparse", 0.25)
    cfg.train.epochs, cfg.train.average_last_epochs, cfg.train.max_frames = 2, 2, 600
    best = Trainer(cfg, tiny_updates / "v1", tmp_path / "run").fit()
    base, _, _ = load_package(tiny_base)
    new, _, manifest = load_package(best)
    assert manifest["info"]["averaged_steps"] > 1
    before, after = dict(base.named_parameters()), dict(new.named_parameters())
    for name in compressible_weights(new):
        changed = (after[name].detach() != before[name].detach()).float().mean().item()
        assert 0.0 < changed <= 0.25 + 1e-6, name
