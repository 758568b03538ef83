"""The causal Conformer encoder: streaming equals offline, causality, export, training."""

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeasr.export.onnx import export_runtime_package
from edgeasr.model.config import ModelConfig
from edgeasr.model.transducer import Transducer
from edgeasr.runtime.onnx_model import OnnxTransducer
from edgeasr.runtime.package import RuntimePackageError, encoder_state_shapes, load_runtime_package
from edgeasr.tokenizer import train_tokenizer
from edgeasr.train.config import load_experiment
from edgeasr.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]

CFG = ModelConfig(
    vocab_size=40,
    encoder_type="conformer",
    stack=8,
    reduce_after=0,
    encoder_dim=24,
    num_layers=2,
    attention_heads=4,
    left_context=5,
    ff_dim=48,
    conv_kernel=4,
    predictor_dim=16,
    joiner_dim=24,
    dropout=0.0,
)


def _model(seed: int = 0) -> Transducer:
    torch.manual_seed(seed)
    model = Transducer(CFG).eval()
    with torch.no_grad():  # a trained-looking position table, so offsets matter in the tests
        for layer in model.encoder.layers:
            layer.pos_bias.normal_()
    return model


@pytest.mark.parametrize("chunk_frames", [1, 3, 7])
def test_streaming_in_any_chunk_size_equals_whole_utterance(chunk_frames):
    """Far longer than the left context, so the caches roll over many times."""
    model = _model()
    T = 8 * 40
    feats = torch.randn(1, T, 80)
    full, lens, _ = model.encode(feats, torch.tensor([T]))
    step = 8 * chunk_frames
    state, outs = None, []
    for s in range(0, T, step):
        piece = feats[:, s : s + step]
        out, _, state = model.encode(piece, torch.tensor([piece.shape[1]]), state)
        outs.append(out)
    streamed = torch.cat(outs, 1)
    assert streamed.shape == full.shape == (1, 40, CFG.joiner_dim)
    torch.testing.assert_close(streamed, full, atol=1e-5, rtol=1e-4)
    assert [tuple(s.shape) for s in state] == [
        (2, 1, 5, 2 * 24 + 1),
        (2, 1, 3, 24),
    ]


def test_causal_and_limited_to_its_receptive_field():
    """Future frames change nothing before them; frames beyond the receptive field of every layer
    (left context plus convolution, per layer) change nothing either."""
    model = _model(1)
    a = torch.randn(1, 8 * 60, 80)
    b = a.clone()
    b[:, 8 * 30 :] = torch.randn(1, 8 * 30, 80)
    oa, _, _ = model.encode(a, torch.tensor([8 * 60]))
    ob, _, _ = model.encode(b, torch.tensor([8 * 60]))
    torch.testing.assert_close(oa[:, :30], ob[:, :30], atol=1e-6, rtol=0)
    assert not torch.allclose(oa[:, 30:], ob[:, 30:])
    c = a.clone()
    c[:, :8] = torch.randn(1, 8, 80)  # change frame 0 only
    oc, _, _ = model.encode(c, torch.tensor([8 * 60]))
    reach = CFG.num_layers * (CFG.left_context + CFG.conv_kernel - 1)
    assert not torch.allclose(oa[:, :reach], oc[:, :reach])
    torch.testing.assert_close(oa[:, reach + 1 :], oc[:, reach + 1 :], atol=1e-6, rtol=0)


def test_padding_in_a_batch_does_not_change_real_frames():
    model = _model(2)
    x = torch.randn(2, 8 * 12, 80)
    out, lens, _ = model.encode(x, torch.tensor([8 * 12, 8 * 7]))
    alone, _, _ = model.encode(x[1:, : 8 * 7], torch.tensor([8 * 7]))
    assert lens.tolist() == [12, 7]
    torch.testing.assert_close(out[1:, :7], alone, atol=1e-5, rtol=1e-4)


def test_loss_backward_reaches_every_parameter():
    torch.manual_seed(3)
    model = Transducer(CFG)
    loss = model(
        torch.randn(2, 96, 80),
        torch.tensor([96, 64]),
        torch.randint(1, 40, (2, 5)),
        torch.tensor([5, 3]),
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_frame_macs_count_weights_and_attention():
    model = _model()
    D, F, K, N = 24, 48, 4, 5
    per_layer = 2 * (2 * D * F) + 3 * D * D + D * D + 2 * D * D + D * D + D * K
    expected = 8 * 80 * D + 2 * (per_layer + 2 * (N + 1) * D)
    assert model.encoder.frame_macs() == expected


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="reduce_after 0"):
        ModelConfig(encoder_type="conformer")
    with pytest.raises(ValueError, match="multiple of attention_heads"):
        ModelConfig(encoder_type="conformer", reduce_after=0, encoder_dim=30, attention_heads=4)
    with pytest.raises(ValueError, match="unknown encoder_type"):
        ModelConfig(encoder_type="transformer")
    with pytest.raises(RuntimePackageError, match="does not run 'amortized'"):
        encoder_state_shapes({"encoder_type": "amortized", "num_layers": 1, "encoder_dim": 8})


def test_onnx_runtime_streams_the_conformer_like_torch(tmp_path):
    """fp32 graphs with the caches as state equal torch; int8 stays close (relative error of the
    whole output). The model is tiny and untrained, so int8 only gets a loose bound: an LSTM of
    the same width is off by 0.19 here, this model by 0.23, and a broken graph by about 1."""
    model = _model(4)
    tok = train_tokenizer(["call jonathan on his mobile", "turn on the lights"] * 40, 40)
    pkg = load_runtime_package(export_runtime_package(model, tok.model_proto, tmp_path / "rt"))
    feats = np.random.default_rng(0).standard_normal((8 * 30, 80)).astype(np.float32)
    with torch.inference_mode():
        ref, _, _ = model.encode(torch.from_numpy(feats)[None], torch.tensor([len(feats)]))
    for variant, tol in (("fp32", 1e-5), ("int8", 0.35)):
        rt = OnnxTransducer(pkg, variant)
        state, outs = None, []
        for s in range(0, len(feats), 16):  # two frames per chunk
            enc, state = rt.encode_chunk(feats[s : s + 16], state)
            outs.append(enc)
        got = np.concatenate(outs)
        err = np.linalg.norm(got - ref[0].numpy()) / np.linalg.norm(ref[0].numpy())
        assert err < tol, (variant, err)


def test_recognizer_streams_a_conformer_package_independently_of_piece_size(tmp_path):
    """The device recogniser runs a Conformer package as it runs an LSTM one: the same events
    whether audio arrives in 10 ms pieces or 1 s pieces."""
    from edgeasr.audio import load_audio
    from edgeasr.runtime import EndpointConfig, Recognizer

    model = _model(5)
    tok = train_tokenizer(["call jonathan on his mobile", "turn on the lights"] * 40, 40)
    pkg = export_runtime_package(model, tok.model_proto, tmp_path / "rt", int8=False)
    never = EndpointConfig(speculative_s=60, final_s=60, use_classifier=False, max_utterance_s=600)
    rec = Recognizer(pkg, variant="fp32", endpoint=never)
    samples = load_audio(sorted((REPO / "samples").glob("*.wav"))[0])
    runs = []
    for piece in (160, 16000):
        st = rec.create_stream()
        events = [
            e
            for s in range(0, len(samples), piece)
            for e in st.accept_waveform(samples[s : s + piece])
        ]
        runs.append([(e.kind, e.time_s, e.text) for e in events + st.input_finished()])
    assert runs[0] == runs[1] and runs[0][-1][0] == "final_end"


def test_trainer_trains_and_ships_a_conformer(tiny_corpus, tmp_path):
    cfg = load_experiment(REPO / "configs" / "tiny-conformer.yaml")
    cfg.train.max_steps = 4
    best = Trainer(cfg, tiny_corpus, tmp_path / "run").fit()
    assert (best / "manifest.json").exists()
    from edgeasr.model.checkpoint import load_package

    model, _, _ = load_package(best)
    assert model.cfg.encoder_type == "conformer"


def test_sparse_runtime_refuses_a_conformer_package_clearly():
    from types import SimpleNamespace

    from edgeasr.runtime.sparse_model import SparseTransducer

    packed = SimpleNamespace(meta={"model_config": CFG.to_dict()}, tensors={})
    with pytest.raises(ValueError, match="LSTM encoders only, not 'conformer'"):
        SparseTransducer(packed)
