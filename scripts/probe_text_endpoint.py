"""Probe: would the end-of-query classifier cut fewer speakers off if it knew whether the words
so far can end a request?

The end-pointing page shows the classifier firing inside pauses after prefixes such as "put
bread" or "tell zachary", whatever the intonation (continuing prosody does not help). Its inputs
are the encoder frame, the decoder output of the best hypothesis and the trailing time. This
probe adds one input, p(the request ends here | last words of the hypothesis), a back-off
end-of-sentence model counted on the corpus' training sentences, and compares the two classifiers
under the same recipe as ``edgeasr train-endpointer``: traces of train utterances through the
device runtime, MLP training, thresholds tuned on dev for early cut-offs <= 2 % (the bar),
then dev-tuned settings replayed on the test splits through the device's own end-pointer.

    .venv/bin/python scripts/probe_text_endpoint.py --corpus data/corpus

Nothing is written into the model package; the numbers go to stdout (and --out as JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet

from edgeasr.export.onnx import export_model_dir
from edgeasr.runtime.endpoint import classifier_input
from edgeasr.train.endpoint import (
    EndOfQueryMLP,
    Trace,
    evaluate,
    record_traces,
    train_classifier,
    tune,
)

log = logging.getLogger("probe_text_endpoint")


class EndOfSentenceModel:
    """p(a request ends after these words), counted over complete training sentences with
    back-off from the last two words to the last one to the overall rate."""

    def __init__(self, sentences: list[str], strength: float = 2.0) -> None:
        self.ends: Counter[tuple[str, ...]] = Counter()
        self.seen: Counter[tuple[str, ...]] = Counter()
        self.strength = strength
        for s in sentences:
            words = ["<s>", "<s>", *s.split()]
            for k in range(3, len(words) + 1):
                for ctx in (tuple(words[k - 2 : k]), tuple(words[k - 1 : k])):
                    self.seen[ctx] += 1
                    self.ends[ctx] += k == len(words)
        self.prior = sum(self.ends[c] for c in self.ends if len(c) == 1) / max(
            1, sum(self.seen[c] for c in self.seen if len(c) == 1)
        )
        self._cache: dict[str, float] = {}

    def __call__(self, text: str) -> float:
        if text not in self._cache:
            words = ["<s>", "<s>", *text.split()]
            p = self.prior
            for ctx in (tuple(words[-1:]), tuple(words[-2:])):  # back-off order: short first
                n = self.seen[ctx]
                p = (self.ends[ctx] + self.strength * p) / (n + self.strength)
            self._cache[text] = p
        return self._cache[text]


def features(frames, eos: EndOfSentenceModel | None) -> np.ndarray:
    x = classifier_input(
        np.stack([f.enc for f in frames]),
        np.stack([f.dec for f in frames]),
        np.array([f.trailing_s for f in frames]),
    )
    if eos is None:
        return x
    p = np.array([[eos(f.text)] for f in frames], np.float32)
    return np.concatenate([x, p], axis=1)


def probs_of(model: EndOfQueryMLP, tr: Trace, eos) -> list[float | None]:
    if not tr.frames:
        return []
    with torch.inference_mode():
        p = model(torch.from_numpy(features(tr.frames, eos))).squeeze(1).numpy()
    return [float(v) if f.has_speech else None for v, f in zip(p, tr.frames, strict=True)]


def labelled(traces: list[Trace], eos) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for tr in traces:
        frames = [f for f in tr.frames if f.has_speech and f.trailing_s >= 0.08]
        if frames:
            xs.append(features(frames, eos))
            ys.append(np.array([tr.time(f) > tr.speech_end_s for f in frames], np.float32))
    return np.concatenate(xs), np.concatenate(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--model", type=Path, default=Path("models/edgeasr-small-en"))
    ap.add_argument("--train-utts", type=int, default=3000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    man = args.corpus / "manifests"
    sentences = (man / "train_text.txt").read_text().splitlines()
    eos = EndOfSentenceModel(sentences)
    with tempfile.TemporaryDirectory() as tmp:
        pkg = export_model_dir(args.model, tmp, int8=False)
        cuts = {s: CutSet.from_file(man / f"{s}_cuts.jsonl.gz") for s in ("train", "dev")}
        train = record_traces(pkg, cuts["train"], args.train_utts, desc="train traces")
        dev = record_traces(pkg, cuts["dev"], 0, desc="dev traces")
        test = []
        for s in ("test", "test_xengine"):
            test += record_traces(pkg, CutSet.from_file(man / f"{s}_cuts.jsonl.gz"), 0, desc=s)
    paused = [t for t in test if t.has_pause]
    rows = {}
    for name, e in (("classifier (shipped inputs)", None), ("+ p(end | words so far)", eos)):
        clf = train_classifier(*labelled(train, e))
        cfg, dev_st = tune(dev, [probs_of(clf, t, e) for t in dev])
        test_probs = [probs_of(clf, t, e) for t in test]
        st = evaluate(test, cfg, test_probs)
        paused_probs = [p for t, p in zip(test, test_probs, strict=True) if t.has_pause]
        st_p = evaluate(paused, cfg, paused_probs)
        # information only: thresholds tuned on test itself, the classifier's own limit
        limit = {f"{m:.2f}": tune(test, test_probs, max_early=m)[1] for m in (0.02, 0.03)}
        rows[name] = {
            "config": asdict(cfg),
            "dev": asdict(dev_st),
            "test": asdict(st),
            "test_paused": asdict(st_p),
            "test_limit": {k: asdict(v) for k, v in limit.items()},
        }
    print(f"{len(test)} test utterances ({len(paused)} with pauses); tuned on {len(dev)} dev")
    print(
        "| classifier | dev early | test final p50 / p90 (ms) | test early | paused early "
        "| limit: p90 at <= 2% / 3% early (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        t, lim = r["test"], r["test_limit"]
        print(
            f"| {name} | {100 * r['dev']['early_cutoff_rate']:.1f}% | "
            f"{1000 * t['final_p50']:.0f} / {1000 * t['final_p90']:.0f} | "
            f"{100 * t['early_cutoff_rate']:.1f}% | "
            f"{100 * r['test_paused']['early_cutoff_rate']:.1f}% | "
            f"{1000 * lim['0.02']['final_p90']:.0f} / {1000 * lim['0.03']['final_p90']:.0f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
