"""Compression: pruning schedule and masks, quantisers and the grid regulariser, compression
training, the packed file (round trip and rejection of damaged files), and the numpy/scipy
zero-skipping transducer that runs packed files."""

import copy
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeasr.compress.convert import folded_lstm_biases, pack_model, unpack_model
from edgeasr.compress.packed import PackedModelError, QuantTensor, pack, read_packed
from edgeasr.compress.quant import (
    channel_scale,
    code_entropy_bits,
    dequantize,
    fake_quant,
    grid_penalty,
    max_scale,
    qmax,
    quantize,
    quantize_model,
    rate_penalty,
)
from edgeasr.compress.saliency import input_moments, input_rms
from edgeasr.compress.sparsity import (
    PruneConfig,
    Pruner,
    compressible_weights,
    cubic_sparsity,
    reconstruct_kept,
)
from edgeasr.compress.training import (
    RATE_HORIZON,
    RATE_STEP,
    SCALE_EVERY,
    CompressionConfig,
    Compressor,
)
from edgeasr.decode import DEFAULT_MODEL_DIR
from edgeasr.model.checkpoint import load_package, save_package
from edgeasr.model.config import ModelConfig
from edgeasr.model.transducer import Transducer
from edgeasr.runtime.sparse_model import SparseTransducer
from edgeasr.tokenizer import train_tokenizer
from edgeasr.train.config import load_experiment
from edgeasr.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
WAV = sorted((REPO / "samples").glob("*.wav"))[0]


def test_cubic_schedule():
    assert cubic_sparsity(0, 10, 110, 0.9) == 0.0
    assert cubic_sparsity(110, 10, 110, 0.9) == pytest.approx(0.9)
    vals = [cubic_sparsity(s, 10, 110, 0.9) for s in range(10, 111, 10)]
    assert all(b >= a for a, b in zip(vals, vals[1:], strict=False))
    # fast early, slow late: half the target is passed within the first quarter
    assert cubic_sparsity(35, 10, 110, 0.9) > 0.45 * 0.9 * 1.2
    with pytest.raises(ValueError):
        cubic_sparsity(5, 0, 10, 1.0)


@pytest.mark.parametrize("scope,block", [("layer", (1, 1)), ("layer", (1, 4)), ("global", (1, 1))])
def test_pruner_reaches_target_and_masks_only_shrink(scope, block):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 8))
    names = compressible_weights(model)
    pr = Pruner(model, names, PruneConfig(0.75, 0.0, 0.5, 5, scope, block), total_steps=100)
    seen = []
    for step in range(0, 101):
        with torch.no_grad():
            for p in model.parameters():  # "training" moves weights, pruned ones must stay zero
                p.add_(0.05 * torch.randn_like(p))
        if not pr.update(step):
            pr.apply()
        seen.append({n: pr.block_masks[n].clone() for n in names})
    for a, b in zip(seen, seen[1:], strict=False):
        for n in names:
            assert not bool((b[n] & ~a[n]).any()), "a pruned block came back"
    assert pr.sparsity() == pytest.approx(0.75, abs=0.02)
    w = dict(model.named_parameters())
    for n in names:
        zero = w[n] == 0
        if block != (1, 1):  # whole blocks are zero
            assert torch.equal(zero.reshape(w[n].shape[0], -1, 4).all(-1), ~pr.block_masks[n])
        if scope == "layer":
            assert float(zero.float().mean()) == pytest.approx(0.75, abs=0.02)
    state = pr.state_dict()
    pr2 = Pruner(model, names, PruneConfig(0.75, 0.0, 0.5, 5, scope, block), total_steps=100)
    pr2.load_state_dict(state)
    assert all(torch.equal(pr2.block_masks[n], pr.block_masks[n]) for n in names)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_quantize_round_trip_and_straight_through(bits):
    torch.manual_seed(1)
    w = torch.randn(12, 7)
    q, scale = quantize(w, bits)
    assert int(q.abs().max()) == 2 ** (bits - 1) - 1
    err = (dequantize(q, scale) - w).abs()
    inside = w.abs() <= qmax(bits) * scale[:, None]  # below 8 bits rows clip; beyond: saturate
    assert bool((err[inside] <= (scale[:, None] / 2 + 1e-6).expand_as(w)[inside]).all())
    assert bool((q.abs()[~inside] == qmax(bits)).all())
    wq = w.clone().requires_grad_(True)
    out = fake_quant(wq, bits)
    assert torch.allclose(out, dequantize(q, scale))
    out.sum().backward()
    assert torch.equal(wq.grad, torch.ones_like(w))  # straight-through


def test_grid_penalty_is_zero_on_grid_and_pulls_towards_it():
    torch.manual_seed(2)
    w = torch.randn(6, 10)
    q, scale = quantize(w, 4)
    on_grid = dequantize(q, scale)
    assert float(grid_penalty(on_grid, 4)) < 1e-5 * on_grid.numel()
    off = (on_grid + 0.3 * scale[:, None]).requires_grad_(True)
    # about the distance to the grid: 0.3 steps per weight (sin(0.3 pi) / pi = 0.26)
    per_weight = float(grid_penalty(off, 4).detach()) / float((scale[:, None] * 0.26).sum() * 10)
    assert per_weight == pytest.approx(1.0, rel=0.25)
    grid_penalty(off, 4).backward()
    # a step against the gradient moves weights towards their nearest grid point
    moved = off.detach() - 0.01 * off.grad / off.grad.abs().max()
    dist = lambda x: ((x / channel_scale(x, 4)) - torch.round(x / channel_scale(x, 4))).abs()  # noqa: E731
    inner = slice(None), slice(1, -1)
    assert float(dist(moved)[inner].mean()) < float(dist(off.detach())[inner].mean())


def _tiny_model(seed: int = 0, proj: bool = False) -> Transducer:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=40,
        encoder_dim=16,
        lstm_hidden=24 if proj else 16,
        num_layers=2,
        predictor_dim=16,
        joiner_dim=16,
        ctc_weight=0.3,
    )
    m = Transducer(cfg)
    m.set_normalization(torch.randn(80) * 0.1, torch.rand(80) + 0.5)
    return m.eval()


def _tokenizer():
    return train_tokenizer(["turn on the kitchen lights", "call jonathan please"] * 30, 40)


@pytest.mark.parametrize(
    "bits,block,sparsity", [(8, (1, 1), 0.5), (4, (1, 4), 0.7), (6, (1, 1), 0.0)]
)
def test_pack_round_trip_is_exact(tmp_path, bits, block, sparsity):
    rng = np.random.default_rng(0)
    codes = rng.integers(-(2 ** (bits - 1) - 1), 2 ** (bits - 1), size=(32, 64)).astype(np.int32)
    if sparsity:
        keep = rng.random((32, 64 // block[1])) > sparsity
        codes *= np.repeat(keep, block[1], axis=1)
    t = {
        "w": QuantTensor(codes, rng.random(32).astype(np.float16).astype(np.float32), bits, block),
        "b": rng.standard_normal(5).astype(np.float32),
    }
    n = pack(t, {"hello": 1}, b"tok", tmp_path / "m.pack")
    assert n == (tmp_path / "m.pack").stat().st_size
    pm = read_packed(tmp_path / "m.pack")
    assert pm.meta == {"hello": 1} and pm.tokenizer == b"tok"
    assert np.array_equal(pm.tensors["w"].codes, codes)
    assert np.array_equal(pm.tensors["w"].scales, t["w"].scales)
    assert np.array_equal(pm.tensors["b"], t["b"].astype(np.float16).astype(np.float32))
    pack(t, {"hello": 1}, b"tok", tmp_path / "exact.pack", float_bits=32)
    assert np.array_equal(read_packed(tmp_path / "exact.pack").tensors["b"], t["b"])


def test_zero_tensors_cost_no_body_bytes_and_scales_must_be_float16(tmp_path):
    codes = np.ones((8, 8), np.int32)
    t = {
        "w": QuantTensor(codes, np.full(8, 0.5, np.float32), 8),
        "z": np.zeros((4096,), np.float32),
    }
    pack(t, {}, b"", tmp_path / "a.pack")
    pm = read_packed(tmp_path / "a.pack")
    assert pm.tensors["z"].shape == (4096,) and not pm.tensors["z"].any()
    raw_sizes = {}
    for name, extra in (("without", {}), ("with", {"z": np.zeros((4096,), np.float32)})):
        pack({"w": t["w"], **extra}, {}, b"", tmp_path / f"{name}.pack")
        raw_sizes[name] = (tmp_path / f"{name}.pack").stat().st_size
    assert raw_sizes["with"] - raw_sizes["without"] < 64  # a header entry, no data
    # -0.0 is not stored as zeros (the file is byte-exact for floats)
    pack({"n": np.array([-0.0, 0.0], np.float32)}, {}, b"", tmp_path / "n.pack")
    assert np.signbit(read_packed(tmp_path / "n.pack").tensors["n"][0])
    bad = QuantTensor(codes, np.full(8, 0.1, np.float32), 8)  # 0.1 is no float16 number
    with pytest.raises(ValueError, match="float16"):
        pack({"w": bad}, {}, b"", tmp_path / "bad.pack")


def test_a_header_claiming_a_huge_zero_tensor_is_rejected(tmp_path):
    """The checksum proves integrity, not intent: a re-checksummed header that declares an
    enormous all-zero tensor must not make the reader allocate it."""
    import hashlib

    import zstandard

    pack({"z": np.zeros((8,), np.float32)}, {}, b"", tmp_path / "z.pack")
    blob = (tmp_path / "z.pack").read_bytes()
    magic, version, res, hlen = struct.unpack_from("<8sHHI", blob)
    header = json.loads(zstandard.ZstdDecompressor().decompress(blob[16 : 16 + hlen]))
    header["tensors"][0]["shape"] = [1 << 20, 1 << 20]
    hb = zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    forged = struct.pack("<8sHHI", magic, version, res, len(hb)) + hb + blob[16 + hlen : -32]
    (tmp_path / "forged.pack").write_bytes(forged + hashlib.sha256(forged).digest())
    with pytest.raises(PackedModelError, match="implausible shape"):
        read_packed(tmp_path / "forged.pack")


def test_quantisation_scales_are_float16_numbers_and_clip_only_below_8_bits():
    w = torch.randn(64, 48) * 0.03
    w[5] = 0.0
    w[7] *= 1e-4
    for bits in (4, 6, 8, 10):
        q, scale = quantize(w, bits)
        assert torch.equal(scale.half().float(), scale) and bool((scale > 0).all())
        amax = w.abs().amax(dim=1)
        upper = amax / qmax(bits) * (1 + 2**-10) + 6e-8
        assert bool((scale <= upper).all())  # never coarser than the row maximum asks
        if bits >= 8:
            assert bool((scale >= amax / qmax(bits)).all())  # rounded up: never clips
    # below 8 bits, rows with heavy tails clip, and the rounding error drops
    torch.manual_seed(3)
    w = torch.randn(64, 320) ** 3
    q4, s4 = quantize(w, 4)
    full = max_scale(w, 4)
    assert float((s4 < full).float().mean()) > 0.9
    err = lambda q, s: float(((dequantize(q, s) - w) ** 2).sum())  # noqa: E731
    unclipped = torch.clamp(torch.round(w / full[:, None]), -7, 7).to(torch.int32)
    assert err(q4, s4) < 0.9 * err(unclipped, full)


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
def test_quantize_is_idempotent(bits):
    """Requantising quantised weights gives back the same codes and scales: how `edgeasr pack`
    recovers the trained codes of a QAT model from its exported float weights."""
    torch.manual_seed(bits)
    w = torch.randn(40, 30) * torch.rand(40, 1) + 0.2 * torch.randn(40, 30) ** 3
    q, scale = quantize(w, bits)
    q2, scale2 = quantize(dequantize(q, scale), bits)
    assert torch.equal(scale2, scale) and torch.equal(q2, q)


def test_folding_lstm_biases_keeps_the_function(tmp_path):
    model = _tiny_model(proj=True)
    folded = model.__class__(model.cfg).eval()
    folded.load_state_dict(folded_lstm_biases(model))
    hh = [k for k in model.state_dict() if "bias_hh" in k]
    assert hh and all(not folded.state_dict()[k].any() for k in hh)
    feats = torch.randn(1, 40, 80)
    with torch.inference_mode():
        a, _, _ = model.encode(feats, torch.tensor([40]))
        b, _, _ = folded.encode(feats, torch.tensor([40]))
    assert torch.allclose(a, b, atol=1e-5)


@pytest.fixture(scope="module")
def packed_tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("pk")
    model = _tiny_model(proj=True)
    save_package(model, _tokenizer(), d / "pkg")
    summary = pack_model(d / "pkg", d / "m.pack", bits=8)
    return d, model, summary


def test_damaged_packed_files_are_rejected(packed_tiny, tmp_path):
    d, _, _ = packed_tiny
    blob = (d / "m.pack").read_bytes()
    cases = {
        "truncated": blob[: len(blob) // 2],
        "empty": b"",
        "flipped": blob[:200] + bytes([blob[200] ^ 1]) + blob[201:],
        "flipped_last": blob[:-1] + bytes([blob[-1] ^ 0x80]),
        "magic": b"NOTAPACK" + blob[8:],
        "version": blob[:8] + struct.pack("<H", 99) + blob[10:],
    }
    messages = {
        "truncated": "checksum|truncated",
        "empty": "truncated",
        "flipped": "checksum",
        "flipped_last": "checksum",
        "magic": "bad magic",
        "version": "version 99",
    }
    for name, data in cases.items():
        p = tmp_path / f"{name}.pack"
        p.write_bytes(data)
        with pytest.raises(PackedModelError, match=messages[name]):
            read_packed(p)
    with pytest.raises(PackedModelError, match="cannot read"):
        read_packed(tmp_path / "missing.pack")


def test_pack_unpack_gives_the_ptq_model(packed_tiny, tmp_path):
    d, model, summary = packed_tiny
    assert summary["bits"] == 8
    names = [n for n in compressible_weights(model)]
    ptq = quantize_model(model, 8, names)
    out = unpack_model(d / "m.pack", tmp_path / "unpacked")
    back, _, _ = load_package(out)
    ref = {k: v for k, v in ptq.state_dict().items() if not k.startswith("ctc_head")}
    got = back.state_dict()
    assert set(got) == set(ref)
    f16 = lambda x: x.half().float()  # noqa: E731 (unquantised tensors are stored as float16)
    for k in ref:
        if "bias_hh" in k:  # folded into the input bias: same sum, recurrent half zero
            ih = k.replace("bias_hh", "bias_ih")
            assert not got[k].any(), k
            assert torch.equal(got[ih], f16(ref[ih] + ref[k])), k
        elif k in names:
            assert torch.allclose(got[k], ref[k], atol=1e-7), k
        elif "bias_ih" not in k:
            assert torch.equal(got[k], f16(ref[k])), k
    # packing the unpacked (already on-grid) model reproduces the same integer codes
    pack_model(out, tmp_path / "again.pack", bits=8)
    a, b = read_packed(d / "m.pack"), read_packed(tmp_path / "again.pack")
    for k, t in a.tensors.items():
        if isinstance(t, QuantTensor):
            assert np.array_equal(t.codes, b.tensors[k].codes), k


def test_pack_leaves_the_second_pass_behind_with_the_ctc_head(tiny_base, tmp_path):
    """The packed format drops the CTC head (training's), so the second pass tuned with it must
    not travel either: the unpacked package decodes in one pass, and says why if forced."""
    import shutil

    from edgeasr.decode import Transcriber
    from edgeasr.model.checkpoint import set_decoding_defaults
    from edgeasr.search.rescore import Rescorer

    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_base, pkg)
    tuned = {"blank_penalty": 0.5, "ctc_weight": 0.5, "word_bonus": 2.0, "beam": 16}
    set_decoding_defaults(pkg, tuned)
    assert Transcriber.from_dir(pkg).rescorer == Rescorer(0.5, 2.0)
    pack_model(pkg, tmp_path / "m.pack", bits=8)
    assert read_packed(tmp_path / "m.pack").meta["decoding"] == {"blank_penalty": 0.5}
    out = unpack_model(tmp_path / "m.pack", tmp_path / "unpacked")
    tr = Transcriber.from_dir(out)
    assert tr.blank_penalty == 0.5 and not tr.rescorer.enabled and tr.beam == 4
    set_decoding_defaults(out, {"ctc_weight": 0.5})  # as if by hand: one pass, not a crash
    assert not Transcriber.from_dir(out).rescorer.enabled
    with pytest.raises(ValueError, match="CTC head"):
        Transcriber.from_dir(out, rescorer=Rescorer(ctc_weight=0.5))


@pytest.mark.parametrize("kernel", ["dense", "sparse"])
def test_numpy_transducer_matches_torch(packed_tiny, tmp_path, kernel):
    d, _, _ = packed_tiny
    pm = read_packed(d / "m.pack")
    ptq, _, _ = load_package(unpack_model(d / "m.pack", tmp_path / "unpacked"))  # same weights
    sm = SparseTransducer(pm, kernel)
    feats = np.random.default_rng(3).standard_normal((48, 80)).astype(np.float32)
    with torch.inference_mode():
        ref, _, _ = ptq.encode(torch.from_numpy(feats)[None], torch.tensor([48]))
    state, outs = None, []
    for s in range(0, 48, 16):
        enc, state = sm.encode_chunk(feats[s : s + 16], state)
        outs.append(enc)
    np.testing.assert_allclose(np.concatenate(outs), ref[0].numpy(), atol=1e-4)
    ctx = np.array([[0, 0], [0, 7], [7, 12]], dtype=np.int64)
    with torch.inference_mode():
        dec_ref = ptq.decode_tokens(torch.from_numpy(ctx)).numpy()
        join_ref = ptq.joiner(ref[0, :3], torch.from_numpy(dec_ref)).numpy()
    np.testing.assert_allclose(sm.decoder(ctx), dec_ref, atol=1e-5)
    np.testing.assert_allclose(sm.joiner(ref[0, :3].numpy(), dec_ref), join_ref, atol=1e-4)


def test_row_block_pruned_model_runs_on_the_row_block_kernel(tmp_path):
    model = _tiny_model(proj=True)
    names = compressible_weights(model)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n in names:
            w = params[n].view(params[n].shape[0], -1)
            keep = torch.rand(w.shape[0] // 8, w.shape[1], generator=gen) >= 0.7
            w.mul_(keep.repeat_interleave(8, dim=0))
    save_package(model, _tokenizer(), tmp_path / "pkg")
    pack_model(tmp_path / "pkg", tmp_path / "m.pack", bits=8, block=(8, 1))
    pm = read_packed(tmp_path / "m.pack")
    dense, sparse = SparseTransducer(pm, "dense"), SparseTransducer(pm, "sparse")
    w_ih = sparse.layers[0][0]
    assert w_ih._w.br == 8 and w_ih.macs < 0.4 * w_ih.in_features * w_ih.out_features
    feats = np.random.default_rng(1).standard_normal((32, 80)).astype(np.float32)
    a, _ = dense.encode_chunk(feats, None)
    b, _ = sparse.encode_chunk(feats, None)
    np.testing.assert_allclose(b, a, atol=1e-4)
    # auto: 8x1 blocks at 70% pay, so every pruned matrix skips zeros
    auto = SparseTransducer(pm)
    assert auto.layers[0][0].kernel == auto.layers[0][1].kernel == "sparse"


def test_auto_kernel_skips_zeros_only_where_it_pays():
    from edgeasr.runtime.kernels import ZERO_SKIP_MAX_DENSITY
    from edgeasr.runtime.sparse_model import Linear

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    assert Linear(w, None, "auto").kernel == "dense"  # nothing to skip
    for br, sparsity, expect in [(1, 0.5, "dense"), (1, 0.95, "sparse"), (8, 0.6, "sparse")]:
        keep = np.repeat(rng.random((64 // br, 32)) >= sparsity, br, axis=0)
        qt = QuantTensor(np.round(w * 10).astype(np.int32) * keep, np.ones(64, np.float32), 8)
        qt.block = (br, 1)
        lin = Linear(qt, None, "auto")
        density = keep.mean()
        assert lin.kernel == expect, (br, sparsity, density, ZERO_SKIP_MAX_DENSITY[br])
        x = rng.standard_normal((3, 32)).astype(np.float32)
        np.testing.assert_allclose(lin(x), x @ qt.dense().T, rtol=1e-4, atol=1e-3)


def test_pruner_with_skipping_steps_updates_at_crossings_and_reaches_the_target():
    """A clock-driven schedule jumps over steps: updates happen at the first step past each
    update point, and the first step past the end sets the target sparsity."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 8))
    names = compressible_weights(model)
    pr = Pruner(model, names, PruneConfig(0.6, 0.0, 0.5, 10, "layer", (1, 1)), total_steps=100)
    updated = [s for s in (0, 3, 7, 12, 13, 26, 44, 61, 90) if pr.update(s)]
    assert updated == [0, 12, 26, 44, 61]  # 50 (the end) is passed at 61
    assert pr.sparsity() == pytest.approx(0.6, abs=0.02)
    # consecutive steps give exactly the old update steps (every 10 from start, and the end)
    pr = Pruner(model, names, PruneConfig(0.6, 0.0, 0.55, 10, "layer", (1, 1)), total_steps=100)
    assert [s for s in range(100) if pr.update(s)] == [0, 10, 20, 30, 40, 50, 55]


def test_compression_training_prunes_and_quantises(tiny_corpus, tmp_path):
    base = tmp_path / "base"
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.max_steps = 1, 2
    best = Trainer(cfg, tiny_corpus, base).fit()
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.ctc_warmup_steps = 2, 0
    cfg.train.compression = CompressionConfig.from_dict(
        {
            "init_from": str(best),
            "bits": 4,
            "reg_weight": 0.1,
            "prune": {"target": 0.5, "start_frac": 0.0, "end_frac": 0.5, "every": 1},
        }
    )
    run = tmp_path / "qat"
    out = Trainer(cfg, tiny_corpus, run).fit()
    model, _, manifest = load_package(out)
    comp = manifest["info"]["compression"]
    assert comp["bits"] == 4 and comp["sparsity"] == pytest.approx(0.5, abs=0.03)
    params = dict(model.named_parameters())
    for n in comp["weights"]:
        q, scale = quantize(params[n], 4)
        assert torch.allclose(dequantize(q, scale), params[n], atol=1e-6), n  # on the grid
    assert (run / "ckpt" / "last.masks.safetensors").exists()
    assert (run / "ckpt" / "last.scales.safetensors").exists()  # 4-bit clipping points
    # the base tokenizer is kept, not retrained
    assert (run / "tokenizer.model").read_bytes() == (best / "tokenizer.model").read_bytes()


def test_recognizer_runs_a_packed_bundled_model_without_torch(tmp_path):
    summary = pack_model(DEFAULT_MODEL_DIR, tmp_path / "small.pack", bits=8)
    fp32 = (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size
    assert summary["bytes"] < fp32 / 3.5
    code = f"""
import sys, json
import soundfile as sf
from edgeasr.runtime import EndpointConfig, Recognizer
never = EndpointConfig(speculative_s=60, final_s=60, use_classifier=False, max_utterance_s=600)
samples, sr = sf.read({str(WAV)!r}, dtype="float32")
texts = []
for kernel in ("sparse", "dense"):
    rec = Recognizer({str(tmp_path / "small.pack")!r}, variant=kernel, endpoint=never)
    st = rec.create_stream()
    ev = st.accept_waveform(samples) + st.input_finished()
    texts.append(ev[-1].text)
print(json.dumps({{"texts": texts, "torch": "torch" in sys.modules}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert not res["torch"]
    assert res["texts"][0] == res["texts"][1] and res["texts"][0]
    from edgeasr.audio import load_audio
    from edgeasr.decode import Transcriber

    ptq_dir = unpack_model(tmp_path / "small.pack", tmp_path / "ptq")
    assert Transcriber.from_dir(ptq_dir).transcribe(load_audio(WAV)) == res["texts"][0]


def test_pack_and_unpack_cli(packed_tiny, tmp_path):
    d, _, _ = packed_tiny
    cli = [sys.executable, "-m", "edgeasr.cli"]
    r = subprocess.run(
        cli + ["pack", str(d / "pkg"), str(tmp_path / "m4.pack"), "--bits", "4", "--block", "1x4"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "4 bits" in r.stdout and "smaller" in r.stdout
    assert read_packed(tmp_path / "m4.pack").meta["compression"]["block"] == [1, 4]
    bad = tmp_path / "bad.pack"
    bad.write_bytes((tmp_path / "m4.pack").read_bytes()[:-10])
    r = subprocess.run(
        cli + ["unpack", str(bad), "--out", str(tmp_path / "u")], capture_output=True, text=True
    )
    assert r.returncode == 2 and "error:" in r.stderr and "checksum" in r.stderr
    assert not (tmp_path / "u").exists()
    r = subprocess.run(
        cli + ["unpack", str(tmp_path / "m4.pack"), "--out", str(tmp_path / "u")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert load_package(tmp_path / "u")[0].cfg.ctc_weight == 0.0


def test_tokenizer_without_nfkc_table_encodes_normalised_text_identically():
    from edgeasr.corpus.text import generate_utterances
    from edgeasr.tokenizer import Tokenizer, without_nfkc_table

    tok = Tokenizer.load(DEFAULT_MODEL_DIR / "tokenizer.model")
    probes = [u.text for u in generate_utterances(200, seed=5)]
    slim = without_nfkc_table(tok, probes)
    assert len(slim.model_proto) < len(tok.model_proto) / 4
    assert all(slim.encode(t) == tok.encode(t) for t in probes)
    # text NFKC would change (full-width letters) keeps the original table
    assert without_nfkc_table(tok, ["ｃａｌｌ mom"]) is tok


def test_packed_model_refuses_onnx_variants(packed_tiny):
    from edgeasr.runtime import Recognizer

    d, _, _ = packed_tiny
    with pytest.raises(ValueError, match="'auto', 'sparse' or 'dense'"):
        Recognizer(d / "m.pack", variant="int8")


def test_rate_penalty_is_the_codes_l1_norm_and_lowers_their_entropy_not_the_scale():
    torch.manual_seed(3)
    w = (torch.rand(8, 64) * 2 - 1).requires_grad_(True)  # uniform: codes of near-maximal entropy
    q, scale = quantize(w, 8)
    row_max = q.abs().amax(dim=1, keepdim=True)
    # the L1 norm of the codes, each row's largest left out (rounding: half a step per weight)
    expected = float((q.abs() * (q.abs() < row_max)).sum())
    assert rate_penalty(w, 8).item() == pytest.approx(expected, abs=0.5 * w.numel())
    rate_penalty(w, 8).backward()
    at_max = w.detach().abs() == w.detach().abs().amax(dim=1, keepdim=True)
    assert bool((w.grad[at_max] == 0).all())  # the row maxima (hence the scales) feel no pull
    assert bool((w.grad[~at_max] * w.detach()[~at_max] > 0).all())  # all others: towards zero
    # descending it peaks the codes' distribution: fewer bits per kept code, same scales
    shrunk = w.detach().clone()
    shrunk[~at_max] *= 0.25
    q2, scale2 = quantize(shrunk, 8)
    assert torch.equal(scale2, scale)
    assert code_entropy_bits(q2) < code_entropy_bits(q) - 1.5
    assert code_entropy_bits(torch.zeros(3, 3, dtype=torch.int32)) == 0.0
    assert code_entropy_bits(torch.tensor([1, -1, 0, 2, 2])) == pytest.approx(1.5)


def test_rate_regulariser_joins_the_loss_with_the_ramp_and_needs_quantisation():
    model = _tiny_model(seed=6)
    comp = Compressor(model, CompressionConfig(bits=8, rate_weight=1e-3), total_steps=100)
    params = dict(model.named_parameters())
    full = sum(rate_penalty(params[n], 8).item() for n in comp.names)
    assert comp.penalty(model, 0) is None  # the ramp starts at zero
    assert comp.penalty(model, 25).item() == pytest.approx(0.5e-3 * full, rel=1e-5)
    assert comp.penalty(model, 80).item() == pytest.approx(1e-3 * full, rel=1e-5)
    assert 0.0 < comp.summary(model)["code_bits"] <= 8.0
    with pytest.raises(ValueError, match="needs quantisation"):
        Compressor(model, CompressionConfig(rate_weight=1e-3), total_steps=100)
    with pytest.raises(ValueError, match="rate_weight"):
        CompressionConfig(bits=8, rate_weight=-1.0)


def test_rate_budget_controller_moves_the_weight_towards_the_budget_and_resumes():
    model = _tiny_model(seed=7)

    def controlled(target: float) -> Compressor:
        cfg = CompressionConfig(bits=8, rate_weight=1e-3, rate_target_bits=target)
        return Compressor(model, cfg, total_steps=1000)

    over, under = controlled(1.0), controlled(8.5)  # a dense int8 tiny model: ~7.7 bits
    assert 7.0 < over.rate_bits(model) < 8.0
    # next to no zeros: the map costs next to nothing
    assert over.rate_bits(model) == pytest.approx(over.code_bits(model), rel=0.01)
    for c in (over, under):
        c.after_step(model, SCALE_EVERY - 1)  # only on the controller's steps
        assert c.rate_scale == 1e-3
        c.after_step(model, SCALE_EVERY)
    step = 2.0**RATE_STEP  # far from the budget: the largest move
    assert over.rate_scale == pytest.approx(1e-3 * step)
    assert over.rate_log() == {
        "rate_weight": over.rate_scale,
        "rate_bits": pytest.approx(7.7, abs=0.3),
    }
    assert Compressor(model, CompressionConfig(bits=8), total_steps=10).rate_log() == {}
    assert under.rate_scale == pytest.approx(1e-3 / step)
    # no ramp under a budget: the controller's weight applies from the first step
    params = dict(model.named_parameters())
    full = sum(rate_penalty(params[n], 8).item() for n in over.names)
    assert over.penalty(model, 1).item() == pytest.approx(1e-3 * step * full, rel=1e-5)
    # a resumed run continues with the controller's weight, not the configured start
    assert over.has_state and not Compressor(model, CompressionConfig(bits=8), 10).has_state
    resumed = controlled(1.0)
    resumed.load_scale_state(over.scale_state())
    assert resumed.rate_scale == pytest.approx(1e-3 * step)
    assert resumed.last_rate_bits == pytest.approx(over.last_rate_bits)
    # the derivative term: still above its budget but falling fast, the estimate will be
    # below it within RATE_HORIZON moves, so the controller already eases off
    falling = controlled(7.0)
    bits = falling.rate_bits(model)
    assert bits > 7.0 and bits - RATE_HORIZON * 0.5 < 7.0
    falling.last_rate_bits = bits + 0.5
    falling.after_step(model, SCALE_EVERY)
    assert falling.rate_scale == pytest.approx(1e-3 / step)
    with pytest.raises(ValueError, match="starting rate_weight"):
        CompressionConfig(bits=8, rate_target_bits=4.0)


def test_compression_can_be_limited_to_a_prefix():
    from edgeasr.compress.training import Compressor
    from edgeasr.model.config import ModelConfig
    from edgeasr.model.transducer import Transducer

    model = Transducer(ModelConfig(vocab_size=16, encoder_dim=16, lstm_hidden=16, num_layers=1))
    cfg = CompressionConfig.from_dict({"only": "encoder.", "prune": {"target": 0.5}})
    names = Compressor(model, cfg, total_steps=10).names
    assert names and all(n.startswith("encoder.") for n in names)
    with pytest.raises(ValueError, match="no compressible weights"):
        Compressor(model, CompressionConfig.from_dict({"only": "nothing."}), total_steps=10)


def test_low_bit_qat_caches_clipping_scales_refreshes_them_and_exports_fresh():
    """Below 8 bits the forward pass uses clipping points cached every SCALE_EVERY steps and
    restored from a checkpoint; ``export`` searches anew, so packing reproduces its codes."""
    model = _tiny_model(seed=4)
    comp = Compressor(model, CompressionConfig(bits=4), total_steps=100)
    assert comp.scales and set(comp.scales) == set(comp.names)
    n = comp.names[0]
    params = dict(model.named_parameters())
    with torch.no_grad():
        params[n].mul_(3.0)  # the weights move; the cache does not, until the next refresh
    stale = comp.scales[n].clone()
    comp.after_step(model, SCALE_EVERY + 1)
    assert torch.equal(comp.scales[n], stale)
    comp.after_step(model, 2 * SCALE_EVERY)
    assert bool((comp.scales[n] > 2.5 * stale).all())
    restored = Compressor(_tiny_model(seed=5), CompressionConfig(bits=4), total_steps=100)
    restored.load_scale_state(comp.scale_state())
    assert all(torch.equal(restored.scales[k], comp.scales[k]) for k in comp.names)
    with torch.no_grad():
        params[n].mul_(0.5)
    exported = dict(comp.export(model).named_parameters())[n]
    q, scale = quantize(exported, 4)
    assert torch.equal(dequantize(q, scale), exported.detach())
    assert torch.equal(scale, channel_scale(params[n], 4).reshape(-1))
    assert not Compressor(model, CompressionConfig(bits=8), total_steps=100).scales  # max scale


def test_input_rms_measures_every_matrix_input():
    """Linear and LSTM matrices get the RMS of what they multiply; an LSTM's recurrent matrix
    reads its own outputs."""
    torch.manual_seed(6)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(3, 5)
            self.lstm = torch.nn.LSTM(5, 4, batch_first=True)

        def forward(self, x):
            return self.lstm(self.proj(x))[0].sum()

    net = Net()
    xs = [torch.randn(1, 7, 3) * torch.tensor([0.1, 1.0, 10.0]) for _ in range(3)]
    names = [n for n, p in net.named_parameters() if p.dim() == 2]
    rms = input_rms(net, names, [(x,) for x in xs])
    assert set(rms) == set(names)
    allx = torch.cat([x.reshape(-1, 3) for x in xs])
    assert torch.allclose(rms["proj.weight"], (allx**2).mean(0).sqrt(), rtol=1e-5)
    assert rms["lstm.weight_ih_l0"].shape == (5,) and rms["lstm.weight_hh_l0"].shape == (4,)
    assert bool((rms["lstm.weight_hh_l0"] < 1).all())  # tanh-bounded outputs
    assert net.training  # restored
    moments = input_moments(net, names, [(x,) for x in xs], full=True)
    assert torch.allclose(moments["proj.weight"], (allx.T @ allx).double() / len(allx))
    for n in names:
        assert torch.allclose(moments[n].diagonal().sqrt().float(), rms[n], rtol=1e-4)


def test_reconstruct_kept_refits_each_row_to_its_dense_output():
    torch.manual_seed(7)
    x = torch.randn(4000, 12) @ torch.randn(12, 12)  # correlated inputs
    moment = x.T @ x / len(x)
    w = torch.randn(8, 12)
    keep = torch.rand(8, 12) > 0.5
    keep[1] = keep[0]  # two rows of one block share one solve
    fit = reconstruct_kept(w, keep, moment)
    assert bool((fit[~keep] == 0).all())

    def err(v: torch.Tensor) -> torch.Tensor:
        return ((x @ v.T - x @ w.T) ** 2).mean(0)  # per row

    assert bool((err(fit) < 0.7 * err(w * keep)).all())
    # each row is (up to the ridge) the least-squares fit on its kept inputs
    for r in (0, 1, 5):
        k = keep[r]
        best = torch.linalg.lstsq(x[:, k], (x @ w[r]).unsqueeze(1)).solution.flatten()
        assert err(fit)[r] <= 1.02 * ((x[:, k] @ best - x @ w[r]) ** 2).mean()


def test_one_shot_pruning_refits_the_kept_weights_once():
    torch.manual_seed(8)
    net = torch.nn.Linear(10, 6, bias=False)
    x = torch.randn(500, 10) @ torch.randn(10, 10)
    moment = {"weight": x.T @ x / len(x)}
    cfg = PruneConfig(0.5, 0.0, 0.0, 1, "layer", (1, 1), reconstruct=True)
    plain = copy.deepcopy(net)
    Pruner(plain, ["weight"], PruneConfig(0.5, 0.0, 0.0, 1, "layer"), 10).update(0)
    pr = Pruner(net, ["weight"], cfg, 10, input_moment=moment)
    pr.update(0)
    assert torch.equal(pr.mask("weight").bool(), plain.weight != 0)  # the same zeros
    assert not torch.equal(net.weight, plain.weight)  # re-fitted kept weights
    out_err = ((x @ (net.weight - plain.weight).T) ** 2).mean()
    assert out_err > 0
    # a resumed run: the same mask again, and the weights fine-tuning moved stay as they are
    with torch.no_grad():
        net.weight.mul_(1.5)
    moved = net.weight.detach().clone()
    again = Pruner(net, ["weight"], cfg, 10, input_moment=moment)
    again.load_state_dict(pr.state_dict())
    again.update(5)
    assert torch.equal(net.weight, moved)
    with pytest.raises(ValueError, match="one-shot"):
        PruneConfig(0.5, 0.0, 0.6, 1, reconstruct=True)
    with pytest.raises(ValueError, match="second moments"):
        Pruner(net, ["weight"], cfg, 10)
    with pytest.raises(ValueError, match=r"input moment is \(9, 9\)"):
        Pruner(net, ["weight"], cfg, 10, input_moment={"weight": torch.eye(9)})


def test_activation_aware_pruning_keeps_small_weights_on_loud_inputs():
    def model() -> torch.nn.Linear:
        m = torch.nn.Linear(4, 6, bias=False)
        with torch.no_grad():
            distinct = torch.arange(24.0).reshape(6, 4) * 1e-3  # no ties at the threshold
            m.weight.copy_(torch.tensor([[0.1, 1.0, 1.0, 1.0]]).repeat(6, 1) + distinct)
        return m

    cfg = PruneConfig(0.25, 0.0, 0.0, 1, "global", (1, 1))
    loud_first = {"weight": torch.tensor([100.0, 1.0, 1.0, 1.0])}
    for saliency, scale, kept in (("magnitude", None, False), ("activation", loud_first, True)):
        cfg.saliency = saliency
        pr = Pruner(model(), ["weight"], cfg, total_steps=10, input_scale=scale)
        pr.update(0)
        assert bool(pr.mask("weight")[:, 0].bool().all()) is kept
        assert pr.sparsity() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="saliency"):
        Pruner(model(), ["weight"], PruneConfig(0.5, saliency="loudness"), total_steps=10)
    with pytest.raises(ValueError, match="input scale has 3 entries"):
        Pruner(model(), ["weight"], cfg, total_steps=10, input_scale={"weight": torch.ones(3)})


def test_activation_aware_compression_training_runs(tiny_base, tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.max_steps, cfg.train.ctc_warmup_steps = 1, 3, 0
    cfg.train.compression = CompressionConfig.from_dict(
        {
            "init_from": str(tiny_base),
            "prune": {
                "target": 0.5,
                "start_frac": 0.0,
                "end_frac": 0.0,
                "every": 1,
                "scope": "global",
                "saliency": "activation",
                "calibration_utts": 4,
            },
        }
    )
    out = Trainer(cfg, tiny_corpus, tmp_path / "act").fit()
    model, _, manifest = load_package(out)
    assert manifest["info"]["compression"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="statistics"):
        Compressor(model, cfg.train.compression, total_steps=3)
    # the same from the command line; a wrong score name is refused before any training
    cli = [sys.executable, "-m", "edgeasr.cli", "compress", "--corpus", str(tiny_corpus)]
    cli += ["--model", str(tiny_base), "--config", str(REPO / "configs" / "tiny.yaml")]
    cli += ["--bits", "0", "--sparsity", "0.5", "--scope", "global", "--max-steps", "2"]
    r = subprocess.run(
        cli + ["--out", str(tmp_path / "cli"), "--saliency", "activation"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "input statistics" in r.stderr and (tmp_path / "cli" / "model.pack").exists()
    r = subprocess.run(
        cli + ["--out", str(tmp_path / "bad"), "--saliency", "loudness"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "saliency must be 'magnitude' or 'activation'" in r.stderr
    assert not (tmp_path / "bad").exists()
    r = subprocess.run(
        cli + ["--out", str(tmp_path / "refit"), "--one-shot", "--reconstruct"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "refit" / "model.pack").exists()
    r = subprocess.run(
        cli + ["--out", str(tmp_path / "gradual"), "--reconstruct"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "reconstruct needs one-shot pruning" in r.stderr
    assert not (tmp_path / "gradual").exists()
    # a size budget for the rate regulariser: needs quantisation, refused before any training
    for bad, says in ((["--rate-target-bits", "-1"], "rate_target_bits must be >= 0"),
                      (["--rate-target-bits", "3"], "needs --bits")):  # fmt: skip
        r = subprocess.run(cli + ["--out", str(tmp_path / "rate"), *bad], capture_output=True,
                           text=True)  # fmt: skip
        assert r.returncode != 0 and says in r.stderr, r.stderr
    assert not (tmp_path / "rate").exists()
    r = subprocess.run(
        [*cli[:-8], "--bits", "8", "--sparsity", "0.5", "--max-steps", "2", "--rate-target-bits",
         "3", "--out", str(tmp_path / "rate")], capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = load_package(tmp_path / "rate" / "best")[2]["info"]["compression"]
    assert info["rate_weight"] > 0 and info["rate_bits"] > 0
