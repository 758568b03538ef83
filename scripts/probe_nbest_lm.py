"""Probe: how much would a second pass gain by reranking the transducer's N-best, with the model's
own CTC head and with a word language model of the training text?

Every utterance of the chosen splits is decoded with the bundled model (modified beam search at
--beam, the model card's blank penalty); its N-best list is reranked by

    log P_rnnt(hyp) + ctc_weight · log P_ctc(hyp) + lm_weight · log P_lm(hyp) + bonus · words(hyp)

with P_ctc the model's CTC head (:mod:`edgeasr.search.rescore`) and P_lm an interpolated
absolute-discounting word n-gram counted on the corpus' training sentences, and scored against the
reference. The weights are chosen on the first split (dev) and only applied to the others; the
oracle column is the best WER any choice from each N-best list could reach. The CTC part is what
``edgeasr tune-decoding --ctc-weights`` / ``edgeasr decode`` now do; the n-gram is not built into
decoding.

    .venv/bin/python scripts/probe_nbest_lm.py --beam 16 --ctc-weights 0 0.3 0.5 1 --weights 0 0.1

Nothing is written besides --out (JSON); the numbers go to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import jiwer
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from accuracy import load_synthetic  # noqa: E402

from edgeasr.decode import Transcriber  # noqa: E402
from edgeasr.features import compute_fbank  # noqa: E402
from edgeasr.search.rescore import Rescorer, ctc_log_likelihood  # noqa: E402

BOS, EOS = "<s>", "</s>"


class WordNgram:
    """Interpolated absolute discounting (Ney et al., 1994) over words, with an end token.

    p(w | h) = max(c(h w) - D, 0) / c(h) + D · N1+(h •) / c(h) · p(w | h'), recursing down to a
    uniform distribution over the vocabulary plus one unknown word, so every sentence gets a
    finite, normalised log-probability.
    """

    def __init__(self, sentences: Iterable[str], order: int = 4, discount: float = 0.75) -> None:
        if order < 1 or not 0 < discount < 1:
            raise ValueError("WordNgram: need order >= 1 and 0 < discount < 1")
        self.order, self.discount = order, discount
        self.ngrams: Counter[tuple[str, ...]] = Counter()
        self.contexts: Counter[tuple[str, ...]] = Counter()
        self.followers: Counter[tuple[str, ...]] = Counter()
        vocab = {EOS}
        for line in sentences:
            words = line.split()
            if not words:
                continue
            vocab.update(words)
            padded = [BOS] * (order - 1) + words + [EOS]
            for i in range(order - 1, len(padded)):
                for k in range(1, order + 1):
                    gram = tuple(padded[i - k + 1 : i + 1])
                    if self.ngrams[gram] == 0:
                        self.followers[gram[:-1]] += 1
                    self.ngrams[gram] += 1
                    self.contexts[gram[:-1]] += 1
        self.uniform = 1.0 / (len(vocab) + 1)

    def prob(self, history: Sequence[str], word: str) -> float:
        p = self.uniform
        for k in range(1, self.order + 1):
            h = tuple(history[len(history) - k + 1 :]) if k > 1 else ()
            c = self.contexts[h]
            if c == 0:
                continue
            seen = max(self.ngrams[(*h, word)] - self.discount, 0.0)
            p = seen / c + self.discount * self.followers[h] / c * p
        return p

    def log_prob(self, text: str) -> float:
        """Natural-log probability of the whole sentence, end token included."""
        padded = [BOS] * (self.order - 1) + text.split() + [EOS]
        n = self.order - 1
        return math.fsum(
            math.log(self.prob(padded[i - n : i], padded[i])) for i in range(n, len(padded))
        )


def rerank(
    nbest: Sequence[Sequence], lm: WordNgram, weight: float, bonus: float, ctc: float = 0.0
) -> str:
    """The N-best entry (text, transducer log-prob[, CTC log-prob]) with the highest combined
    score ("" for an empty list)."""
    if not nbest:
        return ""

    def score(entry: Sequence) -> float:
        text, am = entry[0], entry[1]
        ctc_term = ctc * entry[2] if ctc else 0.0
        return am + ctc_term + weight * lm.log_prob(text) + bonus * len(text.split())

    return max(nbest, key=score)[0]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    # jiwer refuses empty hypotheses; an empty one is all deletions either way
    return jiwer.wer(list(refs), [h or "<empty>" for h in hyps])


def decode_split(tr: Transcriber, corpus: Path, split: str, max_utts: int) -> list[dict]:
    """Each utterance's first-pass N-best as (text, transducer log-prob, CTC log-prob)."""
    utts = load_synthetic(corpus, split) or []
    if max_utts:
        utts = utts[:max_utts]
    rows = []
    for u in utts:
        hyps, ctc = tr.first_pass(compute_fbank(u.load()))
        nbest = [
            (
                tr.tokenizer.decode(h.tokens),
                float(h.log_prob),
                ctc_log_likelihood(ctc, h.tokens) if ctc is not None else math.nan,
            )
            for h in hyps
        ]
        rows.append({"id": u.id, "ref": u.text, "nbest": nbest})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "corpus")
    p.add_argument("--model", type=Path, default=REPO / "models" / "edgeasr-small-en")
    p.add_argument("--splits", nargs="+", default=["dev", "test", "test_xengine"])
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--max-utts", type=int, default=0, help="per split (0: all)")
    p.add_argument("--weights", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--bonuses", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5])
    p.add_argument(
        "--ctc-weights",
        type=float,
        nargs="+",
        default=[0.0],
        help="weights of the CTC head's score",
    )
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = p.parse_args(argv)

    text = args.corpus / "manifests" / "train_text.txt"
    if not text.is_file():
        print(f"no training text at {text} (edgeasr corpus synth writes it)", file=sys.stderr)
        return 2
    lm = WordNgram(text.read_text().splitlines(), order=args.order)
    # with a CTC weight in the grid, the first pass must also return the CTC head's log-probs
    fetch = Rescorer(ctc_weight=1.0) if any(args.ctc_weights) else Rescorer()
    tr = Transcriber.from_dir(args.model, beam=args.beam, rescorer=fetch)
    data = {s: decode_split(tr, args.corpus, s, args.max_utts) for s in args.splits}
    data = {s: rows for s, rows in data.items() if rows}
    if not data:
        print(f"none of {args.splits} found in {args.corpus}", file=sys.stderr)
        return 2
    tune_split = next(iter(data))
    grid = {
        (w, b, c): wer(
            [r["ref"] for r in data[tune_split]],
            [rerank(r["nbest"], lm, w, b, c) for r in data[tune_split]],
        )
        for w in args.weights
        for b in args.bonuses
        for c in args.ctc_weights
    }
    (w, b, c), _ = min(grid.items(), key=lambda kv: kv[1])
    result: dict = {"lm_weight": w, "word_bonus": b, "ctc_weight": c, "tuned_on": tune_split}
    result["splits"] = {}
    print(f"lm weight {w}, word bonus {b}, CTC weight {c} (chosen on {tune_split})")
    print("| split | utts | mean N-best | 1-best WER | reranked WER | change | oracle WER |")
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for split, rows in data.items():
        refs = [r["ref"] for r in rows]
        base = wer(refs, [r["nbest"][0][0] if r["nbest"] else "" for r in rows])
        new = wer(refs, [rerank(r["nbest"], lm, w, b, c) for r in rows])
        oracle = wer(
            refs,
            [
                min((e[0] for e in r["nbest"]), key=lambda h, r=r: wer([r["ref"]], [h]), default="")
                for r in rows
            ],
        )
        mean_n = float(np.mean([len(r["nbest"]) for r in rows]))
        result["splits"][split] = {
            "utts": len(rows),
            "base": base,
            "reranked": new,
            "oracle": oracle,
        }
        print(
            f"| {split} | {len(rows)} | {mean_n:.1f} | {100 * base:.2f}% | {100 * new:.2f}% | "
            f"{100 * (new / base - 1):+.1f}% | {100 * oracle:.2f}% |"
        )
    if args.out:
        result["grid"] = {":".join(map(str, k)): v for k, v in grid.items()}
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
