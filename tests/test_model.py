"""Model shapes, streaming equivalence, search and model packages."""

import json

import numpy as np
import pytest
import torch

from edgeasr.model import ModelConfig, Transducer
from edgeasr.model.checkpoint import ModelPackageError, load_package, save_package
from edgeasr.model.scorer import TorchScorer
from edgeasr.search.beam import greedy_search, modified_beam_search, nbest
from edgeasr.tokenizer import train_tokenizer

TINY = ModelConfig(
    vocab_size=40,
    encoder_dim=24,
    lstm_hidden=32,
    num_layers=2,
    predictor_dim=16,
    joiner_dim=24,
    dropout=0.0,
)


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["call jonathan on his mobile", "turn on the kitchen lights", "play some music"] * 30
    return train_tokenizer(texts, 40)


def test_streaming_encoder_matches_offline():
    """Chunk-by-chunk encoding with carried state must equal whole-utterance encoding."""
    torch.manual_seed(0)
    model = Transducer(TINY).eval()
    feats = torch.randn(1, 96, 80)
    full, lens, _ = model.encode(feats, torch.tensor([96]))
    chunk = TINY.subsampling * 2
    state, outs = None, []
    for s in range(0, 96, chunk):
        out, _, state = model.encode(feats[:, s : s + chunk], torch.tensor([chunk]), state)
        outs.append(out)
    streamed = torch.cat(outs, 1)
    assert streamed.shape == full.shape == (1, 96 // TINY.subsampling, TINY.joiner_dim)
    assert torch.allclose(streamed, full, atol=1e-5)


def test_causal_future_frames_do_not_change_past_outputs():
    torch.manual_seed(1)
    model = Transducer(TINY).eval()
    a = torch.randn(1, 64, 80)
    b = a.clone()
    b[:, 32:] = torch.randn(1, 32, 80)
    oa, _, _ = model.encode(a, torch.tensor([64]))
    ob, _, _ = model.encode(b, torch.tensor([64]))
    n = 32 // TINY.subsampling
    assert torch.allclose(oa[:, :n], ob[:, :n], atol=1e-6)
    assert not torch.allclose(oa[:, n:], ob[:, n:])


def test_loss_backward_and_finite():
    torch.manual_seed(2)
    model = Transducer(TINY)
    loss = model(
        torch.randn(2, 80, 80),
        torch.tensor([80, 56]),
        torch.randint(1, 40, (2, 5)),
        torch.tensor([5, 3]),
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_beam_search_nbest_is_sorted_and_contains_greedy_quality():
    torch.manual_seed(3)
    scorer = TorchScorer(Transducer(TINY).eval())
    enc = scorer.encode(np.random.randn(160, 80).astype(np.float32))
    hyps = nbest(modified_beam_search(scorer, enc, beam=4))
    assert 1 <= len(hyps) <= 4
    lps = [h.log_prob for h in hyps]
    assert lps == sorted(lps, reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == len(hyps)  # merged: distinct transcripts
    assert all(len(h.frames) == len(h.tokens) for h in hyps)
    g = greedy_search(scorer, enc, max_symbols_per_frame=1)
    # beam search explores a superset of greedy's one-symbol-per-frame path
    assert hyps[0].log_prob >= g.log_prob - 1e-4


def test_beam_search_streaming_equals_offline():
    torch.manual_seed(4)
    scorer = TorchScorer(Transducer(TINY).eval())
    enc = scorer.encode(np.random.randn(200, 80).astype(np.float32))
    offline = nbest(modified_beam_search(scorer, enc, beam=3))
    st = None
    for s in range(0, enc.shape[0], 3):
        st = modified_beam_search(scorer, enc[s : s + 3], beam=3, state=st)
    streamed = nbest(st)
    assert [h.tokens for h in streamed] == [h.tokens for h in offline]


def test_package_roundtrip_and_tamper_detection(tmp_path, tokenizer):
    model = Transducer(TINY)
    save_package(model, tokenizer, tmp_path / "pkg")
    m2, tok2, manifest = load_package(tmp_path / "pkg")
    assert manifest["num_params"] == model.num_params()
    for k, v in model.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    assert tok2.encode("call jonathan") == tokenizer.encode("call jonathan")
    # flip one byte in the weights: rejected with a clear error
    w = tmp_path / "pkg" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="checksum"):
        load_package(tmp_path / "pkg")


def test_package_rejects_wrong_version_and_missing(tmp_path, tokenizer):
    save_package(Transducer(TINY), tokenizer, tmp_path / "pkg")
    mf = tmp_path / "pkg" / "manifest.json"
    m = json.loads(mf.read_text())
    m["version"] = 99
    mf.write_text(json.dumps(m))
    with pytest.raises(ModelPackageError, match="version"):
        load_package(tmp_path / "pkg")
    with pytest.raises(ModelPackageError, match="not a model package"):
        load_package(tmp_path / "nothing")
