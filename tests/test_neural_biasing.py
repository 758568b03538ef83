"""Neural biasing: the pointer trie, the TCPGen module, its training, export and search wiring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeasr.model.biaser import BiaserConfig, PointerBiaser
from edgeasr.model.config import ModelConfig
from edgeasr.model.joiner import Joiner
from edgeasr.search.beam import modified_beam_search, nbest
from edgeasr.search.pointer import NUM_FEATURES, OFF, PointerTrie
from edgeasr.tokenizer import BLANK_ID

# toy vocabulary: 0 blank, word-start pieces 1, 4, 6; continuations 2, 3, 5
WORD_START = np.array([False, True, False, False, True, False, True])


def test_trie_states_masks_and_features():
    trie = PointerTrie([[1, 2, 3], [1, 5], [4]], WORD_START)
    assert len(trie) == 3
    s = trie.states([6, 1, 2, 3, 4, 1, 3])
    # 6 starts no context word; 1 2 3 walks into a word; 4 is a one-token word; 1 3 leaves it
    assert s[0] == OFF and s[1] == OFF
    assert s[2] != OFF and s[3] != OFF and s[4] != OFF and s[5] != OFF
    assert s[6] != OFF and s[7] == OFF
    starts = {1, 4}
    for state, extra in ((OFF, set()), (s[2], {2, 5}), (s[3], {3}), (s[4], set())):
        assert set(np.flatnonzero(trie.valid([state])[0])) == starts | extra
    f = trie.features([OFF, s[2], s[3], s[4], s[5]])
    assert f.shape == (5, NUM_FEATURES)
    assert f[:, :4].argmax(1).tolist() == [0, 1, 2, 3, 1]  # off, depth 1, 2, 3+, 1 ("4")
    assert f[:, 4].tolist() == [0, 0, 0, 1, 1]  # a whole context word ends there


def test_trie_rejects_what_is_not_a_word():
    with pytest.raises(ValueError, match="one word"):
        PointerTrie([[2, 3]], WORD_START)  # starts with a continuation piece
    with pytest.raises(ValueError, match="one word"):
        PointerTrie([[1, 4]], WORD_START)  # two words
    with pytest.raises(ValueError, match="outside"):
        PointerTrie([[1, 9]], WORD_START)


def test_trie_from_phrases_with_the_bundled_tokenizer():
    from edgeasr.decode import DEFAULT_MODEL_DIR
    from edgeasr.tokenizer import Tokenizer

    tok = Tokenizer.load(Path(DEFAULT_MODEL_DIR) / "tokenizer.model")
    trie = PointerTrie.from_phrases(["Ledecky", "anna marie", "ledecky"], tok)
    assert len(trie) == 3  # ledecky once, anna and marie as words of their own
    toks = tok.encode("ledecky")
    states = trie.states(toks)
    for t, st in zip(toks, states[:-1], strict=True):
        assert trie.valid([st])[0, t] == 1.0  # every token of the word is pointable in turn
    assert trie.features([states[-1]])[0, 4] == 1.0
    # user data: what normalises to nothing or cannot be spelt is left out, not an error
    assert len(PointerTrie.from_phrases(["\u674e", "", "  ", "Zo\u00eb"], tok)) == 1


def _biaser(V: int = 7, J: int = 8, gate_bias: float = 0.0, seed: int = 0) -> PointerBiaser:
    torch.manual_seed(seed)
    joiner = Joiner(ModelConfig(vocab_size=V, joiner_dim=J))
    b = PointerBiaser(joiner, BiaserConfig(attn_dim=4, gate_hidden=8, gate_bias=gate_bias))
    with torch.no_grad():
        b.keys.normal_()
    return b.eval()


def test_biased_distribution_is_normalised_and_keeps_blank():
    b = _biaser()
    enc, dec = torch.randn(6, 8), torch.randn(6, 8)
    valid = (torch.rand(6, 7) < 0.5).float()
    valid[0] = 0.0  # nothing to point at: exactly the model
    feats = torch.rand(6, NUM_FEATURES)
    lp = b(enc, dec, valid, feats, 0.7)
    np.testing.assert_allclose(lp.exp().sum(-1).detach().numpy(), 1.0, atol=1e-5)
    logits = b.joiner(enc, dec)
    logits[:, BLANK_ID] -= 0.7
    base = torch.log_softmax(logits, -1)
    torch.testing.assert_close(lp[:, BLANK_ID], base[:, BLANK_ID])
    torch.testing.assert_close(lp[0], base[0])
    assert (lp[1:] - base[1:]).abs().max() > 1e-3  # the pointer does change the others


def test_lattice_log_probs_match_the_full_distribution():
    b = _biaser()
    B, T, U = 2, 5, 3
    enc, dec = torch.randn(B, T, 8), torch.randn(B, U + 1, 8)
    y = torch.randint(1, 7, (B, U))
    valid = (torch.rand(B, U + 1, 7) < 0.5).float()
    feats = torch.rand(B, U + 1, NUM_FEATURES)
    blank, label = b.lattice_log_probs(enc, dec, y, valid, feats)
    full = b(enc[:, :, None], dec[:, None], valid[:, None], feats[:, None])
    torch.testing.assert_close(blank, full[..., BLANK_ID])
    idx = y[:, None, :, None].expand(-1, T, -1, 1)
    torch.testing.assert_close(label[:, :, :U], full[:, :, :U].gather(-1, idx).squeeze(-1))


class _ToyScorer:
    """A fixed joiner (blank likely) with a pointer that trusts the trie and prefers continuing
    a word to starting one; records the masks it is given."""

    context_size = 2

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def decoder(self, contexts):
        return np.zeros((len(contexts), 1), np.float32)

    def joiner(self, enc, dec):
        out = np.full((len(enc), 7), -1.0, np.float32)
        out[:, BLANK_ID] = 0.5
        return out

    def biased_log_probs(self, enc, dec, valid, feats, blank_penalty, gate_offset=0.0):
        self.seen.append(valid.copy())
        lp = self.joiner(enc, dec).astype(np.float64)
        lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
        p = np.exp(lp)
        ptr = valid * np.where(WORD_START, 1.0, 9.0)
        ptr[:, BLANK_ID] = 0.0
        ptr = ptr / np.maximum(ptr.sum(1, keepdims=True), 1e-9)
        g = 0.99 * (valid.sum(1, keepdims=True) > 0)
        mixed = (1 - g) * p + g * (1 - p[:, :1]) * ptr
        mixed[:, BLANK_ID] = p[:, BLANK_ID]
        return np.log(np.maximum(mixed, 1e-30)).astype(np.float32)


def test_beam_search_carries_pointer_states_and_follows_the_word():
    trie = PointerTrie([[1, 2, 3]], WORD_START)
    scorer = _ToyScorer()
    enc = np.zeros((8, 1), np.float32)
    plain = nbest(modified_beam_search(scorer, enc, beam=3))[0]
    assert plain.tokens == []  # the model alone says nothing
    st = modified_beam_search(scorer, enc[:4], beam=3, pointer=trie)
    st = modified_beam_search(scorer, enc[4:], beam=3, state=st)  # streaming: state carries on
    for h in st.hyps:
        assert h.pointer_state == trie.states(h.tokens)[-1]
    assert nbest(st)[0].tokens[:3] == [1, 2, 3]
    assert scorer.seen and all(v.shape[1] == 7 for v in scorer.seen)
    with pytest.raises(ValueError, match="pointer"):
        modified_beam_search(scorer, enc, state=st, pointer=PointerTrie([[4]], WORD_START))


def test_training_lowers_the_loss_and_resumes(tiny_corpus, tiny_base, tmp_path):
    """Material synthesised with made-up names, a held-back loss below the frozen model's, a run
    that resumes after its last finished epoch, and the module stored in the package."""
    from edgeasr.model.checkpoint import load_package
    from edgeasr.train.biaser import BiaserTrainConfig, load_biaser, train_biaser

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_base, model_dir)
    cfg = BiaserTrainConfig(names=12, synth_utts=20, plain_utts=6, epochs=1, lr=1e-2)
    work = tmp_path / "work"
    info = train_biaser(model_dir, tiny_corpus, cfg, work)
    assert info["train_utts_with_name"] >= 15
    assert info["held_loss_per_token_biased"] < info["held_loss_per_token_unbiased"]
    longer = BiaserTrainConfig(**{**cfg.__dict__, "epochs": 2})
    info2 = train_biaser(model_dir, tiny_corpus, longer, work)
    assert [h["epoch"] for h in info2["history"]] == [2]  # epoch 1 was not trained again
    other = BiaserTrainConfig(**{**longer.__dict__, "lr": 5e-3})  # other settings: from scratch
    assert [h["epoch"] for h in train_biaser(model_dir, tiny_corpus, other, work)["history"]] == [
        1,
        2,
    ]
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["biaser"]["file"] in manifest["files"]
    assert manifest["biaser"]["info"]["config"]["epochs"] == 2
    load_biaser(model_dir / manifest["biaser"]["file"], load_package(model_dir)[0])


def test_export_matches_torch_and_the_runtime_uses_it_with_context(tmp_path):
    from conftest import make_untrained_package

    from edgeasr.export import export_model_dir
    from edgeasr.model.checkpoint import load_package
    from edgeasr.runtime import Recognizer, RuntimePackageError
    from edgeasr.runtime.onnx_model import OnnxTransducer
    from edgeasr.runtime.package import load_runtime_package
    from edgeasr.train.biaser import load_biaser, save_biaser

    model_dir = make_untrained_package(tmp_path / "model", ["call zdrovicz now", "play music"])
    model = load_package(model_dir)[0]
    torch.manual_seed(0)
    b = PointerBiaser(model.joiner, BiaserConfig(attn_dim=4, gate_hidden=8, gate_bias=0.0))
    with torch.no_grad():
        b.keys.normal_()
    save_biaser(model_dir, b, {"note": "untrained"})
    manifest = json.loads((model_dir / "manifest.json").read_text())
    biaser = load_biaser(model_dir / manifest["biaser"]["file"], model)

    pkg = export_model_dir(model_dir, tmp_path / "onnx", int8=False)
    onnx = OnnxTransducer(load_runtime_package(pkg))
    assert onnx.has_biaser
    J, V = model.cfg.joiner_dim, model.cfg.vocab_size
    rng = np.random.default_rng(0)
    enc = rng.normal(size=(5, J)).astype(np.float32)
    dec = rng.normal(size=(5, J)).astype(np.float32)
    valid = (rng.random((5, V)) < 0.3).astype(np.float32)
    feats = rng.random((5, NUM_FEATURES)).astype(np.float32)
    for offset in (0.0, -2.0):
        with torch.inference_mode():
            args = (torch.from_numpy(a) for a in (enc, dec, valid, feats))
            ref = biaser(*args, 1.0, offset).numpy()
        got = onnx.biased_log_probs(enc, dec, valid, feats, 1.0, offset)
        np.testing.assert_allclose(got, ref, atol=1e-4)

    audio = np.random.default_rng(1).normal(0, 0.05, 16000).astype(np.float32)
    on, off = Recognizer(pkg), Recognizer(pkg, neural_biasing=False)
    assert on.neural_biasing and not off.neural_biasing
    # defaults chosen on dev for the biasing that is active; explicit values win
    assert (on.context_boost, on.gate_offset, off.context_boost) == (0.0, -2.0, 0.5)
    assert Recognizer(pkg, context_boost=1.0, gate_offset=0.5).gate_offset == 0.5
    st = on.create_stream(context=["zdrovicz"])
    assert st._utt.beam.pointer is not None
    st.accept_waveform(audio)
    st.input_finished()
    assert off.create_stream(context=["zdrovicz"])._utt.beam.pointer is None
    assert on.create_stream()._utt.beam.pointer is None  # no context, no pointer

    # a runtime package whose biaser graph has no checksum is refused
    rt = json.loads((pkg / "runtime.json").read_text())
    del rt["files"][rt["biaser"]["file"]]
    (pkg / "runtime.json").write_text(json.dumps(rt))
    with pytest.raises(RuntimePackageError, match="without checksum"):
        load_runtime_package(pkg)


def test_train_biaser_cli_refuses_bad_sizes(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "edgeasr.cli", "train-biaser", "--corpus", str(tmp_path)]
    r = subprocess.run([*cmd, "--epochs", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "must be at least 1" in r.stderr
