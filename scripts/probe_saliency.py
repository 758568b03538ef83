"""Probe: one-shot pruning without fine-tuning, by magnitude or by magnitude times input RMS.

Prunes a model package once to the target sparsity (``compress.sparsity.Pruner`` with the
schedule ending at step 0), per layer or with one global threshold, scoring weights by ``|w|`` or
by ``|w| * rms(input)`` (``compress.saliency.input_rms`` on evenly spaced training utterances),
and prints the WER of each variant on the test splits (beam 4, the package's blank penalty) and
the share of zeros it gave each matrix. No training: it shows how much damage each score does
before fine-tuning has to repair it. About 6 minutes on 2 cores.

    .venv/bin/python scripts/probe_saliency.py --corpus data/corpus [--model DIR]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from edgeasr.compress.saliency import calibration_batches, input_rms
from edgeasr.compress.sparsity import PruneConfig, Pruner, compressible_weights
from edgeasr.decode import evaluate_cache, word_error_rate
from edgeasr.model.checkpoint import load_package, tuned_blank_penalty
from edgeasr.train.data import FeatureCache, cuts_path

SPLITS = ("test", "test_xengine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=Path("models/edgeasr-small-en"))
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--calibration-utts", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tok, manifest = load_package(args.model)
    names = compressible_weights(model)
    feats = args.corpus / "feats"
    train = FeatureCache.build(cuts_path(args.corpus, "train"), feats)
    batches = calibration_batches(train, args.calibration_utts, tok.encode)
    rms = input_rms(model, names, batches)
    tests = {s: FeatureCache.build(cuts_path(args.corpus, s), feats) for s in SPLITS}
    print(f"{args.model} pruned once to {args.sparsity:.0%}; WER on {' + '.join(SPLITS)}, beam 4")
    for scope in ("global", "layer"):
        for saliency in ("magnitude", "activation"):
            pruned = copy.deepcopy(model)
            cfg = PruneConfig(args.sparsity, 0.0, 0.0, 1, scope, (1, 1), saliency)
            pr = Pruner(
                pruned, names, cfg, 1, input_scale=rms if saliency == "activation" else None
            )
            pr.update(0)
            refs, hyps = [], []
            for cache in tests.values():
                ev = evaluate_cache(pruned, tok, cache, 0, "beam", 4, tuned_blank_penalty(manifest))
                refs += [r.ref for r in ev.results]
                hyps += [r.hyp for r in ev.results]
            zeros = {
                n.removesuffix(".weight"): f"{float((pr.mask(n) == 0).float().mean()):.0%}"
                for n in names
            }
            print(
                f"{scope:>6} {saliency:>10}: WER {word_error_rate(refs, hyps):.2%}  zeros {zeros}"
            )


if __name__ == "__main__":
    main()
