"""Is a WER change between two models real? Paired bootstrap over utterances.

Reads two ``edgeasr decode --out DIR`` result sets of the same utterances (``DIR/results.jsonl``)
and prints both WERs, the relative change of B against A and its 95 % confidence interval from
resampling utterances (the same resample for both models, so what the two share cancels). The
bars of the model-update issue are relative changes of a few percent on a 400-utterance test set;
this says whether such a change can be told from chance at all.

    .venv/bin/python scripts/wer_bootstrap.py A_DIR B_DIR [--resamples 2000] [--show-worse]

It also counts the utterances B gets worse that lost a first word A had right: after chained
model updates that is where a shifted prior shows ("set an alarm ..." -> "schedule a ...").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgeasr.decode import relative_change_ci, utterance_errors


def read_results(result_dir: Path) -> dict[str, tuple[str, str]]:
    """(reference, hypothesis) per utterance id; ValueError naming the file when it is missing
    or not an ``edgeasr decode`` results file."""
    path = result_dir / "results.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {r["id"]: (r["ref"], r["hyp"]) for r in rows}
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (not an `edgeasr decode --out` directory)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an edgeasr decode results file ({exc})") from None


def paired_errors(
    a: dict[str, tuple[str, str]], b: dict[str, tuple[str, str]]
) -> tuple[list[str], list[int], list[int]]:
    """Utterance ids (sorted) and each one's word errors in A and in B."""
    if set(a) != set(b):
        raise ValueError(f"the two result sets differ in {len(set(a) ^ set(b))} utterance ids")
    ids = sorted(a)
    refs = [a[i][0] for i in ids]
    return (
        ids,
        utterance_errors(refs, [a[i][1] for i in ids]),
        utterance_errors(refs, [b[i][1] for i in ids]),
    )


def compare(
    a: dict[str, tuple[str, str]], b: dict[str, tuple[str, str]], resamples: int
) -> dict[str, Any]:
    """WER of both, B's change relative to A and its 95 % interval (paired over utterances),
    and the utterances B gets worse (``worse_rows``: reference, A's hypothesis, B's)."""
    ids, ea, eb = paired_errors(a, b)
    words = sum(len(a[i][0].split()) for i in ids)
    rel, lo, hi = relative_change_ci(ea, eb, resamples)
    worse = _worse(a, b, ids, ea, eb)
    return {
        "utterances": len(ids),
        "words": words,
        "wer_a": sum(ea) / words,
        "wer_b": sum(eb) / words,
        "relative": rel,
        "ci_low": lo,
        "ci_high": hi,
        "worse": len(worse),
        "better": sum(y < x for x, y in zip(ea, eb, strict=True)),
        # a shifted prior shows at the start of a request: A had its first word, B has not
        "worse_first_word": len(_lost_first_word(worse)),
        "worse_rows": worse,
    }


def first_word(text: str) -> str:
    return (text.split() or [""])[0]


def _worse(a, b, ids: list[str], ea: list[int], eb: list[int]) -> list[tuple[str, str, str]]:
    return [(a[i][0], a[i][1], b[i][1]) for i, x, y in zip(ids, ea, eb, strict=True) if y > x]


def _lost_first_word(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [r for r in rows if first_word(r[1]) == first_word(r[0]) != first_word(r[2])]


def first_word_losses(
    a: dict[str, tuple[str, str]], b: dict[str, tuple[str, str]]
) -> list[tuple[str, str, str]]:
    """The utterances B gets worse whose first word A got right and B did not."""
    return _lost_first_word(_worse(a, b, *paired_errors(a, b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="decode output of the reference model")
    ap.add_argument("b", type=Path, help="decode output of the model compared with it")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument(
        "--show-worse", action="store_true", help="list the utterances B gets more wrong"
    )
    args = ap.parse_args()
    try:
        a, b = read_results(args.a), read_results(args.b)
        r = compare(a, b, args.resamples)
    except ValueError as exc:
        sys.exit(f"wer_bootstrap: {exc}")
    if args.show_worse:
        for ref, ha, hb in r["worse_rows"]:
            print(f"{ref}  |  A: {ha}  |  B: {hb}")
    print(
        f"{r['utterances']} utterances, {r['words']} words: WER A {100 * r['wer_a']:.2f}%, "
        f"B {100 * r['wer_b']:.2f}%, B vs A {100 * r['relative']:+.1f}% "
        f"(95% CI {100 * r['ci_low']:+.1f}% .. {100 * r['ci_high']:+.1f}%); "
        f"{r['worse']} utterances worse in B, {r['better']} better; "
        f"{r['worse_first_word']} of the worse lost a first word A had right"
    )


if __name__ == "__main__":
    main()
