"""Accuracy benchmark pieces: real-set loading, the pocketsphinx peer, results pages, and a tiny
end-to-end run (untrained model, two espeak-ng cuts) so the script cannot rot unnoticed."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeasr.audio import resample_audio
from edgeasr.corpus import real
from edgeasr.corpus.real import EvalItem, load_real_set, normalize_reference, real_eval_sets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
_common = importlib.import_module("_common")

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
WORDS = re.compile(r"^[a-z']+( [a-z']+)*$")


def _espeak(text: str, path: Path, voice: str = "en-us") -> np.ndarray:
    subprocess.run(
        ["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True
    )
    x, sr = sf.read(path, dtype="float32")
    return resample_audio(x, sr, 16000)


# -- real eval sets --------------------------------------------------------------------------


def test_normalize_reference_lowercases_and_strips_punctuation() -> None:
    assert normalize_reference("Look at Bob's jeans.") == "look at bob's jeans"
    assert normalize_reference("  It's 'fine', OK?! ") == "it's fine ok"
    assert normalize_reference("call 911") == "call nine hundred eleven"


def _fake_set(root: Path) -> Path:
    d = root / "data" / "fsdd-test"
    (d / "wav").mkdir(parents=True)
    sf.write(d / "wav" / "3_x_0.wav", np.zeros(4000, np.float32) + 0.01, 8000)
    (d / "transcripts.tsv").write_text("file\ttext\tspeaker\nwav/3_x_0.wav\tThree!\tx\n")
    return root


def test_real_set_loader_upsamples_and_normalises(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(real.SHARED_ENV, str(_fake_set(tmp_path)))
    assert real.shared_dir() == tmp_path
    items = load_real_set("fsdd-test")
    assert [(i.id, i.text, i.speaker) for i in items] == [("fsdd-test/3_x_0", "three", "x")]
    x = items[0].load()
    assert x.dtype == np.float32 and x.shape == (8000,)  # 0.5 s at 16 kHz


def test_missing_shared_dir_is_empty_not_an_error(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv(real.SHARED_ENV, str(tmp_path / "nowhere"))
    assert real_eval_sets() == {}
    assert "not found" in caplog.text
    with pytest.raises(ValueError, match="unknown real eval set"):
        load_real_set("librispeech")


@pytest.mark.skipif(not (real.real_data_dir() / "fsdd-test").is_dir(), reason="no shared data")
def test_shipped_real_sets_have_clean_references() -> None:
    sets = real_eval_sets()
    assert len(sets["fsdd-test"]) == 300
    assert {i.text for i in sets["fsdd-test"]} == set(
        "zero one two three four five six seven eight nine".split()
    )
    so: list[EvalItem] = sets["speechocean762-test"]
    assert len(so) == 625 and all(WORDS.match(i.text) for i in so)
    assert all("age" in i.meta for i in so)
    assert so[0].load().dtype == np.float32


# -- pocketsphinx peer -----------------------------------------------------------------------


def test_clean_hypothesis_drops_fillers_and_alternates() -> None:
    from edgeasr.baselines.pocketsphinx_asr import clean_hypothesis

    assert clean_hypothesis("<s> So <sil> that(2) [NOISE] i ++BREATH++ </s>") == "so that i"
    assert clean_hypothesis("") == ""


@pytest.fixture(scope="module")
def sphinx():
    pytest.importorskip("pocketsphinx")
    from edgeasr.baselines.pocketsphinx_asr import PocketSphinxASR

    return PocketSphinxASR()


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")
def test_pocketsphinx_transcribes_espeak_utterance(sphinx, tmp_path: Path) -> None:
    hyp = sphinx.transcribe(_espeak("turn on the lights", tmp_path / "a.wav"))
    # espeak-ng is hard for pocketsphinx (~90% WER in our probes): demand plausible words only.
    assert hyp and WORDS.match(hyp), hyp
    assert sphinx.transcribe(np.zeros(1600, np.float32)) == ""  # silence → no words
    assert set(sphinx.model_files) == {"hmm", "lm", "dict"}


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")
def test_pocketsphinx_is_accurate_on_flite_slt(sphinx, tmp_path: Path) -> None:
    """flite slt is the voice pocketsphinx handles best (3% WER probe): a real accuracy check."""
    out = tmp_path / "b.wav"
    subprocess.run(
        ["flite", "-voice", "slt", "-t", "turn on the lights", "-o", str(out)],
        check=True,
        capture_output=True,
    )
    x, sr = sf.read(out, dtype="float32")
    assert sphinx.transcribe(resample_audio(x, sr, 16000)) == "turn on the lights"


# -- results pages ---------------------------------------------------------------------------


def test_markdown_table_and_results_page(tmp_path: Path) -> None:
    table = _common.markdown_table(["set", "WER"], [["a|b", _common.pct(0.1234)], ["c", "–"]])
    assert table.splitlines() == [
        "| set | WER |",
        "| :--- | ---: |",
        "| a\\|b | 12.3% |",
        "| c | – |",
    ]
    with pytest.raises(ValueError):
        _common.markdown_table(["a", "b"], [[1]])
    page = _common.ResultsPage(
        name="demo",
        title="Demo",
        command="python benchmarks/demo.py",
        machine={
            "cpu": "X",
            "cores": 2,
            "cores_usable": 1,
            "os": "L",
            "python": "3.11",
            "torch": "2",
        },
    )
    page.add("## Table\n\n" + table)
    page.data = {"wer": 0.1234}
    md, js = page.write(tmp_path)
    text = md.read_text()
    assert text.startswith("# Demo\n") and "python benchmarks/demo.py" in text
    assert "X, 2 cores (1 usable)" in text and "torch 2" in text and table in text
    assert json.loads(js.read_text())["data"] == {"wer": 0.1234}


def test_machine_info_and_helpers() -> None:
    info = _common.machine_info(packages=("numpy",))
    assert info["cores"] >= 1 and info["cpu"] and info["numpy"] == np.__version__
    assert _common.even_subset(list(range(10)), 4) == [0, 2, 5, 7]
    assert _common.even_subset([1, 2], 0) == [1, 2]
    assert _common.command_line([str(REPO / "benchmarks" / "x.py"), "--a", "b c"]) == (
        ".venv/bin/python benchmarks/x.py --a 'b c'"
    )


def test_summary_groups_and_ratio() -> None:
    acc = importlib.import_module("accuracy")
    rs = [
        acc.UttResult(
            "1",
            "a b",
            "espeak",
            "espeak:v1",
            2.0,
            {"edgeasr": "a b", "pocketsphinx": "a"},
            {"edgeasr": 0.1, "pocketsphinx": 0.4},
        ),
        acc.UttResult(
            "2",
            "c d",
            "flite",
            "flite:slt",
            2.0,
            {"edgeasr": "x d", "pocketsphinx": "c d"},
            {"edgeasr": 0.1, "pocketsphinx": 0.4},
        ),
    ]
    s = acc.summarize(rs, acc.SYSTEMS)
    assert s["edgeasr"]["wer"] == pytest.approx(0.25) and s["pocketsphinx"]["wer"] == 0.25
    assert s["edgeasr"]["rtf"] == pytest.approx(0.05)
    assert s["rtf_ratio_ps_over_edgeasr"] == pytest.approx(4.0)
    g = acc._grouped(rs, lambda r: r.group, acc.SYSTEMS)
    assert g["flite"]["pocketsphinx"]["wer"] == 0.0 and g["espeak"]["edgeasr"]["wer"] == 0.0


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")
def test_accuracy_script_end_to_end(sphinx, tmp_path: Path) -> None:
    """Untrained tiny model + two espeak-ng cuts: the script writes md, json and png."""
    from conftest import make_untrained_package
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    texts = ["turn on the lights", "call mom"]
    make_untrained_package(tmp_path / "model", texts)
    cuts = []
    for i, (t, v) in enumerate(zip(texts, ["en-us+f3", "en+m2"], strict=True)):
        wav = tmp_path / f"u{i}.wav"
        sf.write(wav, _espeak(t, wav, v), 16000)
        rec = Recording.from_file(wav, recording_id=f"u{i}")
        sup = SupervisionSegment(
            f"u{i}",
            f"u{i}",
            0,
            rec.duration,
            text=t,
            speaker=f"espeak:{v}",
            custom={"engine": "espeak"},
        )
        cuts.append(MonoCut(f"u{i}", 0, rec.duration, 0, recording=rec, supervisions=[sup]))
    (tmp_path / "corpus" / "manifests").mkdir(parents=True)
    CutSet.from_cuts(cuts).to_file(tmp_path / "corpus" / "manifests" / "test_cuts.jsonl.gz")

    acc = importlib.import_module("accuracy")
    out = tmp_path / "results"
    rc = acc.main(
        [
            "--corpus",
            str(tmp_path / "corpus"),
            "--model",
            str(tmp_path / "model"),
            "--sets",
            "test,test_xengine",
            "--out-dir",
            str(out),
            "--name",
            "acc",
        ]
    )
    assert rc == 0
    data = json.loads((out / "acc.json").read_text())["data"]
    assert data["missing_sets"] == ["test_xengine"]
    test = data["sets"]["test"]
    assert test["num_utts"] == 2 and set(test["by_group"]) == {"espeak"}
    assert set(test["by_voice"]) == {"espeak:en-us+f3", "espeak:en+m2"}
    assert test["pocketsphinx"]["rtf"] > 0 and test["edgeasr"]["rtf"] > 0
    md = (out / "acc.md").read_text()
    assert "benchmarks/accuracy.py --corpus" in md and "| test | 2 |" in md
    assert "(beam search, beam 4);" in md  # no second pass tuned into this package
    assert (out / "acc.png").stat().st_size > 1000
    from edgeasr.model.checkpoint import set_decoding_defaults

    set_decoding_defaults(tmp_path / "model", {"word_bonus": 1.5})
    assert "word bonus of 1.5" in acc.EdgeAsrSystem(tmp_path / "model", 8).decoding
