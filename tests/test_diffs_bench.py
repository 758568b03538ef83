"""A tiny end-to-end run of benchmarks/diffs.py (tiny model, two updates, a few steps) so the
script cannot rot unnoticed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
bench = importlib.import_module("diffs")


def test_method_slugs_are_unique():
    slugs = [m.slug for m in bench.methods()]
    assert len(set(slugs)) == len(slugs)


def test_control_corpora_are_recognised_from_their_update_json(tiny_updates, tmp_path):
    assert bench.control_of(tiny_updates) == ""  # the real scenario
    assert bench.control_of(tmp_path) == ""  # nothing there
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "update.json").write_text(json.dumps({"control": "null: swapped"}))
    assert bench.control_of(tmp_path) == "null: swapped"


def test_original_test_wer_splits_by_the_voice_engine():
    from edgeasr.train.data import Utterance

    utts = [
        Utterance("a", 0, 10, "call mum now", "espeak:en-us+f2"),
        Utterance("b", 10, 10, "open the door", "flite:rms"),
        Utterance("c", 20, 10, "stop", "flite:rms"),
        Utterance("d", 30, 10, "play jazz", "espeak:en-gb+m3"),
    ]
    # 1 error in 5 espeak words, 2 in 4 flite words: the pooled 3/9 hides the split
    assert bench.by_engine([1, 2, 0, 0], utts) == {"espeak": 0.2, "flite": 0.5}
    with pytest.raises(ValueError, match="3 per-utterance error counts for 4 utterances"):
        bench.by_engine([1, 2, 0], utts)


def test_tiny_run_chains_updates_on_the_device_and_writes_page(
    tiny_corpus, tiny_base, tiny_updates, tmp_path
):
    only = ["full fine-tune", "sparse 10%", "LoRA 1.5%"]
    argv = [
        "--corpus", str(tiny_corpus), "--model", str(tiny_base), "--updates", str(tiny_updates),
        "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"),
        "--updates-n", "2", "--max-steps", "2", "--max-utts", "2", "--only", *only,
    ]  # fmt: skip
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "out" / "diffs.json").read_text())["data"]
    assert [m["name"] for m in data["methods"]] == only
    for m in data["methods"]:
        steps = m["steps"]
        assert [s["update"] for s in steps] == [1, 2]
        # each update was applied on top of the previous one
        assert steps[0]["result_sha256"] != steps[1]["result_sha256"]
    full, _, lora = data["methods"]
    assert all(s["diff_bytes"] < 0.2 * s["model_bytes"] for s in lora["steps"])
    assert all(r["ok"] for r in data["rejections"]) and len(data["rejections"]) == 4
    assert (tmp_path / "out" / "diffs.png").stat().st_size > 1000
    assert "## Bars (issue 6)" in (tmp_path / "out" / "diffs.md").read_text()
    # the original test's errors per utterance, for the paired interval against v0
    assert all(len(s["test_errors"]) == 2 for m in data["methods"] for s in m["steps"])
    assert len(data["v0"]["test_errors"]) == 2
    assert "*vs v0* with the 95% interval" in (tmp_path / "out" / "diffs.md").read_text()
    md = (tmp_path / "out" / "diffs.md").read_text()
    assert "## The original test by the voice's TTS engine" in md
    # the table's reading notes come from the corpora: voices heard, the updates' engines
    assert "of the test's voices" in md and "The updates' new voices are " in md
    # a rerun resumes from the recorded steps instead of training again; a step saved before
    # the per-utterance errors were kept gets them by decoding its stored version again
    v1 = tmp_path / "runs" / "full-fine-tune" / "v1.json"
    old = json.loads(v1.read_text())
    v1.write_text(json.dumps({k: v for k, v in old.items() if k != "test_errors"}))
    assert bench.main(argv) == 0
    again = json.loads((tmp_path / "out" / "diffs.json").read_text())["data"]
    assert again["methods"][0]["steps"] == data["methods"][0]["steps"]
    assert json.loads(v1.read_text()) == old
    # a saved step its stored version no longer reproduces is refused, not silently mixed in
    stale = {k: v for k, v in old.items() if k != "test_errors"}
    v1.write_text(json.dumps({**stale, "wer_test": old["wer_test"] + 0.01}))
    with pytest.raises(RuntimeError, match="no longer gives the saved original-test WER"):
        bench.main(argv)


def test_fresh_replay_config_rehearses_the_base_corpus(
    tiny_corpus, tiny_base, tiny_updates, tmp_path
):
    argv = [
        "--corpus", str(tiny_corpus), "--model", str(tiny_base), "--updates", str(tiny_updates),
        "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"),
        "--config", str(REPO / "configs" / "update-replay.yaml"),
        "--updates-n", "1", "--max-steps", "2", "--max-utts", "2", "--only", "full fine-tune",
        "--name", "diffs-replay-tiny",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    cfg = (tmp_path / "runs" / "full-fine-tune" / "v1" / "config.yaml").read_text()
    assert f"replay_corpus: {tiny_corpus}" in cfg and "replay_utts: 300" in cfg
    page = (tmp_path / "out" / "diffs-replay-tiny.md").read_text()
    # a named page shows its own plot
    assert "(diffs-replay-tiny.png)" in page
    assert (tmp_path / "out" / "diffs-replay-tiny.png").is_file()
    assert "configs/update-replay.yaml" in page and "300 base utterances drawn afresh" in page


def test_a_longer_chain_reuses_a_shorter_runs_dir(tiny_corpus, tiny_base, tiny_updates, tmp_path):
    """Extending a run from one update to two keeps update 1 and evaluates v0 on update 2's new
    material too (it used to fail on the shorter run's v0 evaluation)."""

    def argv(n: int) -> list[str]:
        return [
            "--corpus", str(tiny_corpus), "--model", str(tiny_base), "--updates", str(tiny_updates),
            "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"),
            "--updates-n", str(n), "--max-steps", "2", "--max-utts", "2", "--only", "sparse 10%",
        ]  # fmt: skip

    assert bench.main(argv(1)) == 0
    first = json.loads((tmp_path / "runs" / "sparse-10" / "v1.json").read_text())
    assert bench.main(argv(2)) == 0
    assert json.loads((tmp_path / "runs" / "sparse-10" / "v1.json").read_text()) == first
    v0 = json.loads((tmp_path / "runs" / "v0.json").read_text())
    assert set(v0["per_update"]) == {"u1", "u2"}
