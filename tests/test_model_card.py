"""The model card's decoding section: it must say what decoding the package defaults to."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
card = importlib.import_module("model_card")


def test_card_names_the_one_pass_decoding_of_an_untuned_second_pass():
    decoding = {"blank_penalty": 1.0, "tuned_on": "dev", "sweep": {"0.0": 0.2, "1.0": 0.15}}
    assert card._decoding_title(decoding) == "modified beam search, beam 4, blank penalty 1.0"
    text = card._decoding_section(decoding, Path("pkg"))
    assert "0.0: 20.0%, 1.0: 15.0%" in text and "Second pass" not in text


def test_card_shows_the_second_pass_and_its_whole_dev_sweep():
    decoding = {
        "blank_penalty": 1.0,
        "tuned_on": "dev",
        "sweep": {"1.0": 0.15},
        "ctc_weight": 0.5,
        "word_bonus": 3.0,
        "beam": 16,
        "rescoring": {
            "beam": 16,
            "tuned_on": "dev",
            "sweep": {"0.0:0.0": 0.14, "0.0:3.0": 0.16, "0.5:0.0": 0.11, "0.5:3.0": 0.096},
        },
    }
    title = card._decoding_title(decoding)
    assert "beam 16" in title and "CTC weight 0.5, word bonus 3.0" in title
    text = card._decoding_section(decoding, Path("pkg"))
    assert "--ctc-weights 0,0.5 --word-bonuses 0,3 --rescore-beam 16" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| 0")]
    assert rows == ["| 0 | 14.00% | 16.00% |", "| 0.5 | 11.00% | 9.60% |"]
