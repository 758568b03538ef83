"""Tests for the synthetic corpus: text, voices, splits, and a tiny end-to-end synthesis."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeasr.audio import SAMPLE_RATE
from edgeasr.corpus import augment
from edgeasr.corpus.synth import SPLITS, SynthConfig, assign_voices, plan_job, render
from edgeasr.corpus.synth import synthesize_corpus as synth
from edgeasr.corpus.text import (
    HELD_OUT_NAMES,
    TEMPLATES,
    generate_utterances,
    normalize_text,
    number_to_words,
)
from edgeasr.corpus.tts import TTSError, Voice, list_voices, synthesize

HAVE_ENGINES = all(shutil.which(x) for x in ("espeak-ng", "flite", "text2wave"))
needs_engines = pytest.mark.skipif(not HAVE_ENGINES, reason="espeak-ng/flite/festival missing")
REF = re.compile(r"^[a-z']+( [a-z']+)*$")

# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Call  Jonathan!", "call jonathan"),
        ("Set a timer for 25 minutes.", "set a timer for twenty five minutes"),
        ("What's the  weather in São-Paulo?", "what's the weather in s o paulo"),
        ("'quoted' words", "quoted words"),
        ("rock & roll 100%", "rock and roll one hundred percent"),
        ("It\u2019s 7 O'Clock", "it's seven o'clock"),
        ("  ", ""),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_number_to_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(15) == "fifteen"
    assert number_to_words(40) == "forty"
    assert number_to_words(105) == "one hundred five"
    assert number_to_words(7019) == "seven thousand nineteen"
    with pytest.raises(ValueError):
        number_to_words(-1)


def test_generation_is_deterministic_and_prefix_stable() -> None:
    a = generate_utterances(200, seed=7)
    assert a == generate_utterances(200, seed=7)
    assert a[:50] == generate_utterances(50, seed=7)
    assert [u.text for u in a] != [u.text for u in generate_utterances(200, seed=8)]
    assert len({u.text for u in a}) > 150, "text is not varied enough"
    assert len(TEMPLATES) >= 40


def test_references_are_normalised_and_pauses_not_in_text() -> None:
    utts = generate_utterances(3000, seed=1)
    paused = [u for u in utts if len(u.segments) > 1]
    assert paused, "no template produced a pause"
    for u in utts:
        assert REF.match(u.text), u.text
        assert not re.search(r"\d", u.text)
        assert u.text == " ".join(u.segments)
        assert normalize_text(u.text) == u.text


def test_held_out_names_never_generated() -> None:
    held = set(HELD_OUT_NAMES)
    assert {"ledecky", "kalisz"} <= held and len(held) >= 30
    for seed in range(3):
        for u in generate_utterances(4000, seed=seed):
            assert not held & {w.removesuffix("'s") for w in u.text.split()}, u.text


def test_held_out_generation_contains_names() -> None:
    utts = generate_utterances(300, seed=0, names=HELD_OUT_NAMES)
    seen = set()
    for u in utts:
        hit = set(HELD_OUT_NAMES) & {w.removesuffix("'s") for w in u.text.split()}
        assert hit, u.text
        seen |= hit
    assert len(seen) > len(HELD_OUT_NAMES) // 2
    custom = generate_utterances(20, seed=0, names=["Zyxwv"])
    assert all("zyxwv" in u.text.replace("'s", "").split() for u in custom)


# --------------------------------------------------------------------------------------------
# Voices and splits
# --------------------------------------------------------------------------------------------


@needs_engines
def test_pseudo_names_are_new_words_and_deterministic() -> None:
    from edgeasr.corpus.text import pseudo_names, vocabulary

    names = pseudo_names(300, 0)
    assert len(set(names)) == 300 and names == pseudo_names(300, 0)
    assert pseudo_names(100, 0) == names[:100]  # prefix-stable
    assert pseudo_names(50, 1) != names[:50]
    assert not set(names) & (vocabulary() | set(HELD_OUT_NAMES))
    assert all(re.fullmatch(r"[a-z]{4,12}", n) for n in names)


def test_list_voices_and_whisper_flag() -> None:
    voices = list_voices()
    ids = [v.id for v in voices]
    assert len(ids) == len(set(ids))
    assert {"espeak", "flite", "festival"} <= {v.engine for v in voices}
    assert "flite:slt" in ids and "festival:kal_diphone" in ids
    assert not any("whisper" in v.name for v in voices)
    with_whisper = list_voices(include_whisper=True)
    assert any(v.name.endswith("+whisper") for v in with_whisper)
    assert Voice.from_id("espeak:en-us+f3").param("variant") == "f3"


@needs_engines
def test_split_voices_are_disjoint() -> None:
    voices = list_voices(include_whisper=False)
    splits = assign_voices(voices, "festival")
    assert all(splits[s] for s in SPLITS)
    ids = {s: {v.id for v in splits[s]} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    assert sum(len(v) for v in ids.values()) == len(voices)
    assert {v.engine for v in splits["test_xengine"]} == {"festival"}
    assert "festival" not in {v.engine for v in splits["train"]}
    train_variants = {v.param("variant") for v in splits["train"] if v.engine == "espeak"}
    for s in ("dev", "test"):
        held = {v.param("variant") for v in splits[s] if v.engine == "espeak"}
        assert held and not held & train_variants, s
    assert "flite:rms" in ids["test"]


@needs_engines
@pytest.mark.parametrize("vid", ["espeak:en-us+f3", "flite:kal", "festival:cmu_us_slt_arctic_hts"])
def test_synthesize_returns_16k_float(vid: str) -> None:
    slow = synthesize(Voice.from_id(vid), "call jonathan", rate=0.8, pitch=2.0)
    fast = synthesize(Voice.from_id(vid), "call jonathan", rate=1.3, pitch=2.0)
    assert slow.dtype == np.float32 and slow.ndim == 1
    assert 0.3 * SAMPLE_RATE < slow.size < 3 * SAMPLE_RATE
    assert fast.size < slow.size, "rate control had no effect"


def test_augment_bounds_and_snr() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros(SAMPLE_RATE, np.float32)
    x[4000:12000] = 0.5 * np.sin(np.arange(8000) * 0.1)
    assert augment.speech_bounds(x) == (4000, 12000)
    noisy = augment.add_noise(x, 20.0, "pink", (4000, 12000), rng)
    noise = noisy - x
    snr = 10 * np.log10(np.mean(x[4000:12000] ** 2) / np.mean(noise**2))
    assert abs(snr - 20.0) < 0.5
    rev = augment.reverberate(x, 0.4, rng)
    assert rev.shape == x.shape and np.abs(rev[12000:13000]).max() > 1e-3  # a tail exists


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------

SMALL = dict(hours=0.004, seed=11, jobs=2, dev_size=4, test_size=5, test_xengine_size=3)


def _small_voices() -> list[Voice]:
    want = {
        "train": "espeak:en-us espeak:en-gb+m1 flite:slt",
        "dev": "espeak:en-us+f5",
        "test": "espeak:en-us+f2 flite:rms",
        "test_xengine": "festival:kal_diphone festival:cmu_us_slt_arctic_hts",
    }
    ids = {vid for group in want.values() for vid in group.split()}
    return [v for v in list_voices() if v.id in ids]


def _read_jsonl_gz(path: Path, root: Path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return [line.replace(str(root), "<ROOT>") for line in f]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    if not HAVE_ENGINES:
        pytest.skip("TTS engines missing")
    out = tmp_path_factory.mktemp("corpus_a")
    summary = synth(out, voices=_small_voices(), **SMALL)
    return out, summary


@needs_engines
def test_tiny_corpus_manifests(tiny: tuple[Path, dict]) -> None:
    from lhotse import CutSet

    out, summary = tiny
    assert summary["utterances"]["dev"] == 4 and summary["utterances"]["test"] == 5
    assert summary["utterances"]["test_xengine"] == 3
    assert summary["hours"]["train"] >= 0.004
    assert json.loads((out / "corpus.json").read_text())["seed"] == 11
    texts: dict[str, set[str]] = {}
    for split in SPLITS:
        for kind in ("recordings", "supervisions", "cuts"):
            assert (out / "manifests" / f"{split}_{kind}.jsonl.gz").exists()
        cuts = CutSet.from_file(out / "manifests" / f"{split}_cuts.jsonl.gz")
        texts[split] = set()
        speakers = set()
        for cut in cuts:
            assert cut.sampling_rate == SAMPLE_RATE
            audio = cut.load_audio()
            assert audio.shape[0] == 1 and abs(audio.shape[1] - cut.num_samples) <= 1
            (sup,) = cut.supervisions
            assert 0.09 <= sup.start and sup.end <= cut.duration - 0.09
            assert sup.duration > 0.2
            assert REF.match(sup.text)
            assert sup.custom["engine"] == sup.speaker.split(":")[0]
            if split != "train":
                assert sup.custom["noise"] is None and sup.custom["rt60_s"] is None
            # the padding really is silence in clean splits
            if sup.custom["noise"] is None and sup.custom["rt60_s"] is None:
                lead = audio[0, : int(sup.start * SAMPLE_RATE) - 480]  # 30 ms trim margin
                assert np.abs(lead).max() < 1e-3
            texts[split].add(sup.text)
            speakers.add(sup.speaker)
        assert set(summary["voices"][split]) == speakers
    assert summary["engines"]["test_xengine"] == ["festival"]
    for s in ("dev", "test", "test_xengine"):
        assert not texts[s] & texts["train"], s
    lines = (out / "manifests" / "train_text.txt").read_text().splitlines()
    assert set(lines) == texts["train"] and len(lines) == summary["utterances"]["train"]


@needs_engines
def test_same_seed_same_corpus_and_resume(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    out_a, _ = tiny
    out_b = tmp_path / "corpus_b"
    synth(out_b, voices=_small_voices(), **{**SMALL, "jobs": 1})
    for split in SPLITS:
        for kind in ("recordings", "supervisions", "cuts"):
            name = f"{split}_{kind}.jsonl.gz"
            a = _read_jsonl_gz(out_a / "manifests" / name, out_a)
            b = _read_jsonl_gz(out_b / "manifests" / name, out_b)
            assert a == b, name
    text_a = (out_a / "manifests" / "train_text.txt").read_text()
    assert text_a == (out_b / "manifests" / "train_text.txt").read_text()
    flacs = sorted((out_a / "audio").glob("*/*.flac"))
    assert len(flacs) == sum(json.loads((out_a / "corpus.json").read_text())["utterances"].values())
    for flac in flacs:  # audio too, noise and reverb included
        x_a, _ = sf.read(flac)
        x_b, _ = sf.read(out_b / flac.relative_to(out_a))
        np.testing.assert_array_equal(x_a, x_b, err_msg=flac.name)

    # Resume: a missing FLAC is re-made, the rest reused, and the manifests do not change.
    victim = out_b / "audio" / "test" / "test-000001.flac"
    victim.unlink()
    synth(out_b, voices=_small_voices(), **SMALL)
    assert victim.exists()
    assert _read_jsonl_gz(out_b / "manifests" / "test_cuts.jsonl.gz", out_b) == _read_jsonl_gz(
        out_a / "manifests" / "test_cuts.jsonl.gz", out_a
    )

    # A training-only corpus: the same train and dev, no test audio or manifests, and it needs
    # no voice of the held-out engine (a training machine may lack festival).
    out_d = tmp_path / "corpus_d"
    no_festival = [v for v in _small_voices() if v.engine != "festival"]
    summary_d = synth(out_d, voices=no_festival, **SMALL, test_audio=False)
    assert summary_d["splits"] == ["train", "dev"] and summary_d["utterances"]["test"] == 0
    for split in ("train", "dev"):
        name = f"{split}_cuts.jsonl.gz"
        assert _read_jsonl_gz(out_d / "manifests" / name, out_d) == _read_jsonl_gz(
            out_a / "manifests" / name, out_a
        )
    assert not list((out_d / "manifests").glob("test*")) and not (out_d / "audio" / "test").exists()

    # A different seed gives different text.
    out_c = tmp_path / "corpus_c"
    synth(out_c, voices=_small_voices(), **{**SMALL, "seed": 12, "hours": 0.001})
    assert (out_c / "manifests" / "train_text.txt").read_text() != text_a


@needs_engines
def test_failed_voice_falls_back_and_never_raises(tmp_path: Path) -> None:
    cfg = SynthConfig(seed=0)
    (utt,) = generate_utterances(1, seed=0)
    job = plan_job(cfg, "test", 0, utt, [Voice.from_id("flite:slt")])
    (tmp_path / "test").mkdir()
    bad = dataclasses.replace(job, voice="flite:no_such_voice", fallback_voice="flite:slt")
    rec = render(bad, tmp_path)
    assert "error" not in rec and rec["speaker"] == "flite:slt"
    assert rec["custom"]["planned_voice"] == "flite:no_such_voice"
    both_bad = dataclasses.replace(bad, fallback_voice="flite:also_missing")
    rec = render(both_bad, tmp_path)
    assert "error" in rec


# --------------------------------------------------------------------------------------------
# Pauses spoken with continuing prosody
# --------------------------------------------------------------------------------------------


def test_ssml_breaks_escape_text_and_match_pauses() -> None:
    from edgeasr.corpus.tts import ssml_with_breaks

    doc = ssml_with_breaks(["call", "tom & jerry <3"], [0.5])
    assert doc == '<speak>call <break time="500ms"/> tom &amp; jerry &lt;3</speak>'
    with pytest.raises(ValueError, match="2 segments need 1 pauses"):
        ssml_with_breaks(["call", "tom"], [])
    with pytest.raises(ValueError, match="pause_prosody"):
        SynthConfig(pause_prosody="rising")


def _longest_silence_s(x: np.ndarray) -> float:
    """Longest run of 10 ms frames more than 40 dB under the utterance's loudest frame."""
    frames = x[: x.size // 160 * 160].reshape(-1, 160)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    quiet = db < db.max() - 40
    best = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        best = max(best, run)
    return best / 100


@needs_engines
@pytest.mark.parametrize("vid", ["espeak:en-us+f2", "espeak:en-gb"])
def test_continuing_prosody_speaks_one_phrase_with_the_planned_pause(
    vid: str, tmp_path: Path
) -> None:
    from edgeasr.corpus.text import make_utterance

    utt = make_utterance("send a message to henry | saying i am late", None, None, -1)
    final = plan_job(SynthConfig(seed=0, pause_s=(0.6, 0.6)), "test", 0, utt, [Voice.from_id(vid)])
    cont = dataclasses.replace(final, pause_prosody="continuing")
    # the default leaves the fingerprint of corpora made before the setting existed unchanged
    recipe = dataclasses.asdict(final)
    del recipe["pause_prosody"]
    blob = json.dumps(recipe, sort_keys=True).encode()
    assert final.fingerprint() == hashlib.sha256(blob).hexdigest()[:16]
    assert cont.fingerprint() != final.fingerprint()
    (tmp_path / "test").mkdir()
    recs = {}
    for job in (final, cont):
        rec = render(job, tmp_path)
        recs[job.pause_prosody] = (rec, sf.read(rec["path"], dtype="float32")[0])
    assert "pause_prosody" not in recs["final"][0]["custom"]
    assert recs["continuing"][0]["custom"]["pause_prosody"] == "continuing"
    for _, (rec, x) in recs.items():
        speech = x[rec["speech_start"] : rec["speech_end"]]
        # (some espeak variants breathe into a break: not all of it is under -40 dB)
        assert 0.45 <= _longest_silence_s(speech) <= 0.75
    # one engine call, not two sentences: the audio differs (and is not the joined render)
    assert recs["final"][1].size != recs["continuing"][1].size


@needs_engines
@pytest.mark.parametrize("vid", ["festival:kal_diphone", "flite:slt"])
def test_engines_without_timed_breaks_fall_back(vid: str) -> None:
    from edgeasr.corpus.synth import _prosody_used
    from edgeasr.corpus.text import make_utterance

    utt = make_utterance("call | jonathan", None, None, -1)
    voice = Voice.from_id(vid)
    job = plan_job(SynthConfig(seed=0, pause_prosody="continuing"), "test", 0, utt, [voice])
    with pytest.raises(TTSError, match="does not take timed SSML breaks"):
        synthesize(voice, "<speak>call</speak>", ssml=True)
    assert _prosody_used(job, voice) == "final"


@needs_engines
def test_rerender_split_pairs_with_the_corpus(
    tiny_corpus: Path, tiny: tuple[Path, dict], tmp_path: Path
) -> None:
    from edgeasr.corpus.extra import rerender_split

    before = {p: p.read_bytes() for p in (tiny_corpus / "audio" / "test").glob("*.flac")}
    recs = rerender_split(tiny_corpus, "test", tmp_path, lambda j: True, pause_prosody="continuing")
    assert len(recs) == len(before)
    originals = {
        json.loads(line)["id"]: json.loads(line)
        for line in (tiny_corpus / "work" / "test_done.jsonl").read_text().splitlines()
    }
    for rec in recs:
        orig = originals[rec["id"]]
        assert rec["text"] == orig["text"] and rec["speaker"] == orig["speaker"]
        if not orig["custom"]["pauses_s"]:  # nothing to change: the very same audio
            np.testing.assert_array_equal(sf.read(rec["path"])[0], sf.read(orig["path"])[0])
    assert {p: p.read_bytes() for p in before} == before  # the corpus itself is untouched
    # train re-plans too (its sentences were drawn avoiding the eval splits' sentences)
    train = {
        json.loads(line)["id"]: json.loads(line)
        for line in (tiny_corpus / "work" / "train_done.jsonl").read_text().splitlines()
    }
    first = sorted(train)[:3]
    recs = rerender_split(tiny_corpus, "train", tmp_path, lambda j: j.id in first)
    assert [r["id"] for r in recs] == first
    for rec in recs:
        assert rec["text"] == train[rec["id"]]["text"]
        np.testing.assert_array_equal(sf.read(rec["path"])[0], sf.read(train[rec["id"]]["path"])[0])
    # a corpus this machine's voices cannot re-plan exactly is refused
    other, _ = tiny
    with pytest.raises(ValueError, match="cannot be re-planned"):
        rerender_split(other, "test", tmp_path / "x", lambda j: True, pause_prosody="continuing")


def test_corpus_synth_refuses_an_unknown_pause_prosody(tmp_path: Path) -> None:
    from edgeasr.corpus.synth import corpus_synth_command

    with pytest.raises(ValueError, match="pause_prosody must be one of"):
        corpus_synth_command(tmp_path / "c", 0.001, 1, pause_prosody="rising")
    assert not (tmp_path / "c").exists()
