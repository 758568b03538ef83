"""Second pass: CTC log-likelihood against brute force and torch, reranking, and the Transcriber."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeasr.search.beam import Hypothesis, tuned_beam
from edgeasr.search.rescore import Rescorer, ctc_log_likelihood


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return tuple(out)


@pytest.mark.parametrize("tokens", [(), (1,), (1, 2), (2, 2), (1, 2, 1), (2, 2, 2)])
def test_ctc_matches_brute_force(tokens):
    rng = np.random.default_rng(len(tokens))
    T, V = 5, 3
    lp = _log_softmax(rng.normal(size=(T, V)))
    total = -math.inf
    for path in itertools.product(range(V), repeat=T):
        if _collapse(path) == tokens:
            total = np.logaddexp(total, sum(lp[t, s] for t, s in enumerate(path)))
    got = ctc_log_likelihood(lp, tokens)
    if total == -math.inf:
        assert got == -math.inf
    else:
        assert got == pytest.approx(total, abs=1e-9)


def test_ctc_matches_torch_on_realistic_shapes():
    rng = np.random.default_rng(0)
    T, V = 60, 40
    lp = _log_softmax(rng.normal(size=(T, V)) * 3)
    for tokens in ([5, 7, 7, 9], list(rng.integers(1, V, 20)), [3] * 12):
        ref = -F.ctc_loss(
            torch.from_numpy(lp)[:, None],
            torch.tensor([tokens]),
            torch.tensor([T]),
            torch.tensor([len(tokens)]),
            blank=0,
            reduction="sum",
        )
        assert ctc_log_likelihood(lp, tokens) == pytest.approx(float(ref), rel=1e-9, abs=1e-6)


def test_ctc_cannot_align_more_labels_than_frames():
    lp = _log_softmax(np.zeros((3, 4)))
    assert ctc_log_likelihood(lp, [1, 1, 1]) == -math.inf  # needs 1 _ 1 _ 1: five frames
    assert ctc_log_likelihood(lp, [1, 2, 3]) > -math.inf
    assert ctc_log_likelihood(np.zeros((0, 4)), []) == 0.0
    with pytest.raises(ValueError, match=r"\(T, V\)"):
        ctc_log_likelihood(np.zeros(4), [1])


def _words(tokens: list[int]) -> int:
    return len(tokens)  # one word per token in these tests


def test_rescorer_reranks_by_ctc_and_word_bonus():
    lp = np.log(np.full((6, 4), 0.02))
    lp[:, 0] = np.log(0.5)
    lp[1, 2] = lp[3, 3] = np.log(0.9)  # CTC hears 2 then 3
    a = Hypothesis([1], -1.0)  # the first pass' best
    b = Hypothesis([2, 3], -1.5)
    assert Rescorer().rerank([a, b], lp, _words) == [a, b]  # off: unchanged
    assert Rescorer(ctc_weight=1.0).rerank([a, b], lp, _words) == [b, a]
    assert Rescorer(word_bonus=1.0).rerank([a, b], None, _words) == [b, a]  # no CTC needed
    assert Rescorer(word_bonus=0.25).rerank([a, b], None, _words) == [a, b]
    # ties keep the first pass' order; the hypotheses themselves are not modified
    c = Hypothesis([1], -1.0)
    out = Rescorer(word_bonus=1.0).rerank([a, c], None, _words)
    assert out[0] is a and out[1] is c and a.log_prob == -1.0


def test_rescorer_scales_the_context_bonus_with_the_acoustic_evidence():
    """With CTC weight w the audio is counted 1 + w times, and so is shallow fusion's bonus:
    a context name keeps the same pull against the acoustics as in the first pass."""
    lp = np.log(np.full((4, 3), 0.1))
    lp[:, 0] = np.log(0.8)
    named = Hypothesis([1], -2.0, context_score=1.5)
    other = Hypothesis([2], -1.0)
    r = Rescorer(ctc_weight=1.0)
    s_named, s_other = r.scores([named, other], lp, _words)
    ctc = ctc_log_likelihood(lp, [1])  # the same for both tokens here
    assert s_named == pytest.approx(-2.0 + 2 * 1.5 + ctc)
    assert s_other == pytest.approx(-1.0 + ctc)
    assert r.rerank([other, named], lp, _words) == [named, other]
    # on a log-probability's scale for confidences: the audio was counted 1 + w = 2 times
    assert r.posterior_scores([named, other], lp, _words) == pytest.approx(
        [s_named / 2, s_other / 2]
    )
    assert Rescorer(word_bonus=0.1).scores([named], None, _words) == [pytest.approx(-0.4)]


def test_rescorer_refuses_bad_settings():
    with pytest.raises(ValueError, match="ctc_weight"):
        Rescorer(ctc_weight=-1.0)
    with pytest.raises(ValueError, match="finite"):
        Rescorer(word_bonus=float("nan"))
    with pytest.raises(ValueError, match="CTC head"):
        Rescorer(ctc_weight=0.5).rerank([Hypothesis([1], 0.0), Hypothesis([], 0.0)], None, _words)


def test_tuned_beam_reads_the_decoding_settings():
    assert tuned_beam({}) == 4
    assert tuned_beam({"beam": 16, "ctc_weight": 0.5}) == 16
    for bad in (0, -2, 2.5, "8", True):
        with pytest.raises(ValueError, match="beam"):
            tuned_beam({"beam": bad})


def test_transcriber_second_pass_streams_like_offline(tmp_path):
    """Rescoring happens once the utterance is over, so streamed and whole-utterance decoding
    still agree; a model without a CTC head refuses CTC rescoring."""
    from conftest import make_untrained_package

    from edgeasr.decode import Transcriber
    from edgeasr.features import compute_fbank
    from edgeasr.model.checkpoint import load_package, save_package

    texts = ["call anna on mobile", "turn on the kitchen lights", "play some jazz"]
    pkg = make_untrained_package(tmp_path / "m", texts)
    model, tok, _ = load_package(pkg)
    assert model.ctc_head is None
    with pytest.raises(ValueError, match="CTC head"):
        Transcriber(model, tok, rescorer=Rescorer(ctc_weight=0.5))
    model.cfg.ctc_weight = 0.3
    torch.manual_seed(0)
    model.ctc_head = torch.nn.Linear(model.cfg.encoder_dim, model.cfg.vocab_size)
    save_package(model, tok, tmp_path / "ctc")
    rng = np.random.default_rng(0)
    audio = (rng.normal(size=16000) * 0.1).astype(np.float32)
    tr = Transcriber.from_dir(tmp_path / "ctc", beam=4, rescorer=Rescorer(0.7, 0.5))
    offline = tr.decode_features(compute_fbank(audio))
    streamed = tr.decode_streaming(audio, chunk_ms=80)
    assert [h.tokens for h in offline] == [h.tokens for h in streamed]
    first, ctc = tr.first_pass(compute_fbank(audio))
    assert ctc is not None and ctc.shape[1] == model.cfg.vocab_size
    want = sorted(
        first,
        key=lambda h: (
            -(h.log_prob + 0.7 * ctc_log_likelihood(ctc, h.tokens) + 0.5 * tr.count_words(h.tokens))
        ),
    )
    assert [h.tokens for h in offline] == [h.tokens for h in want]
