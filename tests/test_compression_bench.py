"""A tiny end-to-end run of benchmarks/compression.py (tiny model, a few steps, a few
utterances) so the script cannot rot unnoticed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
bench = importlib.import_module("compression")


def test_rows_have_unique_slugs():
    slugs = [r.slug for r in bench.rows()]
    assert len(set(slugs)) == len(slugs)
    assert all(s.replace("-", "").isalnum() for s in slugs)


def test_regulariser_weight_is_chosen_on_dev_not_test():
    rows = {r.name: r for r in bench.rows()}
    rows["QAT 4-bit"].results = {"dev_wer": 0.20, "wer_all": 0.10}
    rows["QAT 4-bit, regulariser 1e-5"].results = {"dev_wer": 0.15, "wer_all": 0.30}
    rows["QAT 4-bit, no regulariser"].results = {"dev_wer": None, "wer_all": 0.01}
    rows["QAT 4-bit + 70% sparse"].results = {"dev_wer": 0.01, "wer_all": 0.01}  # not a variant
    assert bench.chosen_on_dev(rows, "QAT 4-bit").name == "QAT 4-bit, regulariser 1e-5"
    rows["QAT 4-bit, regulariser 1e-5"].results["dev_wer"] = None
    assert bench.chosen_on_dev(rows, "QAT 4-bit").name == "QAT 4-bit"


def test_comparisons_carry_a_paired_bootstrap_interval():
    rows = {r.name: r for r in bench.rows()}
    ref, row = rows["PTQ 4-bit"], rows["QAT 4-bit"]
    # the same 200 utterances; B has one error more on every fourth: +25% relative
    ref.results = {"wer_all": 0.20, "errors_test": [1] * 100, "errors_test_xengine": [1] * 100}
    more = [2 if i % 4 == 0 else 1 for i in range(100)]
    row.results = {"wer_all": 0.25, "errors_test": more, "errors_test_xengine": more}
    text = bench.versus(row, ref)
    assert text.startswith("25.00% vs 20.00% (+25.0%; 95% interval +")
    lo, hi = (float(v.rstrip("%)")) for v in text.split("interval ")[1].split(" .. "))
    assert 0 < lo < 25 < hi < 40
    row.results = {"wer_all": 0.25}  # measured before errors were kept: no interval
    assert bench.versus(row, ref) == "25.00% vs 20.00% (+25.0%)"


def test_rows_on_the_large_corpus_are_judged_against_its_own_fp32_fine_tune():
    """'Fine-tuned on the same data' means the 10 h fine-tune for the 10 h rows and the 30 h one
    for the 30 h rows: fresh audio may help the fp32 model as much as the compressed one."""
    every = {r.name: r for r in bench.rows()}
    big = "QAT int8 + 50% sparse, global, activation-aware, one-shot, 30 h corpus, 1 epoch, "
    big += "no regulariser"
    names = ["fp32", "PTQ 4-bit", "QAT 4-bit", bench.TUNED, bench.TUNED_LARGE]
    names += ["QAT int8 + 50% sparse", big]
    rs = {n: every[n] for n in names}
    wers = [0.10, 0.12, 0.11, 0.104, 0.098, 0.108, 0.104]
    for n, w in zip(names, wers, strict=True):
        rs[n].results = {"wer_all": w, "bytes": 1000, "dev_wer": 0.2}
    lines = {(text, ok) for text, ok, _ in bench.bars(rs, 8000)}
    same = "... and within 5% relative of the fp32 model fine-tuned on the same data "
    # 10.8% is within 5% of the 10 h fine-tune (10.4%); 10.4% is not within 5% of the 30 h
    # one (9.8%)
    assert (same + f"(*{bench.TUNED}*)", True) in lines
    assert (same + f"(*{bench.TUNED_LARGE}*)", False) in lines


def test_row_settings_reach_the_fine_tune_config(tmp_path, monkeypatch):
    import edgeasr.train.trainer as trainer

    seen = {}

    class FakeTrainer:
        def __init__(self, cfg, corpus, run):
            seen[run.name] = cfg
            seen[run.name + ":corpus"] = corpus
            run.mkdir(parents=True)

        def fit(self):
            return None

    monkeypatch.setattr(trainer, "Trainer", FakeTrainer)
    rows = {r.name: r for r in bench.rows()}
    config = REPO / "configs" / "compress-distill.yaml"
    act = "QAT int8 + 50% sparse, global, activation-aware, no regulariser"
    once = "QAT int8 + 50% sparse, global, activation-aware, one-shot, 6 epochs, no regulariser"
    for name in ("QAT int8 + 50% sparse, global", "QAT int8 + 50% sparse, 6 epochs", act, once):
        r = rows[name]
        bench.fine_tune(
            r, REPO / "models" / "edgeasr-small-en", tmp_path, tmp_path, 0, (1, 1), config
        )
    glob, longer = seen["qat-int8-50-sparse-global"], seen["qat-int8-50-sparse-6-epochs"]
    assert glob.train.compression.prune.scope == "global" and glob.train.compression.bits == 8
    assert longer.train.compression.prune.scope == "layer" and longer.train.epochs == 6
    assert glob.train.distill_weight == 1.0 and glob.train.compression.prune.target == 0.5
    assert glob.train.compression.prune.saliency == "magnitude"
    aware = seen[bench.slug(act)].train.compression
    assert aware.prune.saliency == "activation" and aware.prune.scope == "global"
    assert aware.reg_weight == 0.0 and aware.bits == 8
    assert aware.prune.end_frac == 0.6  # the config's cubic schedule
    one_shot = seen[bench.slug(once)]
    assert one_shot.train.compression.prune.end_frac == 0.0 and one_shot.train.epochs == 6
    assert one_shot.train.compression.prune.saliency == "activation"
    assert one_shot.train.max_train_utts == 8000 and seen[bench.slug(once) + ":corpus"] == tmp_path

    # the 8x1 row prunes whole blocks with the one-shot recipe
    blocks = rows[
        "QAT int8 + 50% sparse, 8x1 blocks, global, activation-aware, one-shot, 6 epochs, "
        "no regulariser"
    ]
    assert blocks.block == (8, 1)  # main passes the row's block where it names one
    bench.fine_tune(blocks, REPO / "models" / "edgeasr-small-en", tmp_path, tmp_path, 0,
                    blocks.block, config)  # fmt: skip
    b = seen[blocks.slug].train.compression.prune
    assert tuple(b.block) == (8, 1) and b.end_frac == 0.0 and b.saliency == "activation"

    # rows on the large corpus train on all of its utterances, and refuse to run without it
    large = [r for r in rows.values() if r.large_corpus and r.qat]
    assert [(r.epochs, r.block, r.sparsity, r.reconstruct) for r in large] == [
        (1, None, 0.5, False),
        (2, None, 0.5, False),
        (2, None, 0.6, False),
        (2, None, 0.6, True),
        (2, (8, 1), 0.5, True),
        (2, None, 0.5, False),
        (2, (8, 1), 0.5, False),
    ]
    # with their own fp32 reference: the same data without compression
    assert rows[bench.TUNED_LARGE].large_corpus and rows[bench.TUNED_LARGE].plain_fine_tune
    big = tmp_path / "corpus30"
    with pytest.raises(ValueError, match="needs --large-corpus"):
        bench.fine_tune(large[0], REPO / "models" / "edgeasr-small-en", tmp_path, tmp_path, 0,
                        (1, 1), config)  # fmt: skip
    bench.fine_tune(large[0], REPO / "models" / "edgeasr-small-en", tmp_path, tmp_path, 0, (1, 1),
                    config, big)  # fmt: skip
    cfg = seen[large[0].slug]
    assert seen[large[0].slug + ":corpus"] == big and cfg.train.max_train_utts == 0
    assert cfg.train.compression.prune.end_frac == 0.0 and cfg.train.epochs == 1
    assert not cfg.train.compression.prune.reconstruct
    # a reconstructed row re-fits its kept weights after the one-shot prune
    bench.fine_tune(large[3], REPO / "models" / "edgeasr-small-en", tmp_path, tmp_path, 0, (1, 1),
                    config, big)  # fmt: skip
    refit = seen[large[3].slug].train.compression.prune
    assert refit.reconstruct and refit.end_frac == 0.0 and refit.target == 0.6
    assert large[3].slug in seen and seen[large[3].slug].train.compression.rate_weight == 0.0
    # the budget row holds the rate regulariser to its bits per weight
    bench.fine_tune(large[5], REPO / "models" / "edgeasr-small-en", tmp_path, tmp_path, 0, (1, 1),
                    config, big)  # fmt: skip
    budget = seen[large[5].slug].train.compression
    assert budget.rate_target_bits == bench.RATE_BUDGET_BITS and budget.rate_weight > 0
    assert budget.prune.target == 0.5 and budget.bits == 8


def test_tiny_run_writes_page(tiny_corpus, tmp_path):
    from edgeasr.train.config import load_experiment
    from edgeasr.train.trainer import Trainer

    cfg = load_experiment(REPO / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.max_steps = 1, 2
    base = Trainer(cfg, tiny_corpus, tmp_path / "base").fit()
    only = ["fp32", "fp32, fine-tuned", "PTQ 4-bit", "QAT 4-bit", "QAT int8 + 50% sparse"]
    argv = [
        "--corpus", str(tiny_corpus), "--model", str(base), "--runs", str(tmp_path / "runs"),
        "--out-dir", str(tmp_path / "out"), "--max-utts", "3",
        "--rtf-utts", "2", "--sweep-repeats", "3", "--only", *only,
        "--config", str(REPO / "configs" / "compress-distill.yaml"),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "out" / "compression.json").read_text())["data"]
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == only
    combo = rows["QAT int8 + 50% sparse"]
    assert combo["zeros"] > 0.3 and combo["bytes"] < rows["fp32"]["bytes"]
    # the reference fine-tune trains (its run is recorded) but compresses nothing
    assert rows["fp32, fine-tuned"]["epochs"] and rows["fp32, fine-tuned"]["zeros"] < 0.01
    assert rows["fp32, fine-tuned"]["bytes"] == rows["fp32"]["bytes"]
    assert all(r["kernels_agree"] for r in data["rows"])
    assert (tmp_path / "out" / "compression.png").stat().st_size > 1000
    md = (tmp_path / "out" / "compression.md").read_text()
    assert "Where skipping zeros wins" in md
    assert "distilling from the fp32 model at weight 1" in md
    assert (
        "within 5% relative of the fp32 model fine-tuned on the same data (*fp32, fine-tuned*)"
        in md
    )
    assert "the variant with the lowest dev WER" in md and "dev WER (greedy)" in md
    # a second run reuses every row's measurements (timings included) instead of redoing them
    (tmp_path / "out" / "compression.json").unlink()
    assert bench.main(argv) == 0
    again = json.loads((tmp_path / "out" / "compression.json").read_text())["data"]
    assert again["rows"] == data["rows"]
