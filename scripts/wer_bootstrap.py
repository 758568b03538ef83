"""Is a WER change between two models real? Paired bootstrap over utterances.

Reads two ``edgeasr decode --out DIR`` result sets of the same utterances (``DIR/results.jsonl``)
and prints both WERs, the relative change of B against A and its 95 % confidence interval from
resampling utterances (the same resample for both models, so what the two share cancels). The
bars of the model-update issue are relative changes of a few percent on a 400-utterance test set;
this says whether such a change can be told from chance at all.

    .venv/bin/python scripts/wer_bootstrap.py A_DIR B_DIR [--resamples 2000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jiwer
import numpy as np


def utterance_errors(result_dir: Path) -> dict[str, tuple[int, int]]:
    """(word errors, reference words) per utterance id."""
    out = {}
    for line in (result_dir / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        o = jiwer.process_words(r["ref"], r["hyp"]) if r["ref"] else None
        errors = o.substitutions + o.deletions + o.insertions if o else len(r["hyp"].split())
        out[r["id"]] = (errors, len(r["ref"].split()))
    return out


def paired_bootstrap(
    a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]], resamples: int, seed: int = 0
) -> dict[str, float]:
    """WER of both, B's change relative to A and its 95 % interval over utterance resamples."""
    if set(a) != set(b):
        raise ValueError(f"the two result sets differ in {len(set(a) ^ set(b))} utterance ids")
    ids = sorted(a)
    ea = np.array([a[i][0] for i in ids], float)
    eb = np.array([b[i][0] for i in ids], float)
    n = np.array([a[i][1] for i in ids], float)
    if n.sum() == 0 or ea.sum() == 0:
        raise ValueError("need reference words and some errors in A")
    idx = np.random.default_rng(seed).integers(0, len(ids), (resamples, len(ids)))
    base = ea[idx].sum(1)
    keep = base > 0  # a resample without errors in A has no relative change
    rel = (eb[idx].sum(1)[keep] - base[keep]) / base[keep]
    lo, hi = np.percentile(rel, [2.5, 97.5])
    return {
        "utterances": len(ids),
        "words": int(n.sum()),
        "wer_a": ea.sum() / n.sum(),
        "wer_b": eb.sum() / n.sum(),
        "relative": (eb.sum() - ea.sum()) / ea.sum(),
        "ci_low": float(lo),
        "ci_high": float(hi),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="decode output of the reference model")
    ap.add_argument("b", type=Path, help="decode output of the model compared with it")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    r = paired_bootstrap(utterance_errors(args.a), utterance_errors(args.b), args.resamples)
    print(
        f"{r['utterances']} utterances, {r['words']} words: WER A {100 * r['wer_a']:.2f}%, "
        f"B {100 * r['wer_b']:.2f}%, B vs A {100 * r['relative']:+.1f}% "
        f"(95% CI {100 * r['ci_low']:+.1f}% .. {100 * r['ci_high']:+.1f}%)"
    )


if __name__ == "__main__":
    main()
