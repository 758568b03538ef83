"""Biasing benchmark pieces: the name-recall metric, contact lists, boost choice, and a tiny
end-to-end run (bundled model, the bundled samples plus a few espeak-ng utterances) so the
script cannot rot unnoticed."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
bias = importlib.import_module("biasing")

HAVE_ESPEAK = shutil.which("espeak-ng") is not None


# -- metric ----------------------------------------------------------------------------------


def test_count_phrase_is_word_level_and_non_overlapping() -> None:
    assert bias.count_phrase(["a", "b"], "x a b a b".split()) == 2
    assert bias.count_phrase(["a", "a"], "a a a".split()) == 1
    assert bias.count_phrase(["ann"], "call anna".split()) == 0  # whole words only
    assert bias.count_phrase([], "a b".split()) == 0
    assert bias.count_phrase(["a", "b", "c"], "a b".split()) == 0


def test_name_counts_recall_and_false_names() -> None:
    ctx = ["jon", "smith", "zed", "mary ann"]
    c = bias.name_counts("call jon smith", "call jon", ctx)
    assert (c.ref, c.hit, c.false, c.utts_false) == (2, 1, 0, 0)
    assert c.recall == pytest.approx(0.5) and c.error == pytest.approx(0.5)
    c = bias.name_counts("call jon smith", "call zed zed jon smith", ctx)
    assert (c.ref, c.hit, c.false, c.utts_false) == (2, 2, 2, 1)
    # a repeated name earns one hit per reference occurrence, the extra copy is a false name
    c = bias.name_counts("call jon", "call jon jon", ctx)
    assert (c.ref, c.hit, c.false) == (1, 1, 1)
    # multi-word phrases must appear as the same word sequence
    assert bias.name_counts("text mary ann now", "text mary and ann now", ctx).hit == 0
    assert bias.name_counts("text mary ann now", "text mary ann now", ctx).hit == 1
    # possessives count as the name; the hypothesis may drop or keep the 's
    c = bias.name_counts("what's zed's number", "what's zed number", ctx)
    assert (c.ref, c.hit) == (1, 1)
    # no context name in the reference: recall undefined, not 0
    c = bias.name_counts("turn on the lights", "turn on the zed", ctx)
    assert c.recall is None and c.error is None and c.false == 1


def test_name_counts_accumulate() -> None:
    total = bias.NameCounts()
    total += bias.name_counts("call jon", "call jon", ["jon"])
    total += bias.name_counts("call jon", "call john", ["jon"])
    total += bias.name_counts("play jazz", "play jon", ["jon"])
    assert (total.ref, total.hit, total.false, total.utts_false) == (2, 1, 1, 1)
    assert total.recall == pytest.approx(0.5)


def test_relative_reduction() -> None:
    assert bias.relative_reduction(0.8, 0.4) == pytest.approx(0.5)
    assert bias.relative_reduction(0.5, 0.6) == pytest.approx(-0.2)
    assert bias.relative_reduction(0.0, 0.0) is None
    assert bias.relative_reduction(None, 0.1) is None


# -- names and contact lists -------------------------------------------------------------------


def test_targets_are_long_tail_and_held_out_names() -> None:
    t = bias.target_names()
    assert bias.targets_in("call john abernathy on mobile", t) == ("abernathy",)
    assert bias.targets_in("how far is wroclaw from wroclaw", t) == ("wroclaw",)
    assert bias.targets_in("what's grzegorz's phone number", t) == ("grzegorz",)
    assert bias.targets_in("call james", t) == ()


def test_context_list_holds_targets_and_avoids_reference_words() -> None:
    pool = bias._dedupe(sum(bias.name_pools().values(), ()))
    text = "call john abernathy on mobile"
    a = bias.context_list("u1", text, ("abernathy",), 100, pool, seed=0)
    assert len(a) == len(set(a)) == 100 and "abernathy" in a
    assert "john" not in a  # a common first name in the reference is not a distractor
    assert a == bias.context_list("u1", text, ("abernathy",), 100, pool, seed=0)
    assert a != bias.context_list("u2", text, ("abernathy",), 100, pool, seed=0)
    assert a != bias.context_list("u1", text, ("abernathy",), 100, pool, seed=1)
    b = bias.context_list("u3", "turn on the lights", (), 10, pool, seed=0)
    assert len(b) == 10 and not set(b) & {"turn", "on", "the", "lights"}
    assert bias.context_list("u4", "x", (), 10_000, pool, seed=0).__len__() == len(pool)


# -- boost choice and the bar ----------------------------------------------------------------


def _sets(recall: float, wer: float) -> dict:
    return {bias.ALL_NAMES: {"recall": recall}, bias.NO_NAME: {"wer": wer}}


def test_choose_boost_maximises_recall_within_the_wer_bar() -> None:
    base = _sets(0.1, 0.200)
    sweep = {
        "0.5": _sets(0.2, 0.201),
        "1": _sets(0.4, 0.204),
        "2": _sets(0.6, 0.210),  # too much over-triggering
        "3": _sets(0.4, 0.203),  # ties with 1 on recall: the smaller boost wins
    }
    b, reason = bias.choose_boost(base, sweep)
    assert b == 1.0 and "3 of 4 qualify" in reason
    b, reason = bias.choose_boost(base, {"2": _sets(0.6, 0.21), "3": _sets(0.7, 0.22)})
    assert b == 2.0 and "smallest rise" in reason


def test_bar_verdicts() -> None:
    def side(err: float, wer: float, occ: int = 10) -> dict:
        return {"name_error": err, "name_occurrences": occ, "wer": wer}

    base = {bias.ALL_NAMES: side(0.8, 0.3), bias.NO_NAME: side(None, 0.200, 0)}
    good = {bias.ALL_NAMES: side(0.4, 0.25), bias.NO_NAME: side(None, 0.205, 0)}
    bad = {bias.ALL_NAMES: side(0.5, 0.25), bias.NO_NAME: side(None, 0.206, 0)}
    v = bias.bar_verdicts(bias.compare(base, good))
    assert v["name_errors_halved[all name sets]"]["pass"] and v["no_name_wer_rise"]["pass"]
    assert bias.bar_met(v)
    v = bias.bar_verdicts(bias.compare(base, bad))
    assert not v["name_errors_halved[all name sets]"]["pass"]
    assert not v["no_name_wer_rise"]["pass"]
    assert not bias.bar_met(v)


# -- end to end ------------------------------------------------------------------------------


def _write_cuts(corpus: Path, split: str, items: list[tuple[str, Path, str, str]]) -> None:
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    cuts = []
    for uid, wav, text, voice in items:
        rec = Recording.from_file(wav, recording_id=uid)
        sup = SupervisionSegment(
            uid,
            uid,
            0,
            rec.duration,
            text=text,
            speaker=voice,
            custom={"engine": voice.partition(":")[0]},
        )
        cuts.append(MonoCut(uid, 0, rec.duration, 0, recording=rec, supervisions=[sup]))
    (corpus / "manifests").mkdir(parents=True, exist_ok=True)
    CutSet.from_cuts(cuts).to_file(corpus / "manifests" / f"{split}_cuts.jsonl.gz")


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")
def test_biasing_script_end_to_end(tmp_path: Path) -> None:
    """Bundled model; samples as test/dev, one espeak long-tail cut, two synthesised per set."""
    import soundfile as sf

    from edgeasr.corpus.tts import Voice, synthesize

    samples = REPO / "samples"
    rows = [ln.split("\t") for ln in (samples / "references.tsv").read_text().splitlines()[1:]]
    base = [(f.removesuffix(".wav"), samples / f, t, v) for f, t, v in rows]
    wav = tmp_path / "lt.wav"
    sf.write(wav, synthesize(Voice.from_id("espeak:en-us+m3"), "call abernathy"), 16000)
    corpus = tmp_path / "corpus"
    _write_cuts(corpus, "test", [*base, ("test-lt", wav, "call abernathy", "espeak:en-us+m3")])
    _write_cuts(corpus, "dev", [(f"dev-{u}", w, t, v) for u, w, t, v in base[:3]])
    (corpus / "corpus.json").write_text(
        json.dumps(
            {
                "seed": 1,
                "config": {"seed": 1, "rate": [0.9, 1.1]},
                "voice_pool": {"test": ["espeak:en-us+f2"], "dev": ["espeak:en-us+f5"]},
            }
        )
    )
    out = tmp_path / "results"
    argv = [
        "--one-pass",  # final_end is then the first pass' 1-best without context (checked below)
        "--corpus",
        str(corpus),
        "--eval-splits",
        "test,test_xengine",
        "--n-synth",
        "2",
        "--n-dev-synth",
        "1",
        "--context-size",
        "20",
        "--boosts",
        "1",
        "3",
        "--out-dir",
        str(out),
        "--name",
        "bias",
    ]
    assert bias.main(argv) == 0

    data = json.loads((out / "bias.json").read_text())["data"]
    assert data["missing_splits"] == ["test_xengine"]
    assert data["set_sizes"]["test"] == {
        bias.NO_NAME: 6,
        bias.LT_CORPUS: 1,
        bias.LT_SYNTH: 2,
        bias.HO_SYNTH: 2,
    }
    assert data["chosen_boost"] in (1.0, 3.0)
    test = data["runs"]["test"]
    assert set(test["sweep"]) == {"1", "3"} and set(test["oracle"]) == {"1", "3"}
    base_final = test["baseline"]["final_end"]
    assert base_final[bias.ALL_NAMES]["name_occurrences"] == 5
    assert base_final[bias.NO_NAME]["name_occurrences"] == 0
    cmp = data["test_at_chosen_boost"]["final_end"]
    assert {"without", "with", "name_error_reduction", "wer_change"} <= set(cmp[bias.ALL_NAMES])
    assert set(data["bar"]["verdicts"]) >= {
        "no_name_wer_rise",
        f"name_errors_halved[{bias.ALL_NAMES}]",
    }
    assert data["final_end_vs_one_best"]["without_context"] == 0
    assert isinstance(data["bar"]["met"], bool)

    md = (out / "bias.md").read_text()
    assert "benchmarks/biasing.py --one-pass --corpus" in md
    assert "turned off for this page (`--one-pass`)" in md and "beam 16" in md
    for heading in (
        "## Eval sets",
        "## Contact lists and metrics",
        "## Bar (test sets, boost",
        "## Results on test at boost",
        "## Boost sweep on dev (used to choose the boost)",
        "## Boost sweep on test (for information only",
        "## final_end vs the biased 1-best",
        "## Diagnostic: contact list = only the true names",
    ):
        assert heading in md, heading
    assert ("PASS: no-name WER" in md) or ("FAIL: no-name WER" in md)
    assert (out / "bias.png").stat().st_size > 1000

    # the synthesised audio is cached: a rerun renders nothing new
    cache = corpus / "biasing"
    flacs = {p: p.stat().st_mtime_ns for p in cache.rglob("*.flac")}
    assert len(flacs) == 2 * 2 + 2 * 1
    assert bias.main([*argv[:-7], "--boosts", "1", "--out-dir", str(out), "--name", "b2"]) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.flac")} == flacs

    # --neural: the model's biasing module (here an untrained one) swept over gate offsets
    import torch

    from edgeasr.model.biaser import BiaserConfig, PointerBiaser
    from edgeasr.model.checkpoint import load_package
    from edgeasr.train.biaser import save_biaser

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    bundled = REPO / "models" / "edgeasr-small-en"
    for f in [*json.loads((bundled / "manifest.json").read_text())["files"], "manifest.json"]:
        shutil.copy(bundled / f, model_dir / f)
    torch.manual_seed(0)
    biaser = PointerBiaser(load_package(model_dir)[0].joiner, BiaserConfig(gate_bias=0.0))
    save_biaser(model_dir, biaser, {"note": "untrained, for the test"})
    neural = [*argv[:-7], "--model", str(model_dir), "--neural", "--gate-offsets", "-1", "0"]
    assert bias.main([*neural, "--out-dir", str(out), "--name", "bn"]) == 0
    data = json.loads((out / "bn.json").read_text())["data"]
    assert set(data["runs"]["test"]["sweep"]) == {"-1", "0"}
    md = (out / "bn.md").read_text()
    assert "## Gate offset sweep on dev (used to choose the gate offset)" in md
    assert "neural biasing module" in md
    # a model without a module is refused with a clear message, not run with nothing to test
    manifest = json.loads((model_dir / "manifest.json").read_text())
    del manifest["files"][manifest.pop("biaser")["file"]]
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    assert bias.main([*neural, "--out-dir", str(out), "--name", "bx"]) == 2
