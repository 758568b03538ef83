"""End-pointing benchmark: a tiny end-to-end run (bundled model and classifier, two utterances
per test split of the tiny corpus), so the script and its oracle frontier cannot rot."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
ep = importlib.import_module("endpoint")


def test_tiny_run_writes_the_page_and_the_classifier_frontier(tiny_corpus, tmp_path):
    argv = [
        "--corpus", str(tiny_corpus), "--model", str(REPO / "models" / "edgeasr-small-en"),
        "--max-utts", "2", "--silence-s", "1.0", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    assert ep.main(argv) == 0
    page = (tmp_path / "endpoint.md").read_text()
    assert "## Bars (issue 3)" in page and "The classifier's limit" in page
    data = json.loads((tmp_path / "endpoint.json").read_text())["data"]
    n = len(data["utterances"]["classifier (tuned on dev)"])
    frontier = data["classifier_frontier"]
    assert [r["max_early"] for r in frontier] == list(ep.FRONTIER_EARLY)
    assert all(r["stats"]["n"] == n for r in frontier)
    # a looser early cut-off allowance never makes the best p90 worse
    p90 = [r["stats"]["final_p90"] for r in frontier]
    assert all(b <= a + 1e-9 for a, b in zip(p90, p90[1:], strict=False))

    assert ep.main([*argv, "--no-frontier", "--name", "plain"]) == 0
    assert "The classifier's limit" not in (tmp_path / "plain.md").read_text()


def test_paused_utterances_come_back_with_continuing_prosody(tiny_corpus, tmp_path):
    """The tiny corpus' dev split has espeak utterances with pauses: each is rendered again with
    continuing prosody and its row pairs with the original's by utterance id."""
    argv = [
        "--corpus", str(tiny_corpus), "--model", str(REPO / "models" / "edgeasr-small-en"),
        "--splits", "dev", "--silence-s", "1.0", "--no-frontier", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    assert ep.main(argv) == 0
    data = json.loads((tmp_path / "endpoint.json").read_text())["data"]
    key = "classifier (tuned on dev)"
    main = {r["id"]: r for r in data["utterances"][key]}
    cont = data["continuing_utterances"][key]
    index = tiny_corpus / "endpoint-continuing" / "dev.jsonl"
    rendered = [json.loads(line) for line in index.read_text().splitlines()]
    assert cont and len(cont) == len(rendered)
    for r in cont:
        assert r["id"] in main and main[r["id"]]["has_pause"] and r["has_pause"]
        assert r["ref"] == main[r["id"]]["ref"]
    assert all(rec["custom"]["pause_prosody"] == "continuing" for rec in rendered)
    paired = data["continuing"]
    assert paired["as in the corpus"][key]["n"] == paired["continuing"][key]["n"] == len(cont)
    assert (
        "same paused utterances with continuing prosody" in (tmp_path / "endpoint.md").read_text()
    )
    assert ep.main([*argv, "--no-continuing", "--name", "plain"]) == 0
    assert "continuing prosody" not in (tmp_path / "plain.md").read_text()
