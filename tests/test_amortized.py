"""Amortized encoder: routing, per-branch state, costs, losses, the device simulator, training."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import typer
from torch.nn import functional as F

from edgeasr.losses.amortization import amortization_loss, compute_loss, end_latency_loss
from edgeasr.model.amortized import AmortizedEncoder, BranchConfig
from edgeasr.model.config import ModelConfig
from edgeasr.model.cost import encoder_trace
from edgeasr.model.encoder import nonzero_macs
from edgeasr.model.transducer import Transducer
from edgeasr.runtime.devicesim import simulate
from edgeasr.train.config import load_experiment
from edgeasr.train.trainer import Trainer, temperature_at

REPO = Path(__file__).resolve().parents[1]


def _encoder(**kw) -> AmortizedEncoder:
    torch.manual_seed(0)
    args = dict(
        num_mel_bins=80,
        stack=8,
        dim=24,
        branches=[BranchConfig(40, 2), BranchConfig(12, 1)],
        arbitrator_hidden=8,
        dropout=0.0,
        device_mflops=5.0,
    )
    args.update(kw)
    return AmortizedEncoder(**args).eval()


def _force(enc: AmortizedEncoder, branch: int) -> None:
    """Make the arbitrator always pick ``branch``."""
    with torch.no_grad():
        enc.arbitrator["out"].bias.fill_(-100.0)
        enc.arbitrator["out"].bias[branch] = 100.0


@pytest.mark.parametrize(
    "kind", ["shared", "own_input", "twin", "twin_front", "memory", "feedback"]
)
def test_streaming_in_chunks_equals_whole_utterance(kind: str):
    enc = {
        "shared": _encoder,
        "own_input": _own_input_encoder,
        "twin": _twin_encoder,
        "twin_front": lambda: _twin_encoder(front_rank=3),
        "memory": lambda: _encoder(arbitrator_memory=4),  # the arbitrator's GRU is state too
        # and so is the last output it reads (with a memory too, and a twin group)
        "feedback": lambda: _twin_encoder(arbitrator_feedback=True, arbitrator_memory=3),
    }[kind]()
    x = torch.randn(2, 8 * 23, 80)
    lens = torch.tensor([8 * 23, 8 * 17])
    full, full_lens, _ = enc(x, lens)
    with torch.no_grad():
        outs, state = [], None
        for s in range(0, x.shape[1], 8 * 5):
            chunk = x[:, s : s + 8 * 5]
            y, _, state = enc(chunk, torch.full((2,), chunk.shape[1]), state)
            outs.append(y)
    stream = torch.cat(outs, 1)
    n = int(full_lens[0])
    assert torch.allclose(stream[0, :n], full[0, :n], atol=1e-5)
    # the backlog is part of the state: both ways end with the same simulated delay
    assert torch.allclose(state[-1][0], enc(x[:1], lens[:1])[2][-1][0], atol=1e-6)


def test_unchosen_branch_keeps_its_state_and_chosen_one_moves():
    enc = _encoder()
    _force(enc, 1)
    x = torch.randn(1, 8 * 10, 80)
    _, _, state = enc(x, torch.tensor([80]))
    assert torch.count_nonzero(state[0]) == 0 and torch.count_nonzero(state[1]) == 0
    assert torch.count_nonzero(state[2]) > 0
    # and the output is then exactly what branch 1 alone computes
    _force(enc, 0)
    _, _, state0 = enc(x, torch.tensor([80]))
    assert torch.count_nonzero(state0[2]) == 0 and torch.count_nonzero(state0[0]) > 0


def test_training_mixes_softly_and_temperature_makes_choices_binary():
    enc = _encoder().train()
    torch.manual_seed(5)
    x = torch.randn(4, 8 * 30, 80)
    lens = torch.full((4,), 8 * 30)
    enc.temperature = 5.0
    w_hot = enc.forward_routed(x, lens)[3]
    enc.temperature = 0.01
    w_cold = enc.forward_routed(x, lens)[3]
    assert torch.allclose(w_hot.sum(-1), torch.ones(4, 30), atol=1e-5)
    assert w_hot.max(-1).values.mean() < 0.9  # hot: mixtures
    assert w_cold.max(-1).values.mean() > 0.97  # cold: effectively one-hot
    enc.eval()
    w_eval = enc.forward_routed(x, lens)[3]
    assert set(w_eval.unique().tolist()) <= {0.0, 1.0}


def test_frame_macs_count_shapes_rank_and_zeros():
    enc = _encoder()
    shared = 640 * 24 + (24 * 8 + 8 + 8 * 2)  # input projection + arbitrator matrices
    slow = 4 * 40 * (24 + 40) + 4 * 40 * (40 + 40) + 40 * 24
    fast = 4 * 12 * (24 + 12) + 12 * 24
    assert enc.frame_macs() == [shared + slow, shared + fast]
    low = _encoder(branches=[BranchConfig(40, 2, rank=4)])
    per_layer = lambda n_in: 4 * (n_in + 160) + 4 * (40 + 160)  # noqa: E731
    assert low.frame_macs() == [640 * 24 + per_layer(24) + per_layer(40) + 40 * 24]
    with torch.no_grad():
        enc.branches[0].layers[0].ih.weight[:, ::2] = 0.0
    assert enc.frame_macs()[0] == shared + slow - 4 * 40 * 12


def test_plain_encoder_frame_macs_match_its_shapes():
    cfg = ModelConfig(vocab_size=16, encoder_dim=32, lstm_hidden=32, num_layers=3)
    enc = Transducer(cfg).encoder
    lstm = 4 * 32 * (32 + 32)
    expected = 2 * 320 * 32 + 2 * lstm + 64 * 32 + 2 * lstm
    assert (
        enc.frame_macs()
        == expected
        == nonzero_macs(enc.input_proj) * 2 + 2 * lstm + 2048 + 2 * lstm
    )


def test_losses_charge_savings_only_without_backlog():
    cost = torch.tensor([0.1, 0.01])
    w = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]], requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    no_lag = torch.zeros(1, 3)
    big_lag = torch.full((1, 3), 1.0)
    am_idle = amortization_loss(w, no_lag, cost, 0.08, mask)
    assert abs(am_idle.item() - 2 * 0.9) < 1e-6  # summed over the utterance's frames
    assert amortization_loss(w, big_lag, cost, 0.08, mask).item() == 0.0
    am_idle.backward()
    assert (w.grad[..., 1] > w.grad[..., 0]).all()  # idle frames are pushed to the slow branch
    assert abs(compute_loss(w, cost, mask).item() - (0.1 + 0.1 + 1.0)) < 1e-6
    # padding frames do not count
    half = torch.tensor([[True, True, False]])
    assert abs(compute_loss(w, cost, half).item() - 0.2) < 1e-6


def test_model_backlog_matches_the_device_simulator():
    enc = _encoder(device_mflops=0.5)
    x = torch.randn(1, 8 * 40, 80)
    _, _, _, w, lags = enc.forward_routed(x, torch.tensor([320]))
    macs = np.asarray(enc.frame_macs(), dtype=np.float64)[w[0].argmax(-1).numpy()]
    sim = simulate(macs, enc.frame_s, 0.5)
    assert np.allclose(sim.backlog_s, lags[0].numpy(), atol=1e-5)


def test_end_latency_loss_is_the_simulated_latency_and_reaches_earlier_frames():
    enc = _encoder(device_mflops=0.5)
    x = torch.randn(2, 8 * 40, 80)
    lens = torch.tensor([320, 240])
    _, out_lens, _, w, lags = enc.forward_routed(x, lens)
    cost = enc.frame_cost_s()
    ends_s = torch.tensor([1.93, 2.5])  # frames 24 and 31
    end = torch.tensor([24, 29])  # the second utterance's speech outlasts its 30 frames
    loss = end_latency_loss(w, lags, cost, end)
    for b in range(2):
        n = int(out_lens[b])
        macs = np.asarray(enc.frame_macs(), np.float64)[w[b, :n].argmax(-1).numpy()]
        sim = simulate(macs, enc.frame_s, 0.5, float(ends_s[b]))
        assert sim.speech_end_frame == end[b]
        end_alone = end_latency_loss(w[b : b + 1], lags[b : b + 1], cost, end[b : b + 1])
        assert float(end_alone) * float(cost.max()) == pytest.approx(sim.latency_s, abs=1e-5)
    assert float(loss) > 0
    # soft routing: the backlog at the end depends on every earlier choice, so the loss reaches
    # the features of earlier frames (the arbitrator reads frame t only at frame t)
    enc.train()
    torch.manual_seed(1)
    x1 = x[:1].clone().requires_grad_(True)
    _, _, _, w, lags = enc.forward_routed(x1, lens[:1])
    end_latency_loss(w, lags, cost, torch.tensor([30])).backward()
    per_frame = x1.grad[0, : 8 * 30].abs().reshape(30, -1).sum(-1)
    assert (per_frame > 0).sum() > 20


def test_transducer_needs_speech_ends_for_the_latency_loss(tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny-amortized.yaml")
    cfg.model.vocab_size = 16
    cfg.model.latency_weight = 2.0
    model = Transducer(cfg.model)
    feats, lens = torch.randn(2, 160, 80), torch.tensor([160, 120])
    targets, tlens = torch.randint(1, 16, (2, 4)), torch.tensor([4, 3])
    with pytest.raises(ValueError, match="end of speech"):
        model(feats, lens, targets, tlens)
    with_end = model(feats, lens, targets, tlens, speech_end_s=torch.tensor([1.0, 5.0]))
    assert torch.isfinite(with_end)
    # the trainer reads the ends from the corpus's supervisions
    run = load_experiment(REPO / "configs" / "tiny-amortized.yaml")
    run.model.latency_weight = 2.0
    run.train.max_steps = 2
    trainer = Trainer(run, tiny_corpus, tmp_path / "run")
    trainer.fit()
    assert len(trainer.speech_end) == len(trainer.train_set.utts)


def test_simulator_queue_by_hand():
    # 10 ms of compute per 80 ms frame: never behind, latency = one frame's compute
    sim = simulate(np.full(5, 3.25e6), 0.08, 650.0)
    assert np.allclose(sim.backlog_s, 0.0) and abs(sim.latency_s - 0.01) < 1e-9
    # 100 ms per 80 ms frame: 20 ms more behind each frame
    sim = simulate(np.full(5, 32.5e6), 0.08, 650.0)
    assert np.allclose(sim.backlog_s, [0.0, 0.02, 0.04, 0.06, 0.08])
    assert abs(sim.latency_s - 0.18) < 1e-9 and sim.busy_ratio == pytest.approx(1.25)
    # end of speech at 0.17 s lies in frame 2 (0.16-0.24 s)
    assert simulate(np.full(5, 32.5e6), 0.08, 650.0, speech_end_s=0.17).speech_end_frame == 2
    with pytest.raises(ValueError):
        simulate(np.zeros(0), 0.08)


def test_encoder_trace_for_both_encoder_kinds():
    cfg = load_experiment(REPO / "configs" / "tiny-amortized.yaml").model
    cfg.vocab_size = 16
    model = Transducer(cfg)
    branch, macs = encoder_trace(model, np.random.randn(8 * 12 + 3, 80).astype(np.float32))
    assert len(branch) == len(macs) == 12
    assert set(macs.tolist()) <= set(float(m) for m in model.encoder.frame_macs())
    plain = Transducer(ModelConfig(vocab_size=16, encoder_dim=16, lstm_hidden=16, num_layers=1))
    branch, macs = encoder_trace(plain, np.zeros((80, 80), np.float32))
    assert len(macs) == 10 and (macs == plain.encoder.frame_macs()).all()


def test_simulation_reports_the_routing_at_the_end_of_speech():
    """end_fast / before_end_fast name the branches of the end frame and the one before it."""
    from types import SimpleNamespace

    from edgeasr.model.cost import equal_cost_single, simulate_cache, summarize

    cfg = load_experiment(REPO / "configs" / "tiny-amortized.yaml").model
    cfg.vocab_size = 16
    model = Transducer(cfg)
    feats = np.random.default_rng(0).standard_normal((8 * 12, 80)).astype(np.float32)
    utt = SimpleNamespace(id="u")
    cache = SimpleNamespace(utts=[utt], features=lambda u: feats)
    for k in (0, 1):
        _force(model.encoder, k)
        (sim,) = simulate_cache(model, cache, {"u": 0.5}, 650.0)  # 0.5 s: frame 6 of 12
        assert (sim.end_fast, sim.before_end_fast) == (k == 1, k == 1)
        assert summarize([sim])["end_pair_fast_share"] == float(k)
        (eq,) = equal_cost_single([sim], {"u": 0.5}, 0.08, 650.0)
        ref = simulate(np.full(sim.frames, sim.mean_macs), 0.08, 650.0, 0.5)
        assert eq.mean_macs == sim.mean_macs and eq.latency_s == ref.latency_s


def test_temperature_anneals_geometrically():
    assert temperature_at(0, 5, 2.0, 0.125) == 2.0
    assert temperature_at(4, 5, 2.0, 0.125) == pytest.approx(0.125)
    assert temperature_at(2, 5, 2.0, 0.125) == pytest.approx(0.5)
    # a wall-clock budget moves it on: half the time spent in the first epoch, half-way down
    assert temperature_at(0, 5, 2.0, 0.125, time_progress=0.5) == pytest.approx(0.5)
    assert temperature_at(3, 5, 2.0, 0.125, time_progress=2.0) == pytest.approx(0.125)


def test_trainer_trains_amortized_model_and_logs_routing(tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny-amortized.yaml")
    cfg.train.max_steps = 4
    run = tmp_path / "run"
    best = Trainer(cfg, tiny_corpus, run).fit()
    assert (best / "manifest.json").exists()
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    routing = [r["routing"] for r in epochs if "routing" in r]
    assert routing and routing[0]["temperature"] == 2.0
    assert abs(sum(routing[0]["hard_share"]) - 1.0) < 1e-3
    assert abs(sum(routing[0]["branch0_weight_hist"]) - 1.0) < 1e-3


def test_simulate_cli_prints_latency_table(tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from edgeasr.cli import app
    from edgeasr.model.checkpoint import save_package
    from edgeasr.tokenizer import train_tokenizer

    cfg = load_experiment(REPO / "configs" / "tiny-amortized.yaml").model
    tok = train_tokenizer(["call jonathan", "turn on the light"] * 20, 24)
    cfg.vocab_size = tok.vocab_size
    model = Transducer(cfg)
    _force(model.encoder, 1)  # every frame on the fast branch
    save_package(model, tok, tmp_path / "pkg")
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "--corpus",
            str(tiny_corpus),
            "--model",
            str(tmp_path / "pkg"),
            "--split",
            "test",
            "--device-mflops",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    row = next(r for r in lines if r.startswith("| test |"))
    assert row.startswith("| test | 6 |") and row.count("|") == 11 and row.endswith("% |")
    # a routed model: the equal-cost single encoder beside it, with the same average cost
    (same,) = [r.split("|") for r in lines if r.startswith("| equal-cost single | 6 |")]
    assert same[3] == row.split("|")[3] and same[4] == " 0.0% " and row.split("|")[4] != same[4]
    ratio = next(r for r in lines if r.startswith("equal-cost single encoder / routed model:"))
    p90 = float(same[7].removesuffix(" ms ")) / float(row.split("|")[7].removesuffix(" ms "))
    assert float(ratio.split("p90 ")[1].removesuffix("x")) == pytest.approx(p90, rel=0.02)


def test_transplant_copies_matching_weights_and_factorises_by_svd():
    from edgeasr.model.amortized import transplant

    full = _encoder(branches=[BranchConfig(40, 2)])
    both = _encoder(branches=[BranchConfig(40, 2), BranchConfig(12, 1)])
    report = transplant(both, full.state_dict())
    assert torch.equal(both.branches[0].layers[1].hh.weight, full.branches[0].layers[1].hh.weight)
    assert any(n.startswith("branches.1.") for n in report["fresh"])
    assert not report["factorized"]
    # a low-rank copy at full rank reproduces the dense matrices exactly
    low = _encoder(branches=[BranchConfig(40, 2, rank=24)])
    report = transplant(low, full.state_dict())
    assert "branches.0.layers.0.ih.0.weight" in report["factorized"]
    layer, dense = low.branches[0].layers[0], full.branches[0].layers[0]
    assert torch.allclose(layer.ih[1].weight @ layer.ih[0].weight, dense.ih.weight, atol=1e-5)
    assert torch.equal(layer.ih[1].bias, dense.ih.bias)
    # lower rank: the truncated SVD, the best approximation of that rank
    low4 = _encoder(branches=[BranchConfig(40, 2, rank=4)])
    transplant(low4, full.state_dict())
    approx = low4.branches[0].layers[0].ih
    with torch.no_grad():
        err = float(torch.linalg.matrix_norm(approx[1].weight @ approx[0].weight - dense.ih.weight))
        s = torch.linalg.svdvals(dense.ih.weight)
    assert err == pytest.approx(float(s[4:].square().sum().sqrt()), rel=1e-4)


def test_trainer_starts_a_branched_model_from_a_single_encoder(tiny_corpus, tmp_path):
    single = load_experiment(REPO / "configs" / "tiny-amortized.yaml")
    single.model.branches = single.model.branches[:1]
    single.train.max_steps = 2
    first = Trainer(single, tiny_corpus, tmp_path / "single").fit()
    branched = load_experiment(REPO / "configs" / "tiny-amortized.yaml")
    branched.train.max_steps = 1
    branched.train.init_weights_from = str(first)
    trainer = Trainer(branched, tiny_corpus, tmp_path / "branched")
    trainer.fit()
    assert (tmp_path / "branched" / "tokenizer.model").read_bytes() == (
        first / "tokenizer.model"
    ).read_bytes()


def test_forced_branch_takes_every_frame_alone():
    enc = _encoder().train()  # training mode: the arbitrator alone would mix softly
    enc.forced_branch = 1
    x = torch.randn(2, 8 * 9, 80)
    lens = torch.tensor([8 * 9, 8 * 6])
    state = enc.init_state(2)
    state = (state[0] + 0.5, *state[1:])  # branch 0's state must come back untouched
    out, _, new, weights, lags = enc.forward_routed(x, lens, state)
    assert torch.equal(weights[..., 1], torch.ones(2, 9)) and not weights[..., 0].any()
    assert new[0] is state[0] and new[1] is state[1]
    shared = torch.relu(enc.input_proj(enc.stack(x, lens)[0]))
    alone, _, _ = enc.branches[1](shared, None, state[2], state[3])
    assert torch.allclose(out, alone, atol=1e-6)
    # the backlog is the lean branch's: it never falls behind on this device
    fast = float(enc.frame_cost_s()[1])
    assert fast < enc.frame_s and not lags.any()


def test_trainer_trains_one_forced_branch_and_freezes_the_rest(tiny_corpus, tmp_path):
    from edgeasr.model.checkpoint import load_package

    start = load_experiment(REPO / "configs" / "tiny-amortized.yaml")
    start.train.max_steps = 1
    first = Trainer(start, tiny_corpus, tmp_path / "start").fit()
    cfg = load_experiment(REPO / "configs" / "tiny-amortized.yaml")
    cfg.train.max_steps = 3
    cfg.train.ctc_warmup_steps = 0
    cfg.train.init_weights_from = str(first)
    cfg.train.force_branch = 1
    cfg.train.train_only = ["encoder.branches.1."]
    trainer = Trainer(cfg, tiny_corpus, tmp_path / "lean")
    best = trainer.fit()
    assert trainer.model.encoder.forced_branch == 1
    before = load_package(first)[0].state_dict()
    after = load_package(best)[0].state_dict()
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved and all(n.startswith("encoder.branches.1.") for n in moved)
    # the package routes with its arbitrator again: forcing is a training setting
    assert load_package(best)[0].encoder.forced_branch is None
    bad = load_experiment(REPO / "configs" / "tiny-amortized.yaml")
    bad.train.train_only = ["encoder.branch.1."]
    with pytest.raises(ValueError, match="no parameter starts with"):
        Trainer(bad, tiny_corpus, tmp_path / "bad").fit()
    bad.train.train_only, bad.train.force_branch = [], 2
    with pytest.raises(ValueError, match="no such branch"):
        Trainer(bad, tiny_corpus, tmp_path / "bad2").fit()


@pytest.mark.parametrize("rank", [0, 6])
def test_fused_kernel_equals_the_gated_loop_with_every_frame_taken(rank):
    from edgeasr.model.amortized import GatedLSTMLayer

    torch.manual_seed(1)
    layer = GatedLSTMLayer(24, 16, rank)
    x, h, c = torch.randn(3, 7, 24), torch.randn(3, 16), torch.randn(3, 16)
    for a, b in zip(layer(x, None, h, c), layer(x, torch.ones(3, 7), h, c), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def _own_input_encoder() -> AmortizedEncoder:
    """Branch 0 has the plain LSTM encoder's layout (40 ms sub-frames, one layer, then 80 ms);
    branch 1 is a lean one on the raw frame: no shared projection at all."""
    return _encoder(
        branches=[
            BranchConfig(24, 2, own_input=True, split=2, sub_layers=1),
            BranchConfig(12, 1, own_input=True),
        ]
    )


def test_own_input_branches_keep_state_and_count_sub_frames():
    enc = _own_input_encoder()
    assert enc.input_proj is None and enc.arbitrator["frame"].in_features == 640
    x, lens = torch.randn(2, 8 * 23, 80), torch.tensor([8 * 23, 8 * 17])
    with torch.no_grad():
        state = enc(x, lens)[2]
    assert state[0].shape == (3, 2, 24)  # one sub-frame layer + two main layers
    # the sub-frame part runs twice per routed frame
    b0 = enc.branches[0]
    twice = 2 * (nonzero_macs(b0.in_proj) + nonzero_macs(b0.sub_layers))
    rest = nonzero_macs(b0.reduce_proj) + nonzero_macs(b0.layers) + nonzero_macs(b0.out)
    assert enc.frame_macs()[0] == twice + rest + nonzero_macs(enc.arbitrator)
    _force(enc, 1)
    _, _, only1 = enc(x, lens)
    assert torch.count_nonzero(only1[0]) == 0 and torch.count_nonzero(only1[2]) > 0
    with pytest.raises(ValueError, match="own_input"):
        BranchConfig(24, 2, split=2)


def test_trained_lstm_encoder_becomes_a_branch_unchanged():
    from edgeasr.model.amortized import start_weights, transplant

    lstm_cfg = load_experiment(REPO / "configs" / "tiny.yaml").model
    lstm_cfg.vocab_size, lstm_cfg.lstm_hidden = 48, lstm_cfg.encoder_dim  # unprojected LSTMs
    torch.manual_seed(3)
    lstm = Transducer(lstm_cfg).eval()
    for p in lstm.parameters():  # all weights non-trivial (both LSTM biases too)
        torch.nn.init.normal_(p, std=0.2)
    branch = {"hidden": 32, "layers": 1, "own_input": True, "split": 2, "sub_layers": 1}
    cfg = ModelConfig(
        **{
            **lstm_cfg.__dict__,
            "encoder_type": "amortized",
            "stack": 8,
            "reduce_after": 0,
            "branches": [branch],
        }
    )
    am = Transducer(cfg).eval()
    report = transplant(am, start_weights(am, lstm))
    assert report["fresh"] == []
    x, lens = torch.randn(2, 8 * 11 + 5, 80), torch.tensor([8 * 11 + 5, 8 * 7])
    with torch.no_grad():
        a, la, _ = lstm.encode(x, lens)
        b, lb, _ = am.encode(x, lens)
    assert torch.equal(la, lb) and torch.allclose(a, b, atol=1e-5)
    assert am.encoder.frame_macs() == [lstm.encoder.frame_macs()]
    # a second, fresh branch leaves exactly that branch and the arbitrator fresh
    two = Transducer(
        ModelConfig(**{**cfg.__dict__, "branches": [branch, {"hidden": 8, "own_input": True}]})
    )
    fresh = transplant(two, start_weights(two, lstm))["fresh"]
    assert fresh and all(
        n.startswith(("encoder.branches.1.", "encoder.arbitrator.")) for n in fresh
    )


def _twin_encoder(rank: int = 4, front_rank: int = 0, **kw) -> AmortizedEncoder:
    """Branch 0 in the plain LSTM encoder's layout; branch 1 its rank-``rank`` twin on the same
    state (with its own rank-``front_rank`` front end if > 0); branch 2 a separate lean branch
    (so a twin group sits beside a plain branch)."""
    full = dict(hidden=16, layers=2, own_input=True, split=2, sub_layers=1)
    return _encoder(
        dim=16,
        branches=[
            BranchConfig(**full),
            BranchConfig(**full, rank=rank, shares=0, front_rank=front_rank),
            BranchConfig(8, 1, own_input=True),
        ],
        **kw,
    )


@pytest.mark.parametrize("front_rank", [0, 16])
def test_twin_branch_shares_state_and_costs_its_own_matrices(front_rank: int):
    """front_rank 16 is full rank here (16 outputs), so the factorised front end is exact."""
    from edgeasr.model.amortized import start_weights, transplant

    enc = _twin_encoder(front_rank=2 if front_rank else 0)
    assert enc.groups == [[0, 1], [2]] and len(enc.init_state(1)) == 2 * 2 + 1
    host, twin = enc.branches[0], enc.branches[1]
    assert not hasattr(twin, "norms") and hasattr(twin, "in_proj") == bool(front_rank)
    macs = enc.frame_macs()
    own = twin.lstm_macs() + twin.front_macs()
    assert macs[1] - macs[0] == own - host.lstm_macs() - (host.front_macs() if front_rank else 0)
    assert macs[1] < macs[0]
    if front_rank:  # rank 2: 2 x (320 + 16) per sub-frame twice, 2 x (32 + 16) to reduce
        assert twin.front_macs() == 2 * 2 * (320 + 16) + 2 * (32 + 16)
    # a dense twin holding the host's weights: the same encoder whatever the routing, and its
    # state is the host's (never a gap)
    dense = _twin_encoder(rank=0, front_rank=front_rank)
    single = _encoder(dim=16, branches=[BranchConfig(16, 2, own_input=True, split=2, sub_layers=1)])
    report = transplant(dense, start_weights(dense, single))  # the twin copies the host's
    assert all(n.startswith(("branches.2.", "arbitrator.")) for n in report["fresh"])
    x, lens = torch.randn(1, 8 * 12, 80), torch.tensor([96])
    ref, _, _ = single(x, lens)
    for k in (0, 1):
        _force(dense, k)
        out, _, state = dense(x, lens)
        assert torch.allclose(out, ref, atol=1e-5)
    # mixed softly frame by frame (training): still the same, as both paths are the same cell
    dense.train()
    with torch.no_grad():
        dense.arbitrator["out"].bias.zero_()
        dense.arbitrator["out"].bias[2] = -100.0
    _, _, _, w, _ = dense.forward_routed(x, lens)
    assert (w[..., 0] > 0.05).any() and (w[..., 1] > 0.05).any()
    assert torch.allclose(dense(x, lens)[0], ref, atol=1e-5)
    with pytest.raises(ValueError, match="not an earlier host"):
        _encoder(branches=[BranchConfig(8, 1, shares=1), BranchConfig(8, 1)])
    with pytest.raises(ValueError, match="needs its"):
        _encoder(branches=[BranchConfig(8, 1), BranchConfig(8, 2, shares=0)])
    with pytest.raises(ValueError, match="front_rank"):
        BranchConfig(8, 1, own_input=True, front_rank=4)  # not a twin
    with pytest.raises(ValueError, match="front_rank"):
        BranchConfig(8, 1, shares=0, front_rank=4)  # a twin on the shared projection


def test_twin_starts_as_the_truncated_svd_of_its_host():
    from edgeasr.model.amortized import start_weights, transplant

    source = _encoder(dim=16, branches=[BranchConfig(16, 2, own_input=True, split=2, sub_layers=1)])
    enc = _twin_encoder(rank=3)
    report = transplant(enc, start_weights(enc, source))
    assert "branches.1.layers.1.hh.0.weight" in report["factorized"]
    layer, dense = enc.branches[1].layers[1], source.branches[0].layers[1]
    u, s, vh = torch.linalg.svd(dense.hh.weight, full_matrices=False)
    best = (u[:, :3] * s[:3]) @ vh[:3]
    assert torch.allclose(layer.hh[1].weight @ layer.hh[0].weight, best, atol=1e-5)


def test_arbitrator_memory_carries_context_across_chunks():
    """The GRU memory is part of the streaming state: routing a chunk from a fresh memory
    differs from routing it after the earlier frames, and the memory is counted in the cost."""
    enc = _encoder(arbitrator_memory=4)
    plain = _encoder()
    extra = 3 * 4 * (8 + 4)  # a GRU cell: 3 gates x 4 x (8 inputs + 4 memory)
    macs = zip(enc.frame_macs(), plain.frame_macs(), strict=True)
    assert [m - p for m, p in macs] == [extra + 4 * 2] * 2  # and 4 x 2 memory-to-logit weights
    with torch.no_grad():  # make the decision hinge on the memory alone
        enc.arbitrator["backlog"].weight.zero_()
        out, v = enc.arbitrator["out"], torch.randn(4)
        out.weight.zero_()
        out.bias.zero_()
        out.weight[0, 8:], out.weight[1, 8:] = 50.0 * v, -50.0 * v
    x = torch.randn(1, 8 * 30, 80)
    lens = torch.tensor([8 * 30])
    _, _, state, w_all, _ = enc.forward_routed(x, lens)
    assert 0 < w_all[0, :, 0].sum() < 30  # both branches taken
    first = enc.forward_routed(x[:, : 8 * 15], torch.tensor([8 * 15]))[2]
    assert first[-2].shape == (1, 4) and first[-2].abs().sum() > 0
    rest = x[:, 8 * 15 :], torch.tensor([8 * 15])
    _, _, end, cont, _ = enc.forward_routed(*rest, first)
    assert torch.equal(cont, w_all[:, 15:]) and torch.allclose(end[-2], state[-2], atol=1e-6)
    # one more frame from a fresh memory ends elsewhere than from the carried one
    step = x[:, 8 * 15 : 8 * 16], torch.tensor([8])
    forgot = (*first[:-2], torch.zeros_like(first[-2]), first[-1])
    carried = enc.forward_routed(*step, first)[2][-2]
    assert not torch.allclose(enc.forward_routed(*step, forgot)[2][-2], carried, atol=1e-3)
    # from a model config (the trainer's path), and a refusal
    cfg = dict(vocab_size=16, encoder_type="amortized", stack=8, reduce_after=0)
    cfg["branches"] = [{"hidden": 8, "layers": 1}, {"hidden": 4, "layers": 1}]
    assert Transducer(ModelConfig(**cfg, arbitrator_memory=3)).encoder.memory == 3
    with pytest.raises(ValueError, match="arbitrator_memory"):
        ModelConfig(**cfg, arbitrator_memory=-1)


def test_feedback_arbitrator_is_the_layer_major_pass_when_it_ignores_the_output():
    """Routing and encoding frame by frame (arbitrator_feedback) computes what routing all
    frames and then encoding does, so with the feedback weights at zero the two agree exactly;
    with them non-zero the decisions depend on what was encoded before."""
    fb = _twin_encoder(front_rank=3, arbitrator_feedback=True)
    plain = _twin_encoder(front_rank=3)
    missing = plain.load_state_dict(fb.state_dict(), strict=False)
    assert missing.unexpected_keys == ["arbitrator.feedback.weight"]
    assert fb.frame_macs()[0] - plain.frame_macs()[0] == 16 * 8  # D x A feedback weights
    with torch.no_grad():
        fb.arbitrator["feedback"].weight.zero_()
    x, lens = torch.randn(2, 8 * 20, 80), torch.tensor([8 * 20, 8 * 13])
    out_f, _, state_f, w_f, lag_f = fb.forward_routed(x, lens)
    out_p, _, state_p, w_p, lag_p = plain.forward_routed(x, lens)
    assert (w_p.argmax(-1) == 0).any() and (w_p.argmax(-1) == 1).any()  # both paths taken
    assert torch.equal(w_f, w_p) and torch.allclose(lag_f, lag_p)
    assert torch.allclose(out_f, out_p, atol=1e-5)
    pairs = zip(state_f[:4], state_p[:4], strict=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in pairs)
    assert torch.allclose(state_f[-2], out_f[:, -1])  # the state keeps the last output
    with torch.no_grad():
        fb.arbitrator["feedback"].weight.normal_(std=5.0)
    assert not torch.equal(fb.forward_routed(x, lens)[3], w_p)
    # the arbitrator reads the output without steering it: routing losses leave the branches be
    fb.train()
    fb.forward_routed(x, lens)[3].sum().backward()
    assert fb.arbitrator["feedback"].weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for p in fb.branches.parameters())


def test_backlog_guard_never_runs_slow_frames_back_to_back():
    """With the guard, a branch slower than real time is taken only with (almost) nothing
    queued, so after each slow frame comes a fast one, and one fast frame drains the backlog."""
    enc = _encoder()
    macs = enc.frame_macs()
    enc = _encoder(device_mflops=2 * macs[0] / (0.12 * 1e6))  # branch 0: 120 ms a 80 ms frame
    assert enc.frame_cost_s()[1] < enc.frame_s < enc.frame_cost_s()[0]
    _force(enc, 0)
    x, lens = torch.randn(1, 8 * 12, 80), torch.tensor([8 * 12])
    assert (enc.forward_routed(x, lens)[3].argmax(-1) == 0).all()  # unguarded: all slow
    enc.guard_backlog_s = 0.0
    _, _, _, w, lags = enc.forward_routed(x, lens)
    slow = w[0].argmax(-1) == 0
    assert slow[0] and slow.sum() >= 3 and not (slow[1:] & slow[:-1]).any()
    assert (lags[0][slow] == 0).all() and (lags[0][~slow] > 0).all()
    from edgeasr.cli import _guard

    with pytest.raises(typer.BadParameter, match="routed"):
        _guard(Transducer(ModelConfig(vocab_size=16, encoder_dim=8, lstm_hidden=8)), 0.5)


def test_configured_backlog_guard_routes_training_as_inference_will():
    """``guard_backlog_frames`` in the model config guards training too: a frame that met more
    backlog gets no weight on the slow branch even from the soft Gumbel-softmax routing (the
    router learns under the rule the device applies); a caller can still change or drop it."""
    from edgeasr.cli import _guard

    macs = _encoder().frame_macs()
    mflops = 2 * macs[0] / (0.12 * 1e6)  # branch 0: 120 ms a 80 ms frame
    enc = _encoder(device_mflops=mflops, guard_backlog_frames=0.25)
    assert enc.guard_backlog_s == pytest.approx(0.02)
    _force(enc, 0)
    enc.train()
    enc.temperature = 1.0
    x, lens = torch.randn(2, 8 * 12, 80), torch.tensor([8 * 12, 8 * 9])
    _, _, _, w, lags = enc.forward_routed(x, lens)
    queued = lags > 0.02
    assert queued.any() and (w[..., 0][queued] == 0).all()
    assert (w[..., 0][~queued] > 0.99).all()  # below the guard the forced choice stands
    enc.eval()
    _guard(SimpleNamespace(encoder=enc), -1.0)  # off: every frame slow again
    assert enc.guard_backlog_s is None
    assert (enc.forward_routed(x, lens)[3].argmax(-1) == 0).all()
    _guard(SimpleNamespace(encoder=enc), None)  # None keeps what the model has
    assert enc.guard_backlog_s is None
    cfg = dict(encoder_type="amortized", reduce_after=0, branches=[{"hidden": 8, "layers": 1}])
    with pytest.raises(ValueError, match="guard_backlog_frames"):
        ModelConfig(**cfg, guard_backlog_frames=float("nan"))
    model = Transducer(ModelConfig(vocab_size=16, encoder_dim=8, **cfg, guard_backlog_frames=1))
    assert model.encoder.guard_backlog_s == pytest.approx(model.encoder.frame_s)


def test_hard_backlog_counts_sampled_choices_with_soft_gradient():
    """``hard_backlog``: in training the backlog is the device's for the sampled branches (not
    the soft expected cost, which hides queued audio), and it still trains the arbitrator."""
    macs = _encoder().frame_macs()
    mflops = 2 * macs[0] / (0.12 * 1e6)  # branch 0: 120 ms a 80 ms frame
    x, lens = torch.randn(2, 8 * 12, 80), torch.tensor([8 * 12, 8 * 9])
    for hard in (False, True):
        enc = _encoder(device_mflops=mflops, hard_backlog=hard).train()
        enc.temperature = 1.0
        torch.manual_seed(3)
        _, _, _, w, lags = enc.forward_routed(x, lens)
        cost = enc.frame_cost_s()
        taken = w.detach() if not hard else F.one_hot(w.argmax(-1), 2).float()
        lag, expected = torch.zeros(2), []
        for t in range(w.shape[1]):
            expected.append(lag)
            lag = torch.relu(lag + taken[:, t] @ cost - enc.frame_s)
        assert torch.allclose(lags, torch.stack(expected, 1), atol=1e-6)
        lags.sum().backward()
        assert enc.arbitrator["out"].weight.grad.abs().sum() > 0
