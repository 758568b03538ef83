"""The N-best language-model probe: its n-gram is a normalised distribution and reranks."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
probe = importlib.import_module("probe_nbest_lm")

SENTENCES = ["call anna", "call anna on mobile", "play jazz", "play some jazz in the kitchen"]


@pytest.mark.parametrize("history", [[], ["call"], ["<s>", "<s>", "<s>"], ["play", "some"], ["zz"]])
def test_ngram_sums_to_one(history: list[str]) -> None:
    lm = probe.WordNgram(SENTENCES, order=3)
    vocab = {w for s in SENTENCES for w in s.split()} | {probe.EOS}
    total = sum(lm.prob(history, w) for w in vocab) + lm.prob(history, "never-seen")
    assert math.isclose(total, 1.0, rel_tol=1e-9)


def test_ngram_prefers_seen_continuations() -> None:
    lm = probe.WordNgram(SENTENCES, order=3)
    assert lm.log_prob("call anna on mobile") > lm.log_prob("call anna on jazz")
    assert lm.prob(["call", "anna"], probe.EOS) > lm.prob(["call", "anna"], "kitchen")


def test_rerank_trades_acoustic_score_against_lm() -> None:
    lm = probe.WordNgram(SENTENCES, order=3)
    nbest = [("call and a", -1.0), ("call anna", -1.5)]
    assert probe.rerank(nbest, lm, weight=0.0, bonus=0.0) == "call and a"
    assert probe.rerank(nbest, lm, weight=1.0, bonus=0.0) == "call anna"
    assert probe.rerank([], lm, weight=1.0, bonus=0.0) == ""


def test_ngram_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        probe.WordNgram(SENTENCES, order=0)
    with pytest.raises(ValueError):
        probe.WordNgram(SENTENCES, discount=1.0)
