"""Probe: does an end-of-query classifier *trained* with continuing-prosody pauses, or one that
also sees the encoder frames where the last word ended, cut fewer speakers off?

The corpus speaks each segment of a paused request as its own sentence, so the voice falls at
the pause. The end-pointing page re-renders the paused test utterances with continuing prosody
(one espeak-ng call, the pause a timed SSML break) and finds the shipped classifier no better on
them. But that classifier never heard such pauses in training. Here every paused espeak-ng
utterance of train, dev and test is re-rendered that way (``rerender_split``; flite and festival
take no timed breaks and keep the corpus' rendering), and classifiers are trained on the mixed
traces with the recipe of ``edgeasr train-endpointer`` (MLP, thresholds tuned on dev for early
cut-offs <= 2 %, lead >= 160 ms), then replayed on the test splits:

- ``cur``: the shipped inputs (encoder frame, decoder output of the best hypothesis, trailing
  time);
- ``win3``: those plus the encoder frames of the last three frames up to the one where the best
  hypothesis emitted its last token (where the final syllable's intonation is).

Each row also gives the best p90 any threshold setting reaches on test itself at <= 2 % / 3 %
early cut-offs (the classifier's limit, information only), and the cut-offs by group: paused
espeak-ng utterances (continuing prosody), other paused ones, unpaused ones.

    .venv/bin/python scripts/probe_prosody_endpoint.py --corpus data/corpus

Traces are cached (``--traces``, a pickle of this script's own making: never load one from
elsewhere); nothing is written into the model package.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet

from edgeasr.runtime.endpoint import EndpointConfig
from edgeasr.train.endpoint import (
    Trace,
    load_classifier,
    predict,
    record_traces,
    replay,
    summarize,
    train_classifier,
    tune,
)

REPO = Path(__file__).resolve().parents[1]


def _sid(cut) -> str:
    return cut.supervisions[0].id


def record(corpus: Path, model: Path, train_utts: int) -> dict[str, list[Trace]]:
    """Traces of dev, test (+ test_xengine) and ``train_utts`` train utterances plus every
    other paused espeak-ng train utterance, each paused espeak-ng one in its continuing
    rendering; and, for test, the corpus' own rendering of those (key ``test_final``)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from endpoint import continuing_cuts

    from edgeasr.export.onnx import export_model_dir

    out: dict[str, list[Trace]] = {"test": [], "test_final": []}
    with tempfile.TemporaryDirectory() as tmp:
        pkg = export_model_dir(model, tmp, int8=False)
        for split in ("dev", "test", "test_xengine", "train"):
            cuts = list(CutSet.from_file(corpus / "manifests" / f"{split}_cuts.jsonl.gz"))
            ids = {_sid(c) for c in cuts}
            cont = {_sid(c): c for _, c in continuing_cuts(corpus, [split], ids)}
            chosen = cuts
            if split == "train":
                stride = len(cuts) / train_utts
                chosen = [cuts[int(i * stride)] for i in range(train_utts)]
                have = {_sid(c) for c in chosen}
                chosen += [c for c in cuts if _sid(c) in cont and _sid(c) not in have]
            mixed = CutSet.from_cuts([cont.get(_sid(c), c) for c in chosen])
            traces = record_traces(pkg, mixed, desc=split)
            if split.startswith("test"):
                out["test"] += traces
                originals = CutSet.from_cuts([c for c in chosen if _sid(c) in cont])
                out["test_final"] += record_traces(pkg, originals, desc=f"{split} as corpus")
            else:
                out[split] = traces
    return out


def features(tr: Trace, variant: str) -> np.ndarray:
    """Classifier inputs of every frame of a trace (see the module doc for the variants)."""
    enc = np.stack([f.enc for f in tr.frames])
    dec = np.stack([f.dec for f in tr.frames])
    trailing = np.array([f.trailing_s for f in tr.frames], np.float32)
    cols = [enc, dec, trailing[:, None]]
    if variant.startswith("win"):
        # frame index of the last emitted token: the frame counter minus the trailing frames
        last = np.array([f.frame - round(f.trailing_s / tr.frame_shift_s) - 1 for f in tr.frames])
        cols += [enc[np.clip(last - j, 0, len(enc) - 1)] for j in range(int(variant[3:]))]
    return np.concatenate(cols, axis=1).astype(np.float32)


def labelled(traces: list[Trace], variant: str) -> tuple[np.ndarray, np.ndarray]:
    """As ``edgeasr.train.endpoint.training_frames``, for any variant's inputs."""
    xs, ys = [], []
    for tr in traces:
        keep = np.array([f.has_speech and f.trailing_s >= 0.08 for f in tr.frames])
        if keep.any():
            xs.append(features(tr, variant)[keep])
            t = np.array([tr.time(f) > tr.speech_end_s for f in tr.frames], np.float32)
            ys.append(t[keep])
    return np.concatenate(xs), np.concatenate(ys)


def probs(model, tr: Trace, variant: str) -> list[float | None]:
    with torch.inference_mode():
        p = model(torch.from_numpy(features(tr, variant))).squeeze(1).numpy()
    return [float(v) if f.has_speech else None for v, f in zip(p, tr.frames, strict=True)]


def row(traces: list[Trace], cfg: EndpointConfig, p_end: list, continuing: set[str]) -> dict:
    """Latencies, early cut-offs and cut-offs per group of one setting on a trace set."""
    replays = [replay(t, cfg, p) for t, p in zip(traces, p_end, strict=True)]
    st = summarize(traces, replays)

    def group(t: Trace) -> str:
        if not t.has_pause:
            return "unpaused"
        return "paused espeak-ng" if t.id.rsplit("-", 1)[0] in continuing else "paused, other"

    n = Counter(group(t) for t in traces)
    cut = Counter(
        group(t)
        for t, r in zip(traces, replays, strict=True)
        if r.final_s is not None and r.final_s < t.speech_end_s
    )
    return {
        "early": st.early_cutoff_rate,
        "final_p50_ms": 1000 * st.final_p50,
        "final_p90_ms": 1000 * st.final_p90,
        "lead_p50_ms": 1000 * st.lead_p50,
        "cut_by_group": {g: f"{cut[g]}/{n[g]}" for g in sorted(n)},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "corpus")
    p.add_argument("--model", type=Path, default=REPO / "models" / "edgeasr-small-en")
    p.add_argument("--train-utts", type=int, default=3000)
    p.add_argument("--variants", nargs="+", default=["cur", "win3"])
    p.add_argument("--traces", type=Path, default=REPO / "runs" / "probe-prosody-traces.pkl")
    p.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.traces.is_file():
        with args.traces.open("rb") as f:  # this script's own cache (see the module doc)
            traces = pickle.load(f)
    else:
        traces = record(args.corpus, args.model, args.train_utts)
        args.traces.parent.mkdir(parents=True, exist_ok=True)
        with args.traces.open("wb") as f:
            pickle.dump(traces, f)
    test, final = traces["test"], traces["test_final"]
    continuing = {t.id.rsplit("-", 1)[0] for t in final}
    by_key = {t.id.rsplit("-", 1)[0]: t for t in final}
    as_corpus = [by_key.get(t.id.rsplit("-", 1)[0], t) for t in test]
    results: dict[str, dict] = {}
    manifest = json.loads((args.model / "manifest.json").read_text())
    shipped = load_classifier(args.model / manifest["endpoint"]["classifier"])
    cfg0 = EndpointConfig(**manifest["endpoint"]["config"])
    results["shipped"] = {
        "continuing": row(test, cfg0, [predict(shipped, t.frames) for t in test], continuing),
        "as corpus": row(
            as_corpus, cfg0, [predict(shipped, t.frames) for t in as_corpus], continuing
        ),
    }
    for variant in args.variants:
        x, y = labelled(traces["train"], variant)
        clf = train_classifier(x, y)
        dev_p = [probs(clf, t, variant) for t in traces["dev"]]
        cfg, _ = tune(traces["dev"], dev_p)
        test_p = [probs(clf, t, variant) for t in test]
        res = {
            "inputs": int(x.shape[1]),
            "train_frames": int(len(y)),
            "config": cfg.__dict__,
            "continuing": row(test, cfg, test_p, continuing),
            "as corpus": row(
                as_corpus, cfg, [probs(clf, t, variant) for t in as_corpus], continuing
            ),
        }
        for limit in (0.02, 0.03):
            _, st = tune(test, test_p, max_early=limit)
            res[f"limit p90 at <= {limit:.0%}"] = round(1000 * st.final_p90)
        results[variant] = res
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
