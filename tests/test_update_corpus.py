"""The model-update scenario (edgeasr.corpus.updates): what each update teaches, and its corpora."""

from __future__ import annotations

import json
import re

from lhotse import CutSet

from edgeasr.corpus.text import HELD_OUT_NAMES, utterance_rng, vocabulary
from edgeasr.corpus.updates import UPDATES, update_utterance
from edgeasr.train.data import cuts_path


def test_updates_teach_disjoint_unseen_names_and_new_commands():
    seen = vocabulary()
    names = [n for spec in UPDATES for n in spec.names]
    assert len(UPDATES) == 5 and len(names) == len(set(names))
    assert set(names) <= set(HELD_OUT_NAMES) and not set(names) & seen
    for spec in UPDATES:
        # the new command types bring words the base corpus never has
        words = {w for c in spec.commands for w in re.sub(r"\{\w+\}|\|", " ", c).split()}
        assert words - seen, spec.theme
        utts = [update_utterance(spec, utterance_rng(0, "t", i)) for i in range(300)]
        with_name = [u for u in utts if set(u.text.split()) & set(spec.names)]
        assert 0.45 < len(with_name) / len(utts) < 0.75
        # no other update's names leak in
        others = set(names) - set(spec.names)
        assert not any(set(u.text.split()) & others for u in utts)
        again = [update_utterance(spec, utterance_rng(0, "t", i)) for i in range(300)]
        assert again == utts


def test_update_corpora_have_new_material_replay_and_unseen_test_sentences(tiny_updates):
    for spec in UPDATES:
        d = tiny_updates / f"v{spec.index}"
        summary = json.loads((d / "update.json").read_text())
        k = spec.index
        assert summary["utterances"] == {
            "test": 2, "dev": 2, "train": 4, "replay": 2, "replay_previous": k - 1, "dev_base": 2
        }  # fmt: skip
        train = CutSet.from_file(cuts_path(d, "train"))
        test = CutSet.from_file(cuts_path(d, "test"))
        assert len(train) == 6 + k - 1 and len(test) == 2
        # replay: base utterances from the base corpus's own audio, and each earlier update's
        assert sum(c.id.startswith("train-") for c in train) == 2
        for j in range(1, k):
            assert sum(c.id.startswith(f"u{j}-train-") for c in train) == 1
        train_texts = {c.supervisions[0].text for c in train}
        assert not {c.supervisions[0].text for c in test} & train_texts
        voices = {c.supervisions[0].speaker for c in train}
        assert voices & set(summary["voices_new"])
        assert all(v.split("+")[-1] in spec.voice_variants for v in summary["voices_new"])


def test_updates_need_a_base_corpus(tmp_path):
    from typer.testing import CliRunner

    from edgeasr.cli import app

    res = CliRunner().invoke(
        app, ["corpus", "updates", "--out", str(tmp_path / "u"), "--base-corpus", str(tmp_path)]
    )
    assert res.exit_code == 2 and "not a corpus" in res.output
    assert not (tmp_path / "u").exists()


def test_null_updates_swap_new_material_for_unused_base_utterances(
    tiny_updates, tiny_corpus, tmp_path
):
    from typer.testing import CliRunner

    from edgeasr.cli import app
    from edgeasr.corpus.updates import null_updates

    # the tiny corpus is too small for five controls: refused before anything is written
    res = CliRunner().invoke(
        app,
        ["corpus", "null-updates", "--out", str(tmp_path / "small"),
         "--updates", str(tiny_updates), "--base-corpus", str(tiny_corpus)],
    )  # fmt: skip
    assert res.exit_code == 2 and "unused training utterances" in res.output
    assert not (tmp_path / "small").exists()
    before = {f: f.read_bytes() for f in (tiny_updates / "v1" / "manifests").iterdir()}
    res = CliRunner().invoke(
        app, ["corpus", "null-updates", "--out", str(tiny_updates), "--updates", str(tiny_updates)]
    )
    assert res.exit_code == 2 and "would overwrite" in res.output
    assert {f: f.read_bytes() for f in (tiny_updates / "v1" / "manifests").iterdir()} == before
    # a base corpus with every utterance twice (under a second id) is large enough
    base = CutSet.from_file(cuts_path(tiny_corpus, "train")).to_eager()
    big = tmp_path / "base"
    (big / "manifests").mkdir(parents=True)
    (base + CutSet.from_cuts(c.with_id(f"{c.id}-bis") for c in base)).to_file(
        cuts_path(big, "train")
    )
    null_updates(tiny_updates, tmp_path / "null", big)
    swapped_before: set[str] = set()
    for spec in UPDATES:
        src, dst = tiny_updates / f"v{spec.index}", tmp_path / "null" / f"v{spec.index}"
        real = CutSet.from_file(cuts_path(src, "train"))
        null = CutSet.from_file(cuts_path(dst, "train"))
        replay = {c.id for c in real if c.id.startswith("train-")}
        ids = [c.id for c in null]
        assert len(ids) == len(real) and len(set(ids)) == len(ids)
        assert replay <= set(ids) and not any(i.startswith("u") for i in ids)
        swapped = set(ids) - replay
        assert not swapped & swapped_before  # differ between updates
        swapped_before |= swapped | replay
        for split in ("dev", "test"):
            assert [c.id for c in CutSet.from_file(cuts_path(dst, split))] == [
                c.id for c in CutSet.from_file(cuts_path(src, split))
            ]
    assert json.loads((dst / "update.json").read_text())["utterances"] == {
        "replay": 2, "base_instead_of_new": 4 + 4
    }  # fmt: skip
